package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flagpole/flagpole/deploy"
)

const (
	deployAdminKey = "fp_admin_deploy-e2e-0123456789"
	hookSecret     = "webhook-secret-0123456789"
)

// hookReceiver records the signed webhooks it accepts; while failing it
// answers 503.
type hookReceiver struct {
	t       *testing.T
	mu      sync.Mutex
	failing bool
	got     []deploy.GenericBody
	ids     map[string]int // X-Flagpole-Delivery → times accepted
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failing {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if err := deploy.VerifySignature(hookSecret, r.Header.Get(deploy.SignatureHeader), body, time.Now(), 0); err != nil {
		h.t.Errorf("webhook %s: %v", r.Header.Get("X-Flagpole-Delivery"), err)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var b deploy.GenericBody
	if err := json.Unmarshal(body, &b); err != nil {
		h.t.Errorf("webhook body %s: %v", body, err)
	}
	h.got = append(h.got, b)
	h.ids[r.Header.Get("X-Flagpole-Delivery")]++
	w.WriteHeader(http.StatusOK)
}

// events returns the accepted events by type.
func (h *hookReceiver) events() map[string][]deploy.GenericBody {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string][]deploy.GenericBody{}
	for _, b := range h.got {
		out[string(b.Event)] = append(out[string(b.Event)], b)
	}
	return out
}

func writeWebhooks(t *testing.T, url string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "webhooks.yaml")
	if err := os.WriteFile(path, []byte("webhooks:\n  - name: ops\n    url: "+url+"\n    secretEnv: HOOK_SECRET\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const deployTemplate = `name: web
metrics:
  - name: errors
    kind: ratio
    numerator: sum(increase(errors_total{ {{ .scope }} }[{{ .window }}]))
    denominator: sum(increase(requests_total{ {{ .scope }} }[{{ .window }}]))
    margin: {relative: 0.2}
    critical: true
schedule: {interval: 1m, warmup: 1h, count: 5}
`

// TestServeDeployEndToEnd runs the real binary with a webhook file: Flagger
// hooks start and read an analysis, Argo's endpoint polls it, Flagger's
// events and the canary's failure reach the receiver as signed webhooks,
// as does analysis.completed once post-rollout cancels the analysis; the
// delivery log shows them delivered. Then, with the receiver down, a
// notification queued before a restart is delivered by the next process.
func TestServeDeployEndToEnd(t *testing.T) {
	rcv := &hookReceiver{t: t, ids: map[string]int{}}
	recv := httptest.NewServer(rcv)
	defer recv.Close()
	dataDir := t.TempDir()
	env := []string{"FLAGPOLE_ADMIN_KEY=" + deployAdminKey, "HOOK_SECRET=" + hookSecret, "FLAGPOLE_WEBHOOKS_FILE=" + writeWebhooks(t, recv.URL+"/hook")}
	p := startServe(t, env, "--data-dir", dataDir)
	p.waitReady()

	req := func(method, path, token, contentType, body string) (int, string) {
		t.Helper()
		r, _ := http.NewRequest(method, p.url+path, strings.NewReader(body))
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		if contentType != "" {
			r.Header.Set("Content-Type", contentType)
		}
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := req("POST", "/api/v1/analysis-templates", deployAdminKey, "application/yaml", deployTemplate); status != http.StatusCreated {
		t.Fatalf("creating the template: %d %s", status, body)
	}
	hook := func(h, phase string, md map[string]string) (int, string) {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"name": "podinfo", "namespace": "test", "phase": phase, "checksum": "abc123", "metadata": md})
		return req("POST", "/api/v1/deploy/flagger/"+h, "", "application/json", string(b))
	}
	md := map[string]string{"template": "web", "baselineScope": `track="stable"`, "canaryScope": `track="canary"`, "token": deployAdminKey}
	if status, body := hook("pre-rollout", "Progressing", map[string]string{"template": "web"}); status != http.StatusUnauthorized {
		t.Errorf("a hook without a token: %d %s", status, body)
	}
	if status, body := hook("pre-rollout", "Progressing", md); status != http.StatusOK || !strings.Contains(body, "started analysis") {
		t.Fatalf("pre-rollout: %d %s", status, body)
	}
	if status, body := hook("confirm-promotion", "Progressing", md); status != http.StatusConflict || !strings.Contains(body, `"decision":"wait"`) {
		t.Errorf("confirm-promotion while running: %d %s", status, body)
	}
	id := deploy.FlaggerRunID("test", "podinfo", "abc123")
	if status, body := req("GET", "/api/v1/analyses/"+id+"/verdict", deployAdminKey, "", ""); status != http.StatusOK || !strings.Contains(body, `"verdict":"running"`) {
		t.Errorf("the API's verdict of the Flagger session's analysis: %d %s", status, body)
	}
	argoBody := `{"session":"shop/checkout/7c9d","template":"web","baselineScope":"h=\"1\"","canaryScope":"h=\"2\""}`
	if status, body := req("POST", deploy.ArgoPath, "", "application/json", argoBody); status != http.StatusUnauthorized {
		t.Errorf("Argo endpoint without a key: %d %s", status, body)
	}
	if status, body := req("POST", deploy.ArgoPath, deployAdminKey, "application/json", argoBody); status != http.StatusOK || !strings.Contains(body, `"verdict":"running"`) {
		t.Errorf("Argo endpoint: %d %s", status, body)
	}
	if status, body := hook("event", "Progressing", map[string]string{"eventMessage": "Advance podinfo.test canary weight 10", "eventType": "Normal", "timestamp": "1746100800000", "token": deployAdminKey}); status != http.StatusAccepted {
		t.Errorf("event: %d %s", status, body)
	}
	if status, body := hook("post-rollout", "Failed", md); status != http.StatusOK || !strings.Contains(body, "cancelled") {
		t.Errorf("post-rollout: %d %s", status, body)
	}
	waitUntil(t, 30*time.Second, "rollout.step, rollout.failed and analysis.completed webhooks", func() bool {
		ev := rcv.events()
		return len(ev["rollout.step"]) == 1 && len(ev["rollout.failed"]) == 1 && len(ev["analysis.completed"]) == 1
	})
	ev := rcv.events()
	if s := ev["rollout.step"][0]; s.Subject != "flagger/test/podinfo" || !strings.Contains(string(s.Data), "canary weight 10") {
		t.Errorf("rollout.step webhook = %+v %s", s, s.Data)
	}
	var done map[string]any
	_ = json.Unmarshal(ev["analysis.completed"][0].Data, &done)
	if done["analysisId"] != id || done["verdict"] != "inconclusive" || done["phase"] != "Cancelled" {
		t.Errorf("analysis.completed webhook data = %v", done)
	}
	// The log records each delivery once the receiver has answered.
	waitUntil(t, 30*time.Second, "the delivery log to show three deliveries delivered", func() bool {
		status, body := req("GET", "/api/v1/notifications", deployAdminKey, "", "")
		return status == http.StatusOK && strings.Count(body, `"state":"delivered"`) == 3 && strings.Count(body, `"lastStatus":200`) == 3
	})

	// A notification queued while the receiver is down survives a restart.
	rcv.mu.Lock()
	rcv.failing = true
	rcv.mu.Unlock()
	if status, body := req("POST", "/api/v1/webhooks/test", deployAdminKey, "application/json", `{"subscription":"ops"}`); status != http.StatusAccepted {
		t.Fatalf("test webhook: %d %s", status, body)
	}
	waitUntil(t, 30*time.Second, "a failed attempt of the test webhook", func() bool {
		_, body := req("GET", "/api/v1/notifications?limit=1", deployAdminKey, "", "")
		return strings.Contains(body, `"lastStatus":503`)
	})
	if code := p.stop(); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	rcv.mu.Lock()
	rcv.failing = false
	rcv.mu.Unlock()
	p2 := startServe(t, env, "--data-dir", dataDir)
	p2.waitReady()
	waitUntil(t, 60*time.Second, "the test webhook from the restarted server", func() bool { return len(rcv.events()["test"]) == 1 })
	for id, n := range rcv.ids {
		if n != 1 {
			t.Errorf("delivery %s accepted %d times", id, n)
		}
	}
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestServeRejectsBadWebhookFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "webhooks.yaml")
	if err := os.WriteFile(path, []byte("webhooks:\n  - name: ops\n    url: ftp://example.com\n    secretEnv: MISSING\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, nil, "serve", "--data-dir", dir, "--webhooks", path)
	r.expect(t, 1, nil, []string{"--webhooks " + path, "webhooks[0].secretEnv: environment variable MISSING is not set", "webhooks[0].url: must be an absolute http:// or https:// URL"})
	r = runCLI(t, map[string]string{"FLAGPOLE_WEBHOOKS_FILE": filepath.Join(dir, "absent.yaml")}, "serve", "--data-dir", dir)
	r.expect(t, 1, nil, []string{"--webhooks: open"})
}
