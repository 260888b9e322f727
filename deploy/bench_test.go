package deploy_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/flagpole/flagpole/deploy"
)

var benchBody = bytes.Repeat([]byte(`{"verdict":"fail","reason":"error rate up"},`), 24) // ~1 KiB

func BenchmarkSign(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = deploy.Sign(testSecret, refTime, benchBody)
	}
}

func BenchmarkVerifySignature(b *testing.B) {
	h := deploy.Sign(testSecret, refTime, benchBody)
	b.ReportAllocs()
	for b.Loop() {
		if err := deploy.VerifySignature(testSecret, h, benchBody, refTime, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFlaggerRolloutHook is one rollout hook of a running session,
// in-process (decode, session lookup in the in-memory analysis store,
// verdict, answer); the store's own latency comes on top in production.
func BenchmarkFlaggerRolloutHook(b *testing.B) {
	an := newFakeAnalyses(b)
	f, _ := deploy.NewFlagger(deploy.FlaggerConfig{Analyses: an})
	body := flaggerPayload("Progressing", flaggerMetadata)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/api/v1/deploy/flagger/rollout", strings.NewReader(body))
	req.SetPathValue("hook", "rollout")
	f.ServeHTTP(rec, req) // starts the analysis
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/api/v1/deploy/flagger/rollout", strings.NewReader(body))
		req.SetPathValue("hook", "rollout")
		f.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}
