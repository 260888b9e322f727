package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/canarytest"
	"github.com/flagpole/flagpole/canary/outboxtest"
	"github.com/flagpole/flagpole/deploy"
)

// The orchestrator contract tests: requests shaped exactly as Flagger and
// Argo Rollouts send them get, for every state of the analysis, the
// answers those controllers act on. Verdicts are set directly in the
// analysis store (the fake analysis service below is the real adapter over
// an in-memory store, with a knob to put a run in any phase).

var clock = time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)

// fakeAnalyses is deploy.NewAnalyses over canarytest.Memory, holding the
// repository's example template (canary/testdata/http-canary.yaml).
type fakeAnalyses struct {
	deploy.Analyses
	store *canarytest.Memory
}

func newFakeAnalyses(t testing.TB) *fakeAnalyses {
	t.Helper()
	data, err := os.ReadFile("../canary/testdata/http-canary.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := canary.ParseTemplate(data)
	if err != nil {
		t.Fatal(err)
	}
	store := canarytest.NewMemory()
	now := func() time.Time { return clock }
	svc := canary.NewService(store, now)
	if _, err := svc.PutTemplate(t.Context(), tpl, canary.TemplateWrite{}); err != nil {
		t.Fatal(err)
	}
	return &fakeAnalyses{Analyses: deploy.NewAnalyses(svc, now), store: store}
}

// state names what the session's analysis looks like.
type state string

const (
	stNone         state = "no analysis"
	stPending      state = "warming up"
	stRunning      state = "running"
	stPass         state = "passed"
	stFail         state = "failed"
	stInconclusive state = "ended inconclusive"
	stError        state = "ended in error"
	stCancelled    state = "cancelled"
)

var allStates = []state{stNone, stPending, stRunning, stPass, stFail, stInconclusive, stError, stCancelled}

// report is a measurement's report with two metrics.
func report(v canary.Verdict, score float64) canary.Report {
	return canary.Report{Verdict: v, Reason: "error-rate " + string(v), Score: canary.Float(score), Metrics: []canary.MetricResult{
		{Metric: "error-rate", Kind: canary.KindRatio, Verdict: v, Critical: true, Reason: "error rate 2.0% vs 1.9%", Evidence: canary.Evidence{Effect: 0.05, Lower: -0.1, Upper: 0.2, Unit: canary.UnitRelative}},
		{Metric: "latency", Kind: canary.KindHistogram, Verdict: canary.VerdictPass, Reason: "latency within margin"},
	}}
}

// set creates the run id (from the template) and puts it in state s.
func (f *fakeAnalyses) set(t *testing.T, id string, s state) {
	t.Helper()
	if s == stNone {
		return
	}
	sr, _, err := f.Ensure(t.Context(), id, "http-canary", canary.Args{BaselineScope: `track="stable"`, CanaryScope: `track="canary"`, Values: map[string]string{"service": "checkout"}})
	if err != nil {
		t.Fatal(err)
	}
	r := &sr.Run
	step := func(v canary.Verdict, score float64) {
		r.Steps = append(r.Steps, canary.Step{Number: len(r.Steps) + 1, At: clock, Report: report(v, score)})
	}
	switch s {
	case stPending:
	case stRunning:
		r.Phase = canary.PhaseRunning
		step(canary.VerdictInconclusive, 80)
	case stPass:
		r.Phase, r.Message = canary.PhaseSuccessful, "every decision metric passed"
		step(canary.VerdictPass, 100)
	case stFail:
		r.Phase, r.Message = canary.PhaseFailed, "error-rate: canary errors 3.1x baseline"
		step(canary.VerdictFail, 40)
	case stInconclusive:
		r.Phase, r.Message = canary.PhaseInconclusive, "deadline passed without a decision"
		step(canary.VerdictInconclusive, 70)
	case stError:
		r.Phase, r.Message = canary.PhaseError, "4 measurement errors in a row: prometheus unreachable"
		step(canary.VerdictError, 0)
	case stCancelled:
		r.Phase, r.Message = canary.PhaseCancelled, "cancelled by hand"
	}
	if r.Phase.Terminal() {
		r.EndedAt = clock
	}
	if _, err := f.store.UpdateRun(t.Context(), canary.RunUpdate{Run: r, IfVersion: sr.Version}); err != nil {
		t.Fatal(err)
	}
}

// flaggerServer serves the Flagger hooks on a real listener.
func flaggerServer(t *testing.T, cfg deploy.FlaggerConfig) *httptest.Server {
	t.Helper()
	f, err := deploy.NewFlagger(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	for _, r := range f.Routes() {
		mux.Handle(r.Path, r.Handler) // every method: the handler answers 405 itself
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func post(t *testing.T, url, body string, header ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("answer %d is not JSON: %s", resp.StatusCode, raw)
	}
	return resp.StatusCode, m
}

// flaggerGo is Flagger's own test of a webhook answer: any status above
// 202 (or no answer) is a failed check.
func flaggerGo(status int) bool { return status >= 200 && status <= 202 }

// flaggerPayload is a hook payload as Flagger sends it (CallWebhook:
// name, namespace, phase, checksum and the webhook's metadata).
func flaggerPayload(phase string, md map[string]string) string {
	b, _ := json.Marshal(map[string]any{"name": "podinfo", "namespace": "test", "phase": phase, "checksum": "6d4f7c8b9f", "metadata": md})
	return string(b)
}

var flaggerMetadata = map[string]string{
	"template":      "http-canary",
	"baselineScope": `namespace="test",pod=~"podinfo-primary-.*"`,
	"canaryScope":   `namespace="test",pod=~"podinfo-[0-9a-f]+-.*"`,
	"arg.service":   "podinfo",
}

func withMetadata(extra map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range flaggerMetadata {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

func TestFlaggerContract(t *testing.T) {
	// Expected status per hook and state, default onInconclusive (rollback).
	// 200-202 is "go" to Flagger.
	type row map[state]int
	all := func(code int) row {
		r := row{}
		for _, s := range allStates {
			r[s] = code
		}
		return r
	}
	gate := row{stNone: 200, stPending: 200, stRunning: 200, stPass: 200, stFail: 412, stInconclusive: 412, stError: 412, stCancelled: 412}
	want := map[string]row{
		deploy.HookConfirmRollout:         gate,
		deploy.HookPreRollout:             gate,
		deploy.HookRollout:                gate,
		deploy.HookConfirmTrafficIncrease: gate,
		deploy.HookConfirmPromotion:       {stNone: 409, stPending: 409, stRunning: 409, stPass: 200, stFail: 412, stInconclusive: 412, stError: 412, stCancelled: 412},
		deploy.HookRollback:               {stNone: 409, stPending: 409, stRunning: 409, stPass: 409, stFail: 200, stInconclusive: 200, stError: 200, stCancelled: 200},
		deploy.HookPostRollout:            all(200),
		deploy.HookEvent:                  all(202),
	}
	for _, hook := range deploy.FlaggerHooks {
		for _, s := range allStates {
			t.Run(hook+"/"+string(s), func(t *testing.T) {
				an := newFakeAnalyses(t)
				id := deploy.FlaggerRunID("test", "podinfo", "6d4f7c8b9f")
				an.set(t, id, s)
				srv := flaggerServer(t, deploy.FlaggerConfig{Analyses: an})
				md := withMetadata(nil)
				if hook == deploy.HookEvent {
					md = map[string]string{"eventMessage": "Advance podinfo.test canary weight 10", "eventType": "Normal", "timestamp": "1746100800000"}
				}
				status, body := post(t, srv.URL+"/api/v1/deploy/flagger/"+hook, flaggerPayload("Progressing", md))
				if status != want[hook][s] {
					t.Errorf("status %d, want %d; body %v", status, want[hook][s], body)
				}
				if status >= 500 {
					t.Errorf("a verdict answered %d", status)
				}
				reason, _ := body["reason"].(string)
				if reason == "" || body["hook"] != hook || body["decision"] == "" || body["session"] != "test/podinfo/6d4f7c8b9f" {
					t.Errorf("body %v lacks reason, hook, decision or session", body)
				}
				if !flaggerGo(status) && (s == stFail) && !strings.Contains(reason, "errors 3.1x baseline") && hook != deploy.HookRollback {
					t.Errorf("a halt for a failed analysis does not say why: %q", reason)
				}
				// The gating hooks start the analysis from the metadata.
				startsAnalysis := hook == deploy.HookPreRollout || hook == deploy.HookRollout || hook == deploy.HookConfirmTrafficIncrease || hook == deploy.HookConfirmPromotion
				sr, err := an.Run(t.Context(), id)
				switch {
				case s == stNone && startsAnalysis:
					if err != nil {
						t.Fatalf("hook %s did not start the analysis: %v", hook, err)
					}
					if sr.Args.BaselineScope != flaggerMetadata["baselineScope"] || sr.Args.CanaryScope != flaggerMetadata["canaryScope"] || sr.Args.Values["service"] != "podinfo" || sr.Template.Name != "http-canary" {
						t.Errorf("started with %+v from template %s", sr.Args, sr.Template.Name)
					}
					if !strings.HasPrefix(reason, "started analysis ") {
						t.Errorf("reason %q does not say the analysis started", reason)
					}
				case s == stNone && err == nil:
					t.Errorf("hook %s started an analysis", hook)
				}
			})
		}
	}
}

func TestFlaggerOnInconclusiveWait(t *testing.T) {
	want := map[string]int{
		deploy.HookConfirmRollout: 200, deploy.HookPreRollout: 200, deploy.HookRollout: 200,
		deploy.HookConfirmTrafficIncrease: 200, deploy.HookConfirmPromotion: 409, deploy.HookRollback: 409,
	}
	for hook, code := range want {
		t.Run(hook, func(t *testing.T) {
			an := newFakeAnalyses(t)
			an.set(t, deploy.FlaggerRunID("test", "podinfo", "6d4f7c8b9f"), stInconclusive)
			srv := flaggerServer(t, deploy.FlaggerConfig{Analyses: an})
			status, body := post(t, srv.URL+"/api/v1/deploy/flagger/"+hook, flaggerPayload("Progressing", withMetadata(map[string]string{"onInconclusive": "wait"})))
			if status != code {
				t.Errorf("status %d, want %d: %v", status, code, body)
			}
		})
	}
}

func TestFlaggerBadRequests(t *testing.T) {
	an := newFakeAnalyses(t)
	srv := flaggerServer(t, deploy.FlaggerConfig{Analyses: an})
	tests := []struct {
		name   string
		hook   string
		method string
		body   string
		status int
		field  string // a detail must name it ("" for none)
	}{
		{"not JSON", deploy.HookRollout, http.MethodPost, `{"name":`, 400, ""},
		{"no name", deploy.HookRollout, http.MethodPost, `{"namespace":"test","metadata":{}}`, 400, "name"},
		{"metadata not strings", deploy.HookRollout, http.MethodPost, `{"name":"a","namespace":"b","metadata":{"template":1}}`, 400, "metadata"},
		{"unknown hook", "pre-promotion", http.MethodPost, flaggerPayload("Progressing", flaggerMetadata), 404, ""},
		{"GET", deploy.HookRollout, http.MethodGet, "", 405, ""},
		{"no template", deploy.HookRollout, http.MethodPost, flaggerPayload("Progressing", map[string]string{"canaryScope": "a", "baselineScope": "b"}), 422, "metadata.template"},
		{"unknown template", deploy.HookRollout, http.MethodPost, flaggerPayload("Progressing", withMetadata(map[string]string{"template": "nope"})), 422, "metadata.template"},
		{"missing template argument", deploy.HookPreRollout, http.MethodPost, flaggerPayload("Progressing", map[string]string{"template": "http-canary", "baselineScope": "a=\"1\"", "canaryScope": "a=\"2\""}), 422, "metadata.arg.service"},
		{"bad split", deploy.HookRollout, http.MethodPost, flaggerPayload("Progressing", withMetadata(map[string]string{"expectedSplit": "ten percent"})), 422, "metadata.expectedSplit"},
		{"bad policy", deploy.HookRollout, http.MethodPost, flaggerPayload("Progressing", withMetadata(map[string]string{"onInconclusive": "maybe"})), 422, "metadata.onInconclusive"},
		{"too large", deploy.HookRollout, http.MethodPost, `{"name":"` + strings.Repeat("a", 70<<10) + `"}`, 413, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+"/api/v1/deploy/flagger/"+tc.hook, strings.NewReader(tc.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body deploy.HookResponse
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status || body.Reason == "" || body.Decision != deploy.DecisionInvalid {
				t.Errorf("%d %+v, want %d with a reason", resp.StatusCode, body, tc.status)
			}
			if tc.field != "" {
				found := false
				for _, d := range body.Details {
					found = found || d.Field == tc.field
				}
				if !found {
					t.Errorf("details %+v do not name %s", body.Details, tc.field)
				}
			}
		})
	}
	if _, err := an.Run(t.Context(), deploy.FlaggerRunID("test", "podinfo", "6d4f7c8b9f")); err == nil {
		t.Error("a refused request started an analysis")
	}
}

func TestFlaggerStoreDown(t *testing.T) {
	an := newFakeAnalyses(t)
	an.store.Fail(true)
	srv := flaggerServer(t, deploy.FlaggerConfig{Analyses: an})
	for hook, decision := range map[string]string{deploy.HookRollout: deploy.DecisionHalt, deploy.HookRollback: deploy.DecisionNoRollback} {
		status, body := post(t, srv.URL+"/api/v1/deploy/flagger/"+hook, flaggerPayload("Progressing", flaggerMetadata))
		if status != http.StatusServiceUnavailable || body["decision"] != decision || flaggerGo(status) {
			t.Errorf("%s with the store down: %d %v", hook, status, body)
		}
	}
}

// keyStore is an auth.Store of a few keys.
type keyStore struct{ keys map[string]auth.Key }

func (k keyStore) CreateKey(context.Context, auth.Key) error { return nil }
func (k keyStore) KeyByHash(_ context.Context, h string) (auth.Key, error) {
	if k.keys == nil {
		return auth.Key{}, fmt.Errorf("down: %w", canary.ErrUnavailable)
	}
	key, ok := k.keys[h]
	if !ok {
		return auth.Key{}, auth.ErrNotFound
	}
	return key, nil
}
func (k keyStore) Keys(context.Context) ([]auth.Key, error)           { return nil, nil }
func (k keyStore) RevokeKey(context.Context, string, time.Time) error { return nil }

func TestFlaggerKeys(t *testing.T) {
	revoked := clock
	keys := keyStore{keys: map[string]auth.Key{
		auth.HashSecret("admin-secret"):   {ID: "1", Role: auth.RoleAdmin},
		auth.HashSecret("editor-secret"):  {ID: "2", Role: auth.RoleEditor, Envs: []string{"flagger"}},
		auth.HashSecret("sdk-secret"):     {ID: "3", Role: auth.RoleSDK, Envs: []string{"prod"}},
		auth.HashSecret("revoked-secret"): {ID: "4", Role: auth.RoleAdmin, RevokedAt: &revoked},
	}}
	tests := []struct {
		name   string
		token  string
		header []string
		status int
	}{
		{"admin in metadata", "admin-secret", nil, 200},
		{"editor in metadata", "editor-secret", nil, 200},
		{"editor in a header", "", []string{"Authorization", "Bearer editor-secret"}, 200},
		{"sdk key", "sdk-secret", nil, 403},
		{"revoked", "revoked-secret", nil, 401},
		{"unknown", "guess", nil, 401},
		{"none", "", nil, 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := flaggerServer(t, deploy.FlaggerConfig{Analyses: newFakeAnalyses(t), CheckKey: deploy.CheckKeys(keys)})
			md := withMetadata(nil)
			if tc.token != "" {
				md["token"] = tc.token
			}
			status, body := post(t, srv.URL+"/api/v1/deploy/flagger/rollout", flaggerPayload("Progressing", md), tc.header...)
			if status != tc.status {
				t.Errorf("status %d, want %d: %v", status, tc.status, body)
			}
		})
	}
	srv := flaggerServer(t, deploy.FlaggerConfig{Analyses: newFakeAnalyses(t), CheckKey: deploy.CheckKeys(keyStore{})})
	if status, body := post(t, srv.URL+"/api/v1/deploy/flagger/rollout", flaggerPayload("Progressing", withMetadata(map[string]string{"token": "x"}))); status != 503 {
		t.Errorf("key store down: %d %v, want 503", status, body)
	}
}

// TestFlaggerLifecycle follows one canary revision through Flagger's hooks
// with notifications on: events become rollout.step notifications (each
// once), a failed analysis halts the rollout hook and triggers the rollback
// hook, and the failure is notified once although both the event hook and
// post-rollout report it.
func TestFlaggerLifecycle(t *testing.T) {
	an := newFakeAnalyses(t)
	ob := outboxtest.NewMemory()
	sender := newSender(t, deploy.SenderConfig{Outbox: ob, Subscriptions: []deploy.Subscription{sub("ops", "http://127.0.0.1:1")}, Now: func() time.Time { return clock }})
	srv := flaggerServer(t, deploy.FlaggerConfig{Analyses: an, Notifier: sender})
	hook := func(h, phase string, md map[string]string) (int, map[string]any) {
		return post(t, srv.URL+"/api/v1/deploy/flagger/"+h, flaggerPayload(phase, md))
	}
	event := func(msg, phase string) map[string]string {
		return map[string]string{"eventMessage": msg, "eventType": "Normal", "timestamp": "1746100800000"}
	}
	if s, b := hook(deploy.HookPreRollout, "Progressing", flaggerMetadata); s != 200 {
		t.Fatalf("pre-rollout %d %v", s, b)
	}
	for range 2 { // Flagger may send an event twice; it is notified once
		if s, b := hook(deploy.HookEvent, "Progressing", event("Advance podinfo.test canary weight 10", "Progressing")); s != 202 || !strings.Contains(b["reason"].(string), "rollout.step") {
			t.Fatalf("event %d %v", s, b)
		}
	}
	id := deploy.FlaggerRunID("test", "podinfo", "6d4f7c8b9f")
	an.set(t, id, stFail)
	if s, _ := hook(deploy.HookRollout, "Progressing", flaggerMetadata); s != 412 {
		t.Errorf("rollout after the failure: %d, want 412", s)
	}
	if s, _ := hook(deploy.HookRollback, "Progressing", flaggerMetadata); s != 200 {
		t.Errorf("rollback after the failure: %d, want 200", s)
	}
	if s, _ := hook(deploy.HookEvent, "Failed", event("Canary failed! Scaling down podinfo.test", "Failed")); s != 202 {
		t.Errorf("failed event: %d", s)
	}
	if s, _ := hook(deploy.HookPostRollout, "Failed", flaggerMetadata); s != 200 {
		t.Errorf("post-rollout: %d", s)
	}
	page, err := ob.Notifications(t.Context(), canary.NotificationQuery{})
	if err != nil {
		t.Fatal(err)
	}
	count := map[canary.EventType]int{}
	for _, n := range page.Notifications {
		count[n.Notification.Event]++
		if n.Notification.Event == canary.EventRolloutFailed {
			var p map[string]any
			_ = json.Unmarshal(n.Notification.Payload, &p)
			if p["verdict"] != "fail" || p["analysisId"] != id || n.Notification.Subject != "flagger/test/podinfo" {
				t.Errorf("rollout.failed notification = %s %s", n.Notification.Subject, n.Notification.Payload)
			}
		}
	}
	if count[canary.EventRolloutStep] != 1 || count[canary.EventRolloutFailed] != 1 || len(page.Notifications) != 2 {
		t.Errorf("notifications by event = %v, want one rollout.step and one rollout.failed", count)
	}
}

// TestFlaggerPostRolloutCancels: Flagger promoting while the analysis still
// runs (e.g. the Canary skipped analysis) ends the analysis as Cancelled.
func TestFlaggerPostRolloutCancels(t *testing.T) {
	an := newFakeAnalyses(t)
	id := deploy.FlaggerRunID("test", "podinfo", "6d4f7c8b9f")
	an.set(t, id, stRunning)
	srv := flaggerServer(t, deploy.FlaggerConfig{Analyses: an})
	if s, b := post(t, srv.URL+"/api/v1/deploy/flagger/post-rollout", flaggerPayload("Succeeded", flaggerMetadata)); s != 200 || !strings.Contains(b["reason"].(string), "cancelled") {
		t.Errorf("post-rollout = %d %v", s, b)
	}
	sr, err := an.Run(t.Context(), id)
	if err != nil || sr.Phase != canary.PhaseCancelled || !strings.Contains(sr.Message, "Succeeded") {
		t.Errorf("run after post-rollout = %s %q, %v", sr.Phase, sr.Message, err)
	}
}

// ---- Argo Rollouts ----

// analysisTemplates reads the shipped AnalysisTemplates by name.
func analysisTemplates(t *testing.T) map[string]map[string]any {
	t.Helper()
	data, err := os.ReadFile("argo-rollouts/analysistemplate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatal(err)
		}
		if m == nil {
			continue
		}
		out[get(m, "metadata.name").(string)] = m
	}
	return out
}

// argoArgs are the Rollout's argument values (the secret resolved).
var argoArgs = map[string]string{
	"namespace": "shop", "rollout": "checkout", "service": "checkout", "canary-hash": "7c9d5f8b6", "stable-hash": "54d8b7c9f",
	"template": "http-canary", "api-key": "editor-secret",
}

// render substitutes {{args.NAME}} as Argo does.
func render(t *testing.T, s string, base string) string {
	t.Helper()
	out := regexp.MustCompile(`\{\{\s*args\.([a-z-]+)\s*\}\}`).ReplaceAllStringFunc(s, func(m string) string {
		name := regexp.MustCompile(`args\.([a-z-]+)`).FindStringSubmatch(m)[1]
		if name == "flagpole-url" {
			return base
		}
		v, ok := argoArgs[name]
		if !ok {
			t.Fatalf("the template uses an unknown argument %s", name)
		}
		return v
	})
	return out
}

// argoMeasurement judges an answer as Argo does with the metric's
// conditions: success when successCondition holds, failure when
// failureCondition holds, and with only a failureCondition, success
// otherwise; inconclusive when neither.
func argoMeasurement(t *testing.T, metric map[string]any, result map[string]any) string {
	t.Helper()
	eval := func(cond string) (bool, bool) {
		if cond == "" {
			return false, false
		}
		m := regexp.MustCompile(`^result\.verdict == "([a-z]+)"$`).FindStringSubmatch(cond)
		if m == nil {
			t.Fatalf("condition %q is not of the shape this test evaluates", cond)
		}
		return result["verdict"] == m[1], true
	}
	success, hasS := eval(str(metric["successCondition"]))
	failure, hasF := eval(str(metric["failureCondition"]))
	switch {
	case failure:
		return "Failed"
	case success:
		return "Successful"
	case hasF && !hasS:
		return "Successful"
	}
	return "Inconclusive"
}

func TestArgoContract(t *testing.T) {
	templates := analysisTemplates(t)
	gate := get(templates["flagpole-gate"], "spec.metrics.0").(map[string]any)
	guard := get(templates["flagpole-guard"], "spec.metrics.0").(map[string]any)
	if str(gate["successCondition"]) != `result.verdict == "pass"` || str(gate["failureCondition"]) != `result.verdict == "fail"` {
		t.Errorf("gate conditions = %q / %q", gate["successCondition"], gate["failureCondition"])
	}
	if guard["successCondition"] != nil || str(guard["failureCondition"]) != `result.verdict == "fail"` {
		t.Errorf("guard conditions = %v / %v; a guard only fails", guard["successCondition"], guard["failureCondition"])
	}
	if c, l := get(gate, "count"), get(gate, "inconclusiveLimit"); fmt.Sprint(c) != fmt.Sprint(l.(float64)+1) {
		t.Errorf("gate count %v must be inconclusiveLimit %v + 1, so a never-ending analysis pauses the rollout instead of passing it", c, l)
	}

	want := map[state][2]string{ // gate, guard
		stPending:      {"Inconclusive", "Successful"},
		stRunning:      {"Inconclusive", "Successful"},
		stPass:         {"Successful", "Successful"},
		stFail:         {"Failed", "Failed"},
		stInconclusive: {"Failed", "Successful"}, // the gate asks for inconclusive: fail
		stError:        {"Failed", "Successful"},
		stCancelled:    {"Failed", "Successful"},
	}
	for _, s := range allStates {
		if s == stNone {
			continue
		}
		t.Run(string(s), func(t *testing.T) {
			an := newFakeAnalyses(t)
			a, err := deploy.NewArgo(an, nil)
			if err != nil {
				t.Fatal(err)
			}
			mux := http.NewServeMux()
			for _, r := range a.Routes() {
				if r.Auth != deploy.AuthEditor {
					t.Errorf("route %s is %s, want editor keys", r.Path, r.Auth)
				}
				mux.Handle(r.Method+" "+r.Path, r.Handler)
			}
			srv := httptest.NewServer(mux)
			defer srv.Close()
			id := deploy.ArgoRunID("shop/checkout/7c9d5f8b6")
			an.set(t, id, s)
			for i, metric := range []map[string]any{gate, guard} {
				web := get(metric, "provider.web").(map[string]any)
				if str(web["method"]) != http.MethodPost || !strings.HasSuffix(str(web["url"]), deploy.ArgoPath) {
					t.Fatalf("web provider %v does not POST to %s", web, deploy.ArgoPath)
				}
				var headers []string
				for _, h := range web["headers"].([]any) {
					hm := h.(map[string]any)
					headers = append(headers, str(hm["key"]), render(t, str(hm["value"]), srv.URL))
				}
				status, result := post(t, render(t, str(web["url"]), srv.URL), render(t, str(web["body"]), srv.URL), headers...)
				if status != http.StatusOK {
					t.Fatalf("status %d (Argo would record an Error measurement): %v", status, result)
				}
				for _, k := range []string{"verdict", "score", "final", "reason", "analysisId", "metrics"} {
					if _, ok := result[k]; !ok {
						t.Errorf("answer lacks %q: %v", k, result)
					}
				}
				if result["analysisId"] != id {
					t.Errorf("analysisId %v, want %s (the session's run)", result["analysisId"], id)
				}
				if got := argoMeasurement(t, metric, result); got != want[s][i] {
					t.Errorf("%s measurement = %s, want %s (answer %v)", metric["name"], got, want[s][i], result)
				}
			}
		})
	}
}

func TestArgoStartsOnceAndValidates(t *testing.T) {
	an := newFakeAnalyses(t)
	a, _ := deploy.NewArgo(an, nil)
	srv := httptest.NewServer(a)
	defer srv.Close()
	body := `{"session":"shop/checkout/abc","template":"http-canary","baselineScope":"h=\"1\"","canaryScope":"h=\"2\"","args":{"service":"checkout"}}`
	var wg sync.WaitGroup
	ids := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			status, v := post(t, srv.URL, body)
			if status != 200 || v["verdict"] != deploy.VerdictRunning || v["final"] != false {
				t.Errorf("first polls: %d %v", status, v)
			}
			ids <- fmt.Sprint(v["analysisId"])
		})
	}
	wg.Wait()
	close(ids)
	first := <-ids
	for id := range ids {
		if id != first {
			t.Errorf("concurrent first polls started %s and %s", first, id)
		}
	}
	page, _ := an.store.Runs(t.Context(), canary.RunQuery{})
	if len(page.Runs) != 1 {
		t.Errorf("%d runs started, want 1", len(page.Runs))
	}
	tests := []struct {
		name, body string
		status     int
		field      string
	}{
		{"no session", `{"template":"http-canary"}`, 400, "session"},
		{"unknown field", `{"session":"a","tempalte":"x"}`, 400, ""},
		{"bad inconclusive", `{"session":"a","inconclusive":"pass"}`, 400, "inconclusive"},
		{"wrong type", `{"session":"a","expectedSplit":"ten"}`, 400, "expectedSplit"},
		{"unknown template", `{"session":"new","template":"nope","baselineScope":"a","canaryScope":"b"}`, 422, "template"},
		{"missing argument", `{"session":"new","template":"http-canary","baselineScope":"a=\"1\"","canaryScope":"a=\"2\""}`, 422, "args.service"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, b := post(t, srv.URL, tc.body)
			e, _ := b["error"].(map[string]any)
			if status != tc.status || e == nil || e["message"] == "" {
				t.Fatalf("%d %v, want %d with the API's error shape", status, b, tc.status)
			}
			if tc.field != "" && !strings.Contains(fmt.Sprint(e["details"]), "field:"+tc.field+" ") {
				t.Errorf("details %v do not name %s", e["details"], tc.field)
			}
		})
	}
}

// TestFlaggerCanaryManifest checks the shipped Canary against the hooks:
// each webhook posts to the path of its own type, every hook type is
// there, and the gating hooks carry what starts an analysis.
func TestFlaggerCanaryManifest(t *testing.T) {
	data, err := os.ReadFile("flagger/canary.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := yaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, w := range get(c, "spec.analysis.webhooks").([]any) {
		wm := w.(map[string]any)
		typ := str(wm["type"])
		seen[typ] = true
		if !strings.HasSuffix(str(wm["url"]), "/api/v1/deploy/flagger/"+typ) {
			t.Errorf("webhook %s of type %s posts to %s", wm["name"], typ, wm["url"])
		}
		md, _ := wm["metadata"].(map[string]any)
		if md["token"] == nil {
			t.Errorf("webhook %s has no token", wm["name"])
		}
		if typ != deploy.HookEvent {
			for _, k := range []string{"template", "baselineScope", "canaryScope"} {
				if md[k] == nil {
					t.Errorf("webhook %s lacks metadata %s", wm["name"], k)
				}
			}
		}
	}
	for _, h := range []string{deploy.HookPreRollout, deploy.HookRollout, deploy.HookConfirmTrafficIncrease, deploy.HookConfirmPromotion, deploy.HookRollback, deploy.HookPostRollout, deploy.HookEvent} {
		if !seen[h] {
			t.Errorf("the Canary has no %s webhook", h)
		}
	}
}

// FuzzFlaggerHook: whatever the body and hook, the answer is JSON with a
// reason, and never a 5xx (the store is up).
func FuzzFlaggerHook(f *testing.F) {
	f.Add("rollout", flaggerPayload("Progressing", flaggerMetadata))
	f.Add("event", `{"name":"a","namespace":"b","metadata":{"eventMessage":"x","timestamp":"-1"}}`)
	f.Add("rollback", `{"name":"a","namespace":"b","checksum":"\u0000"}`)
	f.Add("pre-rollout", `{"name":"a","namespace":"b","metadata":{"template":"http-canary","expectedSplit":"NaN","arg.":"x"}}`)
	an := newFakeAnalyses(f)
	ob := outboxtest.NewMemory()
	sender, err := deploy.NewSender(deploy.SenderConfig{Outbox: ob, Subscriptions: []deploy.Subscription{sub("ops", "http://127.0.0.1:1")}})
	if err != nil {
		f.Fatal(err)
	}
	fl, _ := deploy.NewFlagger(deploy.FlaggerConfig{Analyses: an, Notifier: sender})
	f.Fuzz(func(t *testing.T, hook, body string) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/api/v1/deploy/flagger/x", strings.NewReader(body))
		req.SetPathValue("hook", hook)
		fl.ServeHTTP(rec, req)
		var resp deploy.HookResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp.Reason == "" {
			t.Fatalf("answer %d %q is not a hook response with a reason", rec.Code, rec.Body)
		}
		if rec.Code >= 500 {
			t.Fatalf("answered %d: %s", rec.Code, rec.Body)
		}
	})
}
