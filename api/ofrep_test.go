package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flagpole/flagpole/api/ofrep"
	"github.com/flagpole/flagpole/auth"
)

// decodeEvaluation decodes an OFREP evaluation strictly into the wire type.
func decodeEvaluation(t *testing.T, b []byte) ofrep.Evaluation {
	t.Helper()
	var e ofrep.Evaluation
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("not an OFREP evaluation: %v: %s", err, b)
	}
	return e
}

func TestOFREPSingle(t *testing.T) {
	h := newHarness(t)
	h.createEnv("default", testFlags)
	setMeta := map[string]any{"team": "checkout", "tier": 1.0}
	with := func(extra map[string]any) map[string]any {
		m := map[string]any{}
		for k, v := range setMeta {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name       string
		key        string
		body       string
		wantStatus int
		want       ofrep.Evaluation
		absent     []string // members that must not be in the body
	}{
		{name: "static", key: "static-on", body: `{"context":{"targetingKey":"u1"}}`, wantStatus: 200,
			want: ofrep.Evaluation{Key: "static-on", Value: true, Reason: "STATIC", Variant: "on", Metadata: with(map[string]any{"owner": "pay", "weight": 2.5, "live": true})}},
		{name: "targeting match", key: "banner-color", body: `{"context":{"targetingKey":"u1","email":"ann@example.com"}}`, wantStatus: 200,
			want: ofrep.Evaluation{Key: "banner-color", Value: "#00f", Reason: "TARGETING_MATCH", Variant: "blue", Metadata: setMeta}},
		{name: "targeting falls to default variant", key: "banner-color", body: `{"context":{"targetingKey":"u1","email":"bob@other.org"}}`, wantStatus: 200,
			want: ofrep.Evaluation{Key: "banner-color", Value: "#f00", Reason: "DEFAULT", Variant: "red", Metadata: setMeta}},
		{name: "code default omits value and variant", key: "code-default", body: `{"context":{"email":"x@y.z"}}`, wantStatus: 200,
			want: ofrep.Evaluation{Key: "code-default", Reason: "DEFAULT", Metadata: setMeta}, absent: []string{`"value"`, `"variant"`}},
		{name: "code default flag matched", key: "code-default", body: `{"context":{"email":"vip@example.com"}}`, wantStatus: 200,
			want: ofrep.Evaluation{Key: "code-default", Value: 2.0, Reason: "TARGETING_MATCH", Variant: "b", Metadata: setMeta}},
		{name: "disabled omits value and variant", key: "switched-off", body: `{}`, wantStatus: 200,
			want: ofrep.Evaluation{Key: "switched-off", Reason: "DISABLED", Metadata: setMeta}, absent: []string{`"value"`, `"variant"`}},
		{name: "object value", key: "config", body: ``, wantStatus: 200,
			want: ofrep.Evaluation{Key: "config", Value: map[string]any{"size": 1.0, "name": "s"}, Reason: "STATIC", Variant: "small", Metadata: setMeta}},
		{name: "missing body", key: "static-on", body: ``, wantStatus: 200,
			want: ofrep.Evaluation{Key: "static-on", Value: true, Reason: "STATIC", Variant: "on", Metadata: with(map[string]any{"owner": "pay", "weight": 2.5, "live": true})}},
		{name: "null context and unknown members", key: "banner-color", body: `{"context":null,"other":[1,2]}`, wantStatus: 200,
			want: ofrep.Evaluation{Key: "banner-color", Value: "#f00", Reason: "DEFAULT", Variant: "red", Metadata: setMeta}},
		{name: "rule error is GENERAL", key: "broken-rule", body: `{}`, wantStatus: 400,
			want: ofrep.Evaluation{Key: "broken-rule", ErrorCode: ofrep.General, Metadata: setMeta}},
		{name: "unknown flag", key: "nope", body: `{}`, wantStatus: 404,
			want: ofrep.Evaluation{Key: "nope", ErrorCode: ofrep.FlagNotFound}},
		{name: "malformed JSON", key: "static-on", body: `{"context":{"a":}`, wantStatus: 400,
			want: ofrep.Evaluation{Key: "static-on", ErrorCode: ofrep.ParseError}},
		{name: "body not an object", key: "static-on", body: `[1]`, wantStatus: 400,
			want: ofrep.Evaluation{Key: "static-on", ErrorCode: ofrep.ParseError}},
		{name: "context not an object", key: "static-on", body: `{"context":"x"}`, wantStatus: 400,
			want: ofrep.Evaluation{Key: "static-on", ErrorCode: ofrep.InvalidContext}},
		{name: "targetingKey not a string", key: "static-on", body: `{"context":{"targetingKey":42}}`, wantStatus: 400,
			want: ofrep.Evaluation{Key: "static-on", ErrorCode: ofrep.InvalidContext}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags/" + tc.key, key: h.admin, body: tc.body})
			if r.status != tc.wantStatus {
				t.Fatalf("status = %d, want %d: %s", r.status, tc.wantStatus, r.body)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			got := decodeEvaluation(t, r.body)
			if tc.want.ErrorCode != "" {
				if got.ErrorDetails == "" {
					t.Errorf("errorDetails is empty")
				}
				got.ErrorDetails = ""
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %#v\nwant %#v\nbody %s", got, tc.want, r.body)
			}
			for _, a := range tc.absent {
				if bytes.Contains(r.body, []byte(a)) {
					t.Errorf("body has %s: %s", a, r.body)
				}
			}
		})
	}
}

func TestOFREPFractionalIsDeterministic(t *testing.T) {
	h := newHarness(t)
	h.createEnv("default", testFlags)
	seen := map[string]bool{}
	for i := range 40 {
		body := fmt.Sprintf(`{"context":{"targetingKey":"user-%d"}}`, i)
		var first ofrep.Evaluation
		for j := range 2 {
			r := h.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags/rollout", key: h.admin, body: body})
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			e := decodeEvaluation(t, r.body)
			if e.Reason != "TARGETING_MATCH" {
				t.Fatalf("reason = %q", e.Reason)
			}
			if j == 0 {
				first = e
			} else if e.Variant != first.Variant {
				t.Fatalf("user-%d got %q then %q", i, first.Variant, e.Variant)
			}
		}
		seen[first.Variant] = true
	}
	if !seen["new"] || !seen["old"] {
		t.Errorf("40 users all landed in %v; a 50/50 split should show both", seen)
	}
}

func decodeBulk(t *testing.T, b []byte) ofrep.BulkResponse {
	t.Helper()
	var br ofrep.BulkResponse
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&br); err != nil {
		t.Fatalf("not an OFREP bulk response: %v: %s", err, b)
	}
	return br
}

func TestOFREPBulk(t *testing.T) {
	h := newHarness(t)
	h.createEnv("default", testFlags)
	ann := `{"context":{"targetingKey":"u1","email":"ann@example.com"}}`
	r := h.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags", key: h.admin, body: ann})
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	br := decodeBulk(t, r.body)
	var keys []string
	byKey := map[string]ofrep.Evaluation{}
	for _, e := range br.Flags {
		keys = append(keys, e.Key)
		byKey[e.Key] = e
	}
	wantKeys := []string{"banner-color", "broken-rule", "code-default", "config", "rollout", "static-on", "switched-off"}
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Errorf("keys = %v, want %v (sorted)", keys, wantKeys)
	}
	if e := byKey["banner-color"]; e.Value != "#00f" || e.Reason != "TARGETING_MATCH" {
		t.Errorf("banner-color = %+v", e)
	}
	if e := byKey["broken-rule"]; e.ErrorCode != ofrep.General || e.ErrorDetails == "" {
		t.Errorf("broken-rule should be a per-flag failure: %+v", e)
	}
	if e := byKey["switched-off"]; e.Reason != "DISABLED" || e.Value != nil || e.Variant != "" {
		t.Errorf("switched-off = %+v", e)
	}
	if !reflect.DeepEqual(br.Metadata, map[string]any{"team": "checkout", "tier": 1.0}) {
		t.Errorf("metadata = %v", br.Metadata)
	}
	etag := r.header.Get("ETag")
	if len(etag) < 3 || etag[0] != '"' || etag[len(etag)-1] != '"' || strings.HasPrefix(etag, "W/") {
		t.Fatalf("ETag %q is not a strong quoted tag", etag)
	}

	t.Run("If-None-Match", func(t *testing.T) {
		tests := []struct {
			name   string
			inm    string
			status int
		}{
			{"same tag", etag, 304},
			{"weak form matches", "W/" + etag, 304},
			{"in a list", `"other", ` + etag, 304},
			{"star", "*", 304},
			{"other tag", `"abc"`, 200},
			{"garbage", `nonsense`, 200},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				r := h.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags", key: h.admin, body: ann, header: map[string]string{"If-None-Match": tc.inm}})
				if r.status != tc.status {
					t.Fatalf("status = %d, want %d", r.status, tc.status)
				}
				if r.header.Get("ETag") != etag {
					t.Errorf("ETag = %q, want %q", r.header.Get("ETag"), etag)
				}
				if tc.status == 304 && len(r.body) != 0 {
					t.Errorf("304 with a body: %s", r.body)
				}
			})
		}
	})

	t.Run("ETag depends on the result", func(t *testing.T) {
		bob := h.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags", key: h.admin, body: `{"context":{"targetingKey":"u1","email":"bob@other.org"}}`})
		if bob.header.Get("ETag") == etag {
			t.Errorf("a context with a different result has the same ETag")
		}
		again := h.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags", key: h.admin, body: `{"context":{"email":"ann@example.com","targetingKey":"u1"}}`})
		if again.header.Get("ETag") != etag {
			t.Errorf("the same result in another member order has ETag %q, want %q", again.header.Get("ETag"), etag)
		}
		// Change a flag: the result and the ETag change.
		p := h.do(req{method: "PATCH", path: "/api/v1/environments/default/flags/static-on", key: h.admin, body: `{"defaultVariant":"off"}`})
		if p.status != 200 {
			t.Fatalf("PATCH status %d: %s", p.status, p.body)
		}
		after := h.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags", key: h.admin, body: ann, header: map[string]string{"If-None-Match": etag}})
		if after.status != 200 || after.header.Get("ETag") == etag {
			t.Errorf("after a change: status %d ETag %q (old %q)", after.status, after.header.Get("ETag"), etag)
		}
	})

	t.Run("bad request", func(t *testing.T) {
		tests := []struct {
			name, body string
			code       ofrep.ErrorCode
		}{
			{"malformed", `{"context":`, ofrep.ParseError},
			{"context array", `{"context":[]}`, ofrep.InvalidContext},
		}
		for _, tc := range tests {
			r := h.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags", key: h.admin, body: tc.body})
			if r.status != 400 {
				t.Fatalf("%s: status %d", tc.name, r.status)
			}
			var f ofrep.BulkFailure
			dec := json.NewDecoder(bytes.NewReader(r.body))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&f); err != nil || f.ErrorCode != tc.code || f.ErrorDetails == "" {
				t.Errorf("%s: body %s (%v)", tc.name, r.body, err)
			}
		}
	})
}

func TestOFREPEnvironmentAndAuth(t *testing.T) {
	h := newHarness(t)
	h.createEnv("default", testFlags)
	h.createEnv("staging", `{"flags":{"only-staging":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"on"}}}`)
	sdkStaging := h.newKey(auth.RoleSDK, "web", "staging")
	editorStaging := h.newKey(auth.RoleEditor, "ed", "staging")
	revoked := h.newKey(auth.RoleSDK, "old", "default")
	// Use the key once so that it is cached, then revoke it through the API.
	if r := h.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags/static-on", key: revoked}); r.status != 200 {
		t.Fatalf("before revoke: %d", r.status)
	}
	keys := h.do(req{method: "GET", path: "/api/v1/keys", key: h.admin})
	var list struct{ Keys []auth.Key }
	_ = json.Unmarshal(keys.body, &list)
	for _, k := range list.Keys {
		if k.Name == "old" {
			if r := h.do(req{method: "DELETE", path: "/api/v1/keys/" + k.ID, key: h.admin}); r.status != 204 {
				t.Fatalf("revoke: %d %s", r.status, r.body)
			}
		}
	}
	tests := []struct {
		name   string
		key    string
		header map[string]string
		path   string
		status int
	}{
		{name: "no key", path: "/ofrep/v1/evaluate/flags/static-on", status: 401},
		{name: "unknown key", key: "fp_sdk_nope", path: "/ofrep/v1/evaluate/flags/static-on", status: 401},
		{name: "revoked key, at once on this replica", key: revoked, path: "/ofrep/v1/evaluate/flags/static-on", status: 401},
		{name: "malformed authorization", header: map[string]string{"Authorization": "Basic abc"}, path: "/ofrep/v1/evaluate/flags/static-on", status: 401},
		{name: "sdk key evaluates its env", key: sdkStaging, path: "/ofrep/v1/evaluate/flags/only-staging", status: 200},
		{name: "sdk key names its env", key: sdkStaging, path: "/ofrep/v1/evaluate/flags/only-staging?env=staging", status: 200},
		{name: "sdk key names another env", key: sdkStaging, path: "/ofrep/v1/evaluate/flags/static-on?env=default", status: 403},
		{name: "sdk key other env by header", key: sdkStaging, header: map[string]string{"X-Flagpole-Environment": "default"}, path: "/ofrep/v1/evaluate/flags/static-on", status: 403},
		{name: "sdk key via X-API-Key", header: map[string]string{"X-API-Key": sdkStaging}, path: "/ofrep/v1/evaluate/flags/only-staging", status: 200},
		{name: "editor in its env", key: editorStaging, path: "/ofrep/v1/evaluate/flags/only-staging?env=staging", status: 200},
		{name: "editor defaults to default env", key: editorStaging, path: "/ofrep/v1/evaluate/flags/static-on", status: 403},
		{name: "admin default env", key: h.admin, path: "/ofrep/v1/evaluate/flags/static-on", status: 200},
		{name: "admin env by header", key: h.admin, header: map[string]string{"X-Flagpole-Environment": "staging"}, path: "/ofrep/v1/evaluate/flags/only-staging", status: 200},
		{name: "admin unknown env", key: h.admin, path: "/ofrep/v1/evaluate/flags/static-on?env=nowhere", status: 404},
		{name: "admin unknown env bulk", key: h.admin, path: "/ofrep/v1/evaluate/flags?env=nowhere", status: 400},
		{name: "sdk bulk", key: sdkStaging, path: "/ofrep/v1/evaluate/flags", status: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(req{method: "POST", path: tc.path, key: tc.key, header: tc.header})
			if r.status != tc.status {
				t.Fatalf("status = %d, want %d: %s", r.status, tc.status, r.body)
			}
			if r.header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type = %q", r.header.Get("Content-Type"))
			}
			if (tc.status == 401 || tc.status == 403) && len(r.body) != 0 {
				t.Errorf("%d with a body: %s", tc.status, r.body)
			}
		})
	}
}

func TestOFREPCORS(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.CORSOrigins = []string{"https://app.example.com"} })
	h.createEnv("default", testFlags)
	t.Run("preflight allowed", func(t *testing.T) {
		r := h.do(req{method: "OPTIONS", path: "/ofrep/v1/evaluate/flags", header: map[string]string{
			"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, if-none-match, content-type"}})
		if r.status != 204 {
			t.Fatalf("status %d", r.status)
		}
		if got := r.header.Get("Access-Control-Allow-Origin"); got != "https://app.example.com" {
			t.Errorf("Allow-Origin = %q", got)
		}
		allow := strings.ToLower(r.header.Get("Access-Control-Allow-Headers"))
		for _, want := range []string{"authorization", "x-api-key", "if-none-match", "content-type"} {
			if !strings.Contains(allow, want) {
				t.Errorf("Allow-Headers %q lacks %s", allow, want)
			}
		}
		if !strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "POST") {
			t.Errorf("Allow-Methods = %q", r.header.Get("Access-Control-Allow-Methods"))
		}
	})
	t.Run("preflight from another origin", func(t *testing.T) {
		r := h.do(req{method: "OPTIONS", path: "/ofrep/v1/evaluate/flags", header: map[string]string{
			"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}})
		if got := r.header.Get("Access-Control-Allow-Origin"); got != "" {
			t.Errorf("Allow-Origin = %q for a foreign origin", got)
		}
	})
	t.Run("actual request exposes ETag", func(t *testing.T) {
		r := h.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags", key: h.admin, header: map[string]string{"Origin": "https://app.example.com"}})
		if r.status != 200 {
			t.Fatalf("status %d", r.status)
		}
		if r.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" || !strings.Contains(r.header.Get("Access-Control-Expose-Headers"), "ETag") {
			t.Errorf("CORS headers: %v", r.header)
		}
		if !strings.Contains(r.header.Get("Vary"), "Origin") {
			t.Errorf("Vary = %q", r.header.Get("Vary"))
		}
	})
}

func TestOFREPRateLimit(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RateLimit = 2 })
	h.createEnv("default", testFlags)
	now := time.Now()
	h.clock.Set(now) // frozen: no refill
	other := h.newKey(auth.RoleSDK, "other", "default")
	path := "/ofrep/v1/evaluate/flags/static-on"
	for i := range 2 {
		if r := h.do(req{method: "POST", path: path, key: h.admin}); r.status != 200 {
			t.Fatalf("request %d: %d", i, r.status)
		}
	}
	r := h.do(req{method: "POST", path: path, key: h.admin})
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("third request: %d, want 429", r.status)
	}
	if r.header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After = %q, want 1", r.header.Get("Retry-After"))
	}
	var ge ofrep.GeneralError
	if err := json.Unmarshal(r.body, &ge); err != nil || ge.ErrorDetails == "" {
		t.Errorf("429 body %s", r.body)
	}
	if r := h.do(req{method: "POST", path: path, key: other}); r.status != 200 {
		t.Errorf("another key is limited separately: %d", r.status)
	}
	h.clock.Set(now.Add(time.Second))
	if r := h.do(req{method: "POST", path: path, key: h.admin}); r.status != 200 {
		t.Errorf("after a second: %d", r.status)
	}
}
