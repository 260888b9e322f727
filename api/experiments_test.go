package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis"
)

func withExperiments(c *Config) {
	c.Experiments = c.Store.(*flakyStore).Store.(*redis.Store)
}

const expPath = "/api/v1/environments/prod/experiments"

// expBody is a valid experiment on testFlags' "rollout" flag (old, new).
func expBody(key string, change func(m map[string]any)) string {
	m := map[string]any{
		"key": key, "flagKey": "rollout", "hypothesis": "new converts better", "control": "old", "treatments": []string{"new"},
		"metrics": []map[string]any{
			{"key": "converted", "kind": "conversion", "event": "purchase", "role": "goal"},
			{"key": "revenue", "kind": "sum", "event": "purchase", "role": "guardrail", "cap": 500},
		},
	}
	if change != nil {
		change(m)
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// newExperimentHarness serves testFlags in prod and staging, with the
// rollout flag's own split removed (an experiment refuses a flag with
// targeting it did not write).
func newExperimentHarness(t *testing.T) *harness {
	h := newHarness(t, withExperiments)
	for _, env := range []string{"prod", "staging"} {
		h.createEnv(env, testFlags)
		_, err := h.svc.Update(context.Background(), env, "test.untarget", flags.WriteOptions{Actor: "test"}, func(d *flags.Document) error {
			d.Flags["rollout"].Targeting = nil
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func TestExperimentStartOnATargetedFlag(t *testing.T) {
	h := newExperimentHarness(t)
	body := expBody("banner", func(m map[string]any) {
		m["flagKey"], m["control"], m["treatments"] = "banner-color", "red", []string{"blue"}
	})
	if r := h.do(req{method: "POST", path: expPath, key: h.admin, body: body}); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	r := h.do(req{method: "POST", path: expPath + "/banner/start", key: h.admin})
	e := errorOf(t, r)
	if r.status != 409 || e.Code != codeConflict || len(e.Details) == 0 || e.Details[0].Field != "flagKey" || !strings.Contains(e.Message, "targeting") {
		t.Fatalf("start on a targeted flag: %d %+v", r.status, e)
	}
	if tg, _ := json.Marshal(flagOf(t, h, "banner-color")["targeting"]); !strings.Contains(string(tg), "@example.com") {
		t.Errorf("the flag's own targeting was changed: %s", tg)
	}
}

func TestExperimentErrorMapping(t *testing.T) {
	cases := []struct {
		name    string
		err     error
		ifMatch int64
		status  int
		field   string
	}{
		{"conflict with If-Match", fmt.Errorf("experiment %q is at version 3, not 2: %w", "k", experiments.ErrConflict), 2, 412, ""},
		{"concurrent write without If-Match", fmt.Errorf("storing: %w", experiments.ErrConflict), 0, 409, ""},
		{"unknown environment", fmt.Errorf("reading flags: %w", experiments.ErrUnknownEnvironment), 0, 404, "env"},
		{"unknown experiment", fmt.Errorf("experiment %q: %w", "environment ", experiments.ErrNotFound), 0, 404, "key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ae *apiError
			if !errors.As(experimentWriteError(tc.err, "prod", "k", experiments.WriteOptions{IfMatch: tc.ifMatch}), &ae) {
				t.Fatal("not an API error")
			}
			if ae.Status != tc.status {
				t.Errorf("status %d, want %d (%s)", ae.Status, tc.status, ae.Message)
			}
			if tc.field != "" && (len(ae.Details) == 0 || ae.Details[0].Field != tc.field) {
				t.Errorf("details %+v, want field %q", ae.Details, tc.field)
			}
		})
	}
}

func TestExperimentBadInput(t *testing.T) {
	h := newExperimentHarness(t)
	if r := h.do(req{method: "POST", path: expPath, key: h.admin, body: expBody("taken", nil)}); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	sdk := h.newKey(auth.RoleSDK, "sdk", "prod")
	cases := []struct {
		name, method, path, key, body string
		status                        int
		code, field                   string
	}{
		{"bad metric kind", "POST", expPath, "", expBody("a", func(m map[string]any) {
			m["metrics"] = []map[string]any{{"key": "m", "kind": "median", "event": "e", "role": "goal"}}
		}), 422, codeInvalidExperiment, "metrics[0].kind"},
		{"unknown flag", "POST", expPath, "", expBody("a", func(m map[string]any) { m["flagKey"] = "nope" }), 422, codeInvalidExperiment, "flagKey"},
		{"arm not a variant of the flag", "POST", expPath, "", expBody("a", func(m map[string]any) { m["treatments"] = []string{"blue"} }), 422, codeInvalidExperiment, "treatments[0]"},
		{"no goal metric", "POST", expPath, "", expBody("a", func(m map[string]any) {
			m["metrics"] = []map[string]any{{"key": "m", "kind": "count", "event": "e", "role": "secondary"}}
		}), 422, codeInvalidExperiment, "metrics"},
		{"bad key", "POST", expPath, "", expBody("-a b", nil), 422, codeInvalidExperiment, "key"},
		{"fractional weight", "POST", expPath, "", expBody("a", func(m map[string]any) { m["weights"] = []float64{1.5, 1} }), 400, codeInvalidRequest, "weights"},
		{"unknown field", "POST", expPath, "", expBody("a", func(m map[string]any) { m["colour"] = "red" }), 400, codeInvalidRequest, "colour"},
		{"malformed JSON", "POST", expPath, "", `{"key":`, 400, codeInvalidRequest, "body"},
		{"exists", "POST", expPath, "", expBody("taken", nil), 409, codeConflict, "key"},
		{"sdk key writes", "POST", expPath, sdk, expBody("a", nil), 403, codeForbidden, ""},
		{"unknown status filter", "GET", expPath + "?status=paused", "", "", 400, codeInvalidRequest, "status"},
		{"unknown environment", "POST", "/api/v1/environments/nope/experiments", "", expBody("a", nil), 404, codeNotFound, "env"},
		{"unknown experiment", "GET", expPath + "/nope", "", "", 404, codeNotFound, "key"},
		{"stop without decision", "POST", expPath + "/taken/stop", "", `{}`, 400, codeInvalidRequest, "decision"},
		{"stop with a bad action", "POST", expPath + "/taken/stop", "", `{"decision":{"action":"maybe"}}`, 400, codeInvalidRequest, "decision.action"},
		{"bad restart flag", "PUT", expPath + "/taken?restart=yes", "", expBody("taken", nil), 400, codeInvalidRequest, "restart"},
		{"key differs from the path", "PUT", expPath + "/taken", "", expBody("other", nil), 400, codeInvalidRequest, "key"},
		{"delete with a stale If-Match", "DELETE", expPath + "/taken", "", "", 412, codePreconditionFailed, ""},
		{"restart a draft", "POST", expPath + "/taken/restart", "", "", 409, codeConflict, "status"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := tc.key
			if key == "" {
				key = h.admin
			}
			r := req{method: tc.method, path: tc.path, key: key, body: tc.body}
			if tc.status == 412 {
				r.header = map[string]string{"If-Match": `"9"`}
			}
			res := h.do(r)
			if res.status != tc.status {
				t.Fatalf("status %d, want %d: %s", res.status, tc.status, res.body)
			}
			e := errorOf(t, res)
			if e.Code != tc.code {
				t.Errorf("code %q, want %q", e.Code, tc.code)
			}
			if tc.field != "" && (len(e.Details) == 0 || e.Details[0].Field != tc.field) {
				t.Errorf("details %+v, want field %q", e.Details, tc.field)
			}
		})
	}
}

func flagOf(t *testing.T, h *harness, key string) map[string]any {
	t.Helper()
	r := h.do(req{method: "GET", path: "/api/v1/environments/prod/flags/" + key, key: h.admin})
	if r.status != 200 {
		t.Fatalf("get flag: %d %s", r.status, r.body)
	}
	return r.json(t)
}

func TestExperimentLifecycle(t *testing.T) {
	h := newExperimentHarness(t)
	editor := h.newKey(auth.RoleEditor, "alice", "prod")
	do := func(method, path, body string, want int) map[string]any {
		t.Helper()
		r := h.do(req{method: method, path: path, key: editor, body: body})
		if r.status != want {
			t.Fatalf("%s %s: %d, want %d: %s", method, path, r.status, want, r.body)
		}
		if len(r.body) == 0 {
			return nil
		}
		return r.json(t)
	}
	created := do("POST", expPath, expBody("exp1", nil), 201)
	if created["status"] != "draft" || created["version"] != 1.0 || created["salt"] != "exp1" {
		t.Errorf("created = %v", created)
	}
	started := do("POST", expPath+"/exp1/start", "", 200)
	if started["status"] != "running" || started["startedAt"] == nil {
		t.Errorf("started = %v", started)
	}
	f := flagOf(t, h, "rollout")
	if md, _ := f["metadata"].(map[string]any); md["experiment"] != "exp1" {
		t.Errorf("flag metadata = %v, want experiment exp1", f["metadata"])
	}
	if tg, _ := json.Marshal(f["targeting"]); !strings.Contains(string(tg), `["exp1",":"`) || !strings.Contains(string(tg), "fractional") {
		t.Errorf("flag targeting = %s, want the experiment's split", tg)
	}
	audit := h.do(req{method: "GET", path: "/api/v1/environments/prod/audit", key: h.admin})
	if !strings.Contains(string(audit.body), `"actor":"experiment:exp1"`) || !strings.Contains(string(audit.body), `started by alice`) {
		t.Errorf("audit does not record the experiment's flag write: %s", audit.body)
	}
	// The served flag follows the experiment at once.
	ev := h.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags/rollout", key: h.newKey(auth.RoleSDK, "sdk", "prod"), body: `{"context":{"targetingKey":"user-1"}}`})
	if !strings.Contains(string(ev.body), `"experiment":"exp1"`) {
		t.Errorf("evaluation metadata: %s", ev.body)
	}

	// A second experiment on the same flag may not start.
	do("POST", expPath, expBody("exp2", nil), 201)
	r := h.do(req{method: "POST", path: expPath + "/exp2/start", key: editor})
	if e := errorOf(t, r); r.status != 409 || e.Details[0].Field != "flagKey" {
		t.Errorf("second start: %d %+v", r.status, e)
	}
	// Weights may not change while running without a restart.
	reweigh := expBody("exp1", func(m map[string]any) { m["weights"] = []int{3, 1} })
	r = h.do(req{method: "PUT", path: expPath + "/exp1", key: editor, body: reweigh})
	if e := errorOf(t, r); r.status != 409 || e.Code != codeConflict || e.Details[0].Field != "weights" {
		t.Errorf("reweigh: %d %+v", r.status, e)
	}
	restarted := do("PUT", expPath+"/exp1?restart=true", reweigh, 200)
	if restarted["restarts"] != 1.0 || restarted["salt"] != "exp1.r1" {
		t.Errorf("restarted = %v", restarted)
	}
	if tg, _ := json.Marshal(flagOf(t, h, "rollout")["targeting"]); !strings.Contains(string(tg), `["exp1.r1",":"`) || !strings.Contains(string(tg), `["old",3]`) {
		t.Errorf("targeting after restart = %s", tg)
	}
	// Running experiments cannot be deleted or archived.
	do("DELETE", expPath+"/exp1", "", 409)
	do("POST", expPath+"/exp1/archive", "", 409)
	// Stop with a decision that names no arm.
	r = h.do(req{method: "POST", path: expPath + "/exp1/stop", key: editor, body: `{"decision":{"action":"ship","variant":"blue"}}`})
	if e := errorOf(t, r); r.status != 422 || e.Details[0].Field != "decision.variant" {
		t.Errorf("ship blue: %d %+v", r.status, e)
	}
	r = h.do(req{method: "POST", path: expPath + "/exp1/stop", key: editor, body: `{"decision":{"action":"ship"}}`})
	if e := errorOf(t, r); r.status != 422 || e.Details[0].Field != "decision.variant" {
		t.Errorf("ship nothing: %d %+v", r.status, e)
	}
	stopped := do("POST", expPath+"/exp1/stop", `{"decision":{"action":"ship","variant":"new","reason":"it won"}}`, 200)
	if d, _ := stopped["decision"].(map[string]any); stopped["status"] != "stopped" || d["outcome"] != "ship" || d["variant"] != "new" {
		t.Errorf("stopped = %v", stopped)
	}
	f = flagOf(t, h, "rollout")
	if md, _ := f["metadata"].(map[string]any); f["defaultVariant"] != "new" || len(md) != 0 || !emptyJSON(f["targeting"]) {
		t.Errorf("flag after ship = %v", f)
	}
	// Now the second experiment can start, and roll back.
	do("POST", expPath+"/exp2/start", "", 200)
	do("POST", expPath+"/exp2/stop", `{"decision":{"action":"rollback"}}`, 200)
	if f = flagOf(t, h, "rollout"); f["defaultVariant"] != "old" {
		t.Errorf("flag after rollback = %v", f)
	}
	list := do("GET", expPath+"?status=stopped", "", 200)
	if xs, _ := list["experiments"].([]any); len(xs) != 2 {
		t.Errorf("stopped experiments = %v", list)
	}
	archived := do("POST", expPath+"/exp1/archive", "", 200)
	r = h.do(req{method: "DELETE", path: expPath + "/exp1", key: editor, header: map[string]string{"If-Match": fmt.Sprintf(`"%v"`, archived["version"])}})
	if r.status != 204 {
		t.Errorf("delete archived: %d %s", r.status, r.body)
	}
	do("GET", expPath+"/exp1", "", 404)
}

func TestExperimentResults(t *testing.T) {
	h := newExperimentHarness(t)
	if r := h.do(req{method: "POST", path: expPath, key: h.admin, body: expBody("exp1", nil)}); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	if r := h.do(req{method: "POST", path: expPath + "/exp1/start", key: h.admin}); r.status != 200 {
		t.Fatalf("start: %d %s", r.status, r.body)
	}
	st, err := h.raw.Experiment(context.Background(), "prod", "exp1")
	if err != nil {
		t.Fatal(err)
	}
	e := st.Experiment
	var events []experiments.Event
	at := time.Now().Add(time.Minute)
	for i := range 400 {
		u := fmt.Sprint("user-", i)
		a := e.Assign(u)
		events = append(events, experiments.Event{Name: experiments.ExposureEvent, TargetingKey: u, FlagKey: "rollout", Variant: a.Variant, Time: at})
		if i%3 == 0 {
			v := 10.0
			events = append(events, experiments.Event{Name: "purchase", TargetingKey: u, Value: &v, Time: at.Add(time.Second)})
		}
	}
	if err := h.raw.EventLog(0).Append(context.Background(), "prod", events); err != nil {
		t.Fatal(err)
	}
	c, err := h.raw.ExperimentConsumer(redis.ConsumerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		n, err := c.FoldOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	reader := h.newKey(auth.RoleSDK, "reader", "prod")
	r := h.do(req{method: "GET", path: expPath + "/exp1/results", key: reader})
	if r.status != 200 {
		t.Fatalf("results: %d %s", r.status, r.body)
	}
	var res struct {
		experiments.Results
		GeneratedAt time.Time `json:"generatedAt"`
	}
	if err := json.Unmarshal(r.body, &res); err != nil {
		t.Fatal(err)
	}
	if res.Experiment != "exp1" || res.Users != 400 || res.GeneratedAt.IsZero() || len(res.Metrics) != 2 {
		t.Errorf("results = %+v", res)
	}
	var conversions int64
	for _, a := range res.Metrics[0].Arms {
		conversions += a.Conversions
	}
	if conversions != 134 {
		t.Errorf("conversions = %d, want 134", conversions)
	}
	svg := h.do(req{method: "GET", path: expPath + "/exp1/results.svg", key: reader})
	if svg.status != 200 || svg.header.Get("Content-Type") != "image/svg+xml" || !strings.Contains(string(svg.body), "<svg") || !strings.Contains(string(svg.body), "converted") {
		t.Errorf("svg: %d %s %.200s", svg.status, svg.header.Get("Content-Type"), svg.body)
	}
	other := h.newKey(auth.RoleSDK, "other", "staging")
	if r := h.do(req{method: "GET", path: expPath + "/exp1/results", key: other}); r.status != http.StatusForbidden {
		t.Errorf("another environment's key: %d", r.status)
	}
}

func TestExperimentsNotConfigured(t *testing.T) {
	h := newHarness(t)
	h.createEnv("prod", testFlags)
	r := h.do(req{method: "GET", path: expPath, key: h.admin})
	if e := errorOf(t, r); r.status != 503 || e.Code != codeUnavailable {
		t.Errorf("without a store: %d %+v", r.status, e)
	}
}

func emptyJSON(v any) bool {
	m, ok := v.(map[string]any)
	return v == nil || ok && len(m) == 0
}
