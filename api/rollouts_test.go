package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/canarytest"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis"
)

// rolloutHarness is a server whose rollouts, analyses and flags share one
// embedded store.
type rolloutHarness struct {
	*harness
	rs *canary.RolloutService
}

const rolloutFlags = `{"flags":{
 "checkout":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","metadata":{"safeVariant":"off"}},
 "search":{"state":"ENABLED","variants":{"v1":"a","v2":"b"},"defaultVariant":"v1"},
 "styled":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"==":[{"var":"plan"},"pro"]},"on","off"]}}
}}`

func newRolloutHarness(t *testing.T) *rolloutHarness {
	t.Helper()
	raw, err := redis.OpenEmbedded(context.Background(), t.TempDir(), redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	rh := &rolloutHarness{}
	rh.harness = newHarnessOn(t, raw, func(c *Config) {
		rs, err := canary.NewRolloutService(canary.RolloutServiceConfig{Rollouts: raw, Analyses: raw, Flags: c.Flags, FlagReader: c.Store})
		if err != nil {
			t.Fatal(err)
		}
		c.Analyses, c.Rollouts, rh.rs = raw, rs, rs
	})
	tpl := canarytest.Template("http-errors", time.Minute, 3)
	tpl.Args = []canary.Arg{{Name: "flag"}, {Name: "service"}}
	if _, err := raw.PutTemplate(context.Background(), tpl, canary.TemplateWrite{At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	rh.createEnv("prod", rolloutFlags)
	rh.createEnv("stage", rolloutFlags)
	return rh
}

const startBody = `{"flag":"checkout","variant":"on","from":"off","reason":"ship it",
 "steps":[{"percent":1,"minDuration":"5m","analysis":{"template":"http-errors","values":{"service":"web"}}},
          {"percent":25,"minDuration":"10m"},{"percent":100}]}`

// flagJSON reads a flag through the API.
func (h *rolloutHarness) flagJSON(env, key string) map[string]any {
	h.t.Helper()
	r := h.do(req{method: "GET", path: "/api/v1/environments/" + env + "/flags/" + key, key: h.admin})
	if r.status != http.StatusOK {
		h.t.Fatalf("GET flag: %d %s", r.status, r.body)
	}
	return r.json(h.t)
}

func TestRolloutLifecycleHTTP(t *testing.T) {
	h := newRolloutHarness(t)
	r := h.do(req{method: "POST", path: "/api/v1/environments/prod/rollouts", key: h.admin, body: startBody})
	if r.status != http.StatusCreated {
		t.Fatalf("start: %d %s", r.status, r.body)
	}
	ro := r.json(t)
	id, _ := ro["id"].(string)
	if !strings.HasPrefix(id, "ro_") || ro["state"] != "running" || ro["step"] != 0.0 || ro["percent"] != 1.0 || ro["env"] != "prod" ||
		ro["onFail"] != "rollback" || r.header.Get("ETag") != `"`+jsonNum(ro["version"])+`"` || r.header.Get("Location") != "/api/v1/environments/prod/rollouts/"+id {
		t.Fatalf("started rollout %s (ETag %s, Location %s)", r.body, r.header.Get("ETag"), r.header.Get("Location"))
	}
	steps, _ := json.Marshal(ro["steps"])
	if string(steps) != `[{"analysis":{"template":"http-errors","values":{"service":"web"}},"minDuration":"5m","percent":1},{"minDuration":"10m","percent":25},{"percent":100}]` {
		t.Errorf("steps not as given: %s", steps)
	}
	f := h.flagJSON("prod", "checkout")
	if tg, _ := json.Marshal(f["targeting"]); string(tg) != `{"fractional":[["on",100],["off",9900]]}` || f["defaultVariant"] != "off" {
		t.Errorf("flag after start: %v", f)
	}
	// The audit shows the step, written as the rollout with its reason.
	a := h.do(req{method: "GET", path: "/api/v1/environments/prod/audit?flag=checkout", key: h.admin}).json(t)
	entries, _ := a["entries"].([]any)
	if e, _ := entries[0].(map[string]any); e["actor"] != "rollout:"+id || e["reason"] != "rollout "+id+" step 1/3: 1%" {
		t.Errorf("audit entry %v", entries[0])
	}

	// Reads: by ID (ETag, 304), listed with filters.
	g := h.do(req{method: "GET", path: "/api/v1/environments/prod/rollouts/" + id, key: h.admin})
	if g.status != http.StatusOK || g.json(t)["id"] != id {
		t.Fatalf("get: %d %s", g.status, g.body)
	}
	if nm := h.do(req{method: "GET", path: "/api/v1/environments/prod/rollouts/" + id, key: h.admin, header: map[string]string{"If-None-Match": g.header.Get("ETag")}}); nm.status != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", nm.status)
	}
	for _, c := range []struct {
		query string
		n     int
	}{{"", 1}, {"?flag=checkout&state=running", 1}, {"?state=active", 1}, {"?state=failed,aborted", 0}, {"?flag=search", 0}} {
		l := h.do(req{method: "GET", path: "/api/v1/environments/prod/rollouts" + c.query, key: h.admin})
		list, _ := l.json(t)["rollouts"].([]any)
		if l.status != http.StatusOK || len(list) != c.n {
			t.Errorf("list %s: %d, %d rollouts, want %d", c.query, l.status, len(list), c.n)
		}
	}
	if o := h.do(req{method: "GET", path: "/api/v1/environments/stage/rollouts/" + id, key: h.admin}); o.status != http.StatusNotFound {
		t.Errorf("a rollout through another environment: %d", o.status)
	}

	// Actions.
	act := func(action, body string) resp {
		return h.do(req{method: "POST", path: "/api/v1/environments/prod/rollouts/" + id + "/" + action, key: h.admin, body: body})
	}
	for i, c := range []struct {
		action, body string
		status       int
		state        string
	}{
		{"pause", `{"reason":"looking into it"}`, 200, "paused"},
		{"pause", "", 409, ""},
		{"retry", "", 200, "running"},
		{"pause", "", 200, "paused"},
		{"resume", "", 200, "running"},
		{"resume", "", 409, ""},
		{"promote", `{"reason":"all good"}`, 200, "succeeded"},
		{"abort", "", 409, ""},
	} {
		r := act(c.action, c.body)
		if r.status != c.status {
			t.Fatalf("%d %s: %d %s", i, c.action, r.status, r.body)
		}
		if c.status == 409 {
			e := errorOf(t, r)
			if e.Code != "conflict" || !strings.Contains(e.Message, "is ") || len(e.Details) == 0 || e.Details[0].Field != "state" {
				t.Errorf("%d %s: %+v", i, c.action, e)
			}
			continue
		}
		if got := r.json(t)["state"]; got != c.state {
			t.Errorf("%d %s: state %v, want %s", i, c.action, got, c.state)
		}
	}
	f = h.flagJSON("prod", "checkout")
	if tg, _ := json.Marshal(f["targeting"]); string(tg) != `{}` || f["defaultVariant"] != "on" {
		t.Errorf("flag after promote: %v", f)
	}
	final := h.do(req{method: "GET", path: "/api/v1/environments/prod/rollouts/" + id, key: h.admin}).json(t)
	var events []string
	for _, e := range final["history"].([]any) {
		events = append(events, e.(map[string]any)["event"].(string))
	}
	if got := strings.Join(events, " "); got != "created started paused retried paused resumed promoted succeeded" {
		t.Errorf("history %s", got)
	}
	// The flag is free for another rollout.
	if r := h.do(req{method: "POST", path: "/api/v1/environments/prod/rollouts", key: h.admin,
		body: `{"flag":"checkout","variant":"off","from":"on","steps":[{"percent":50,"minDuration":"1m"}],"startAt":"2099-01-01T00:00:00Z"}`}); r.status != http.StatusCreated || r.json(t)["state"] != "scheduled" {
		t.Errorf("scheduled rollout: %d %s", r.status, r.body)
	}
}

func jsonNum(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestRolloutRequestErrors(t *testing.T) {
	h := newRolloutHarness(t)
	sdk := h.newKey(auth.RoleSDK, "sdk", "prod")
	stageEditor := h.newKey(auth.RoleEditor, "stage-editor", "stage")
	if r := h.do(req{method: "POST", path: "/api/v1/environments/prod/rollouts", key: h.admin, body: startBody}); r.status != http.StatusCreated {
		t.Fatalf("start: %d %s", r.status, r.body)
	}
	tests := []struct {
		name, method, path, key, body string
		status                        int
		field                         string
	}{
		{"unknown environment", "POST", "/api/v1/environments/nope/rollouts", "", startBody, 404, "env"},
		{"missing flag", "POST", "/api/v1/environments/stage/rollouts", "", `{"variant":"on","from":"off","steps":[{"percent":100}]}`, 400, "flag"},
		{"unknown flag", "POST", "/api/v1/environments/stage/rollouts", "", `{"flag":"nope","variant":"on","from":"off","steps":[{"percent":100}]}`, 400, "flag"},
		{"unknown variant", "POST", "/api/v1/environments/stage/rollouts", "", `{"flag":"checkout","variant":"blue","from":"off","steps":[{"percent":100}]}`, 422, "variant"},
		{"unknown from", "POST", "/api/v1/environments/stage/rollouts", "", `{"flag":"search","variant":"v2","from":"v9","steps":[{"percent":100}]}`, 422, "from"},
		{"bad percent", "POST", "/api/v1/environments/stage/rollouts", "", `{"flag":"checkout","variant":"on","from":"off","steps":[{"percent":1.001,"minDuration":"1m"}]}`, 422, "steps[0].percent"},
		{"decreasing", "POST", "/api/v1/environments/stage/rollouts", "", `{"flag":"checkout","variant":"on","from":"off","steps":[{"percent":10,"minDuration":"1m"},{"percent":5,"minDuration":"1m"}]}`, 422, "steps[1].percent"},
		{"no gate", "POST", "/api/v1/environments/stage/rollouts", "", `{"flag":"checkout","variant":"on","from":"off","steps":[{"percent":10},{"percent":100}]}`, 422, "steps[0]"},
		{"bad duration", "POST", "/api/v1/environments/stage/rollouts", "", `{"flag":"checkout","variant":"on","from":"off","steps":[{"percent":10,"minDuration":"soon"}]}`, 422, "steps[0].minDuration"},
		{"unknown template", "POST", "/api/v1/environments/stage/rollouts", "", `{"flag":"checkout","variant":"on","from":"off","steps":[{"percent":10,"analysis":{"template":"nope"}}]}`, 422, "steps[0].analysis.template"},
		{"missing value", "POST", "/api/v1/environments/stage/rollouts", "", `{"flag":"checkout","variant":"on","from":"off","steps":[{"percent":10,"analysis":{"template":"http-errors"}}]}`, 422, "steps[0].analysis.values.service"},
		{"bad onFail", "POST", "/api/v1/environments/stage/rollouts", "", `{"flag":"checkout","variant":"on","from":"off","onFail":"panic","steps":[{"percent":100}]}`, 422, "onFail"},
		{"wrong type", "POST", "/api/v1/environments/stage/rollouts", "", `{"flag":"checkout","variant":"on","from":"off","steps":[{"percent":"ten"}]}`, 400, "steps.percent"},
		{"unknown member", "POST", "/api/v1/environments/stage/rollouts", "", `{"flag":"checkout","variant":"on","from":"off","steps":[{"percent":100}],"speed":"fast"}`, 400, "speed"},
		{"bad startAt", "POST", "/api/v1/environments/stage/rollouts", "", `{"flag":"checkout","variant":"on","from":"off","steps":[{"percent":100}],"startAt":"tomorrow"}`, 400, "startAt"},
		{"own targeting", "POST", "/api/v1/environments/stage/rollouts", "", `{"flag":"styled","variant":"on","from":"off","steps":[{"percent":100}]}`, 409, "flag.targeting"},
		{"already active", "POST", "/api/v1/environments/prod/rollouts", "", startBody, 409, "flag"},
		{"sdk key", "POST", "/api/v1/environments/prod/rollouts", sdk, startBody, 403, ""},
		{"editor of another environment", "GET", "/api/v1/environments/prod/rollouts", stageEditor, "", 403, ""},
		{"bad state filter", "GET", "/api/v1/environments/prod/rollouts?state=sleeping", "", "", 400, "state"},
		{"bad limit", "GET", "/api/v1/environments/prod/rollouts?limit=0", "", "", 400, "limit"},
		{"unknown rollout", "GET", "/api/v1/environments/prod/rollouts/ro_nope", "", "", 404, "id"},
		{"malformed id", "POST", "/api/v1/environments/prod/rollouts/x!/pause", "", "", 404, "id"},
		{"unknown action", "POST", "/api/v1/environments/prod/rollouts/ro_nope/explode", "", "", 404, "action"},
		{"kill: unknown flag", "POST", "/api/v1/flags/nope/kill", "", `{}`, 404, "key"},
		{"kill: no safe variant", "POST", "/api/v1/flags/search/kill", "", `{"reason":"incident"}`, 400, "variant"},
		{"kill: sdk key", "POST", "/api/v1/flags/checkout/kill", sdk, `{}`, 403, ""},
		{"kill: long reason", "POST", "/api/v1/flags/checkout/kill", "", `{"reason":"` + strings.Repeat("x", 1025) + `"}`, 400, "reason"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := tc.key
			if key == "" {
				key = h.admin
			}
			r := h.do(req{method: tc.method, path: tc.path, key: key, body: tc.body})
			if r.status != tc.status {
				t.Fatalf("%d %s, want %d", r.status, r.body, tc.status)
			}
			e := errorOf(t, r)
			if tc.field == "" {
				return
			}
			var fields []string
			for _, d := range e.Details {
				fields = append(fields, d.Field)
			}
			if !slices.Contains(fields, tc.field) {
				t.Errorf("details %v do not name %s (%s)", fields, tc.field, e.Message)
			}
		})
	}
}

func TestKillSwitchHTTP(t *testing.T) {
	h := newRolloutHarness(t)
	r := h.do(req{method: "POST", path: "/api/v1/environments/prod/rollouts", key: h.admin, body: startBody})
	id, _ := r.json(t)["id"].(string)
	prodEditor := h.newKey(auth.RoleEditor, "prod-editor", "prod")
	k := h.do(req{method: "POST", path: "/api/v1/flags/checkout/kill", key: prodEditor, body: `{"reason":"incident 7"}`})
	if k.status != http.StatusOK {
		t.Fatalf("kill: %d %s", k.status, k.body)
	}
	var out struct {
		Flag         string `json:"flag"`
		Environments []struct {
			Name            string   `json:"name"`
			Variant         string   `json:"variant"`
			Version         int64    `json:"version"`
			AbortedRollouts []string `json:"abortedRollouts"`
			Error           string   `json:"error"`
		} `json:"environments"`
	}
	if err := json.Unmarshal(k.body, &out); err != nil {
		t.Fatal(err)
	}
	if out.Flag != "checkout" || len(out.Environments) != 1 || out.Environments[0].Name != "prod" || out.Environments[0].Variant != "off" ||
		out.Environments[0].Version < 3 || !slices.Equal(out.Environments[0].AbortedRollouts, []string{id}) || out.Environments[0].Error != "" {
		t.Fatalf("kill by prod's editor: %s", k.body)
	}
	if f := h.flagJSON("prod", "checkout"); f["defaultVariant"] != "off" || jsonNum(f["targeting"]) != "{}" {
		t.Errorf("prod after kill: %v", f)
	}
	ro := h.do(req{method: "GET", path: "/api/v1/environments/prod/rollouts/" + id, key: h.admin}).json(t)
	if ro["state"] != "aborted" || !strings.Contains(ro["reason"].(string), "incident 7") {
		t.Errorf("killed rollout: %v %v", ro["state"], ro["reason"])
	}
	// An admin turns it on everywhere; a variant some environment lacks is reported there.
	h.svc.PatchFlag(context.Background(), "stage", "checkout", flags.FlagPatch{Variants: map[string]any{"off": false}, DefaultVariant: json.RawMessage(`"off"`)}, flags.WriteOptions{Actor: "test"})
	k = h.do(req{method: "POST", path: "/api/v1/flags/checkout/kill", key: h.admin, body: `{"variant":"on"}`})
	if err := json.Unmarshal(k.body, &out); err != nil || k.status != http.StatusOK || len(out.Environments) != 2 {
		t.Fatalf("kill by admin: %d %s", k.status, k.body)
	}
	for _, e := range out.Environments {
		switch e.Name {
		case "prod":
			if e.Error != "" || e.Variant != "on" {
				t.Errorf("prod: %+v", e)
			}
		case "stage":
			if !strings.Contains(e.Error, `no variant "on"`) {
				t.Errorf("stage: %+v", e)
			}
		}
	}
	if f := h.flagJSON("stage", "checkout"); f["defaultVariant"] != "off" {
		t.Errorf("stage changed: %v", f)
	}
}

func TestRolloutsNotConfigured(t *testing.T) {
	h := newHarness(t)
	h.createEnv("prod", rolloutFlags)
	for _, p := range []string{"/api/v1/environments/prod/rollouts", "/api/v1/flags/checkout/kill"} {
		if r := h.do(req{method: "POST", path: p, key: h.admin, body: `{}`}); r.status != http.StatusServiceUnavailable {
			t.Errorf("%s: %d %s", p, r.status, r.body)
		}
	}
}

// TestRolloutOptionalBodies: a rollout action's and the kill switch's
// optional body is read however it is sent: an empty chunked body is no
// body, a chunked reason is recorded, and a body that is not JSON is
// refused (415) rather than silently dropped with its reason.
func TestRolloutOptionalBodies(t *testing.T) {
	h := newRolloutHarness(t)
	for _, tc := range []struct {
		name        string
		path        string // "" is the rollout's pause
		body        string
		chunked     bool
		contentType string
		status      int
		reason      string
	}{
		{name: "empty chunked JSON body", chunked: true, contentType: "application/json", status: 200},
		{name: "chunked reason", body: `{"reason":"looking"}`, chunked: true, contentType: "application/json", status: 200, reason: "looking"},
		{name: "reason without a content type", body: `{"reason":"looking"}`, status: http.StatusUnsupportedMediaType},
		{name: "kill with an empty chunked JSON body", path: "/api/v1/flags/checkout/kill", chunked: true, contentType: "application/json", status: 200},
		{name: "kill reason without a content type", path: "/api/v1/flags/checkout/kill", body: `{"variant":"off"}`, status: http.StatusUnsupportedMediaType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path
			if path == "" {
				r := h.do(req{method: "POST", path: "/api/v1/environments/prod/rollouts", key: h.admin, body: startBody})
				id, _ := r.json(t)["id"].(string)
				t.Cleanup(func() {
					h.do(req{method: "POST", path: "/api/v1/environments/prod/rollouts/" + id + "/abort", key: h.admin})
				})
				path = "/api/v1/environments/prod/rollouts/" + id + "/pause"
			}
			hr, err := http.NewRequest("POST", h.ts.URL+path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.chunked {
				hr.ContentLength, hr.TransferEncoding = -1, []string{"chunked"}
				hr.Body = io.NopCloser(strings.NewReader(tc.body))
			}
			if tc.contentType != "" {
				hr.Header.Set("Content-Type", tc.contentType)
			}
			hr.Header.Set("Authorization", "Bearer "+h.admin)
			res, err := http.DefaultClient.Do(hr)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.status {
				t.Fatalf("%d %s, want %d", res.StatusCode, body, tc.status)
			}
			if tc.path == "" && tc.status == 200 {
				var ro canary.StoredRollout
				if err := json.Unmarshal(body, &ro); err != nil {
					t.Fatal(err)
				}
				if last := ro.History[len(ro.History)-1]; last.Event != canary.EventPaused || last.Reason != tc.reason {
					t.Errorf("last event %s %q, want paused %q", last.Event, last.Reason, tc.reason)
				}
			}
		})
	}
}
