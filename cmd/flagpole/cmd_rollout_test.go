package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
)

// The rollout commands against a fake server implementing the HTTP
// contract of /api/v1/environments/{env}/rollouts and the kill switch
// (docs/rollouts.md): each case checks the exact requests the CLI sent and
// what it printed.

const fakeToken = "fp_editor_fake-0123456789"

// fakeStep and fakeRollout are the contract's JSON, written independently
// of the CLI's types so that a mistyped field name on either side shows.
type fakeStep struct {
	Percent     float64 `json:"percent"`
	MinDuration string  `json:"minDuration,omitempty"`
	Analysis    *struct {
		Template string            `json:"template"`
		Values   map[string]string `json:"values,omitempty"`
	} `json:"analysis,omitempty"`
}

type fakeEvent struct {
	Time    time.Time `json:"time"`
	Event   string    `json:"event"`
	Step    int       `json:"step"`
	Percent float64   `json:"percent"`
	Actor   string    `json:"actor"`
	Reason  string    `json:"reason,omitempty"`
}

type fakeRollout struct {
	ID            string          `json:"id"`
	Env           string          `json:"env"`
	Flag          string          `json:"flag"`
	Variant       string          `json:"variant"`
	From          string          `json:"from"`
	Steps         []fakeStep      `json:"steps"`
	OnFail        string          `json:"onFail"`
	State         string          `json:"state"`
	Step          int             `json:"step"`
	Percent       float64         `json:"percent"`
	StepStartedAt time.Time       `json:"stepStartedAt"`
	StartAt       *time.Time      `json:"startAt,omitempty"`
	AnalysisID    string          `json:"analysisId,omitempty"`
	Verdict       string          `json:"verdict,omitempty"`
	Reason        string          `json:"reason,omitempty"`
	Evidence      json.RawMessage `json:"evidence,omitempty"`
	History       []fakeEvent     `json:"history"`
	Version       int64           `json:"version"`
	CreatedAt     time.Time       `json:"createdAt"`
	UpdatedAt     time.Time       `json:"updatedAt"`
	EndedAt       *time.Time      `json:"endedAt,omitempty"`
	Holding       bool            `json:"holding,omitempty"`
	PausedOnFail  bool            `json:"pausedOnFail,omitempty"`
}

// fakeRollouts is the fake server's state and the requests it received.
type fakeRollouts struct {
	mu       sync.Mutex
	rollouts []*fakeRollout // oldest first
	reqs     []string       // "METHOD /path?query body"
	// script, when set for a rollout, replaces it on each GET with the next
	// state (the last one repeats), to drive watch.
	script map[string][]fakeRollout
	// failGets answers that many GETs of a rollout with 503 first.
	failGets int
	// kill answers POST /api/v1/flags/{key}/kill.
	kill func(key string, body map[string]string) (int, any)
}

var fakeT0 = time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)

func apiErr(w http.ResponseWriter, status int, code, msg string, details ...[2]string) {
	var ds []map[string]string
	for _, d := range details {
		ds = append(ds, map[string]string{"field": d[0], "problem": d[1]})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": msg, "details": ds}})
}

func fakeReply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeRollouts) find(env, id string) *fakeRollout {
	for _, r := range f.rollouts {
		if r.ID == id && r.Env == env {
			return r
		}
	}
	return nil
}

func fakeActive(state string) bool {
	return state == "scheduled" || state == "running" || state == "paused"
}

func (f *fakeRollouts) handler(t *testing.T) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/environments/{env}/rollouts", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Flag, Variant, From, OnFail, StartAt, Reason string
			Steps                                        []fakeStep
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			apiErr(w, 400, "invalid", "the body is not a rollout")
			return
		}
		if in.Flag == "bad" {
			apiErr(w, 400, "invalid", "the rollout is invalid", [2]string{"steps[1].percent", "must be more than the step before"})
			return
		}
		for _, x := range f.rollouts {
			if x.Flag == in.Flag && fakeActive(x.State) {
				apiErr(w, 409, "conflict", fmt.Sprintf("flag %s already has a %s rollout (%s)", in.Flag, x.State, x.ID))
				return
			}
		}
		ro := &fakeRollout{
			ID: fmt.Sprintf("ro_%d", len(f.rollouts)+1), Env: r.PathValue("env"), Flag: in.Flag, Variant: in.Variant, From: in.From,
			Steps: in.Steps, OnFail: in.OnFail, State: "running", Percent: in.Steps[0].Percent, StepStartedAt: fakeT0,
			History: []fakeEvent{{Time: fakeT0, Event: "started", Percent: in.Steps[0].Percent, Actor: "ci", Reason: in.Reason}},
			Version: 1, CreatedAt: fakeT0, UpdatedAt: fakeT0,
		}
		if in.StartAt != "" {
			at, _ := time.Parse(time.RFC3339, in.StartAt)
			ro.StartAt, ro.State, ro.Percent, ro.History = &at, "scheduled", 0, nil
		}
		f.rollouts = append(f.rollouts, ro)
		fakeReply(w, 201, ro)
	})
	mux.HandleFunc("GET /api/v1/environments/{env}/rollouts", func(w http.ResponseWriter, r *http.Request) {
		out := []*fakeRollout{}
		for _, x := range slices.Backward(f.rollouts) {
			if x.Env != r.PathValue("env") {
				continue
			}
			if q := r.URL.Query().Get("flag"); q != "" && x.Flag != q {
				continue
			}
			if q := r.URL.Query().Get("state"); q != "" && x.State != q {
				continue
			}
			out = append(out, x)
		}
		fakeReply(w, 200, map[string]any{"rollouts": out})
	})
	mux.HandleFunc("GET /api/v1/environments/{env}/rollouts/{id}", func(w http.ResponseWriter, r *http.Request) {
		ro := f.find(r.PathValue("env"), r.PathValue("id"))
		if ro == nil {
			apiErr(w, 404, "not_found", "rollout "+r.PathValue("id")+" not found")
			return
		}
		if f.failGets > 0 {
			f.failGets--
			apiErr(w, 503, "unavailable", "the store is unavailable")
			return
		}
		if s := f.script[ro.ID]; len(s) > 0 {
			*ro = s[0]
			if len(s) > 1 {
				f.script[ro.ID] = s[1:]
			}
		}
		w.Header().Set("ETag", fmt.Sprintf(`"%d"`, ro.Version))
		fakeReply(w, 200, ro)
	})
	mux.HandleFunc("POST /api/v1/environments/{env}/rollouts/{id}/{action}", func(w http.ResponseWriter, r *http.Request) {
		ro := f.find(r.PathValue("env"), r.PathValue("id"))
		if ro == nil {
			apiErr(w, 404, "not_found", "rollout "+r.PathValue("id")+" not found")
			return
		}
		var in struct{ Reason string }
		_ = json.NewDecoder(r.Body).Decode(&in)
		action := r.PathValue("action")
		allowed := map[string][]string{
			"pause": {"scheduled", "running"}, "resume": {"paused"}, "promote": {"scheduled", "running", "paused"},
			"abort": {"scheduled", "running", "paused"}, "retry": {"failed", "paused"},
		}[action]
		if !slices.Contains(allowed, ro.State) {
			apiErr(w, 409, "conflict", fmt.Sprintf("rollout %s is %s: %s is not allowed", ro.ID, ro.State, action))
			return
		}
		switch action {
		case "pause":
			ro.State = "paused"
		case "resume", "retry":
			ro.State = "running"
		case "promote":
			ro.State, ro.Step, ro.Percent = "succeeded", len(ro.Steps)-1, 100
		case "abort":
			ro.State, ro.Percent = "aborted", 0
		}
		ro.Version++
		ro.History = append(ro.History, fakeEvent{Time: fakeT0.Add(time.Minute), Event: action, Step: ro.Step, Percent: ro.Percent, Actor: "ci", Reason: in.Reason})
		fakeReply(w, 200, ro)
	})
	mux.HandleFunc("POST /api/v1/flags/{key}/kill", func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		_ = json.NewDecoder(r.Body).Decode(&in)
		status, v := f.kill(r.PathValue("key"), in)
		if e, ok := v.(error); ok {
			apiErr(w, status, "invalid", e.Error(), [2]string{"variant", "no safe variant: give one"})
			return
		}
		fakeReply(w, status, v)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		defer f.mu.Unlock()
		line := r.Method + " " + r.URL.Path
		if r.URL.RawQuery != "" {
			line += "?" + r.URL.RawQuery
		}
		if len(body) > 0 {
			if r.Header.Get("Content-Type") != "application/json" {
				t.Errorf("%s sent with Content-Type %q", line, r.Header.Get("Content-Type"))
			}
			line += " " + canonicalJSON(t, body)
		}
		f.reqs = append(f.reqs, line)
		if r.Header.Get("Authorization") != "Bearer "+fakeToken {
			apiErr(w, 401, "unauthorized", "")
			return
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		mux.ServeHTTP(w, r)
	})
}

// canonicalJSON re-encodes a JSON body with sorted keys.
func canonicalJSON(t *testing.T, b []byte) string {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Errorf("request body is not JSON: %v: %s", err, b)
		return string(b)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

func (f *fakeRollouts) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

// seeded is a fake holding three rollouts in prod: ro_1 of checkout
// succeeded, ro_2 of checkout running at step 2 with a gate, ro_3 of
// search failed with evidence.
func seeded() *fakeRollouts {
	gate := &struct {
		Template string            `json:"template"`
		Values   map[string]string `json:"values,omitempty"`
	}{Template: "http-errors", Values: map[string]string{"service": "checkout"}}
	steps := []fakeStep{{Percent: 1, MinDuration: "5m0s", Analysis: gate}, {Percent: 25, MinDuration: "10m0s", Analysis: gate}, {Percent: 100}}
	ended := fakeT0.Add(time.Hour)
	return &fakeRollouts{rollouts: []*fakeRollout{
		{ID: "ro_1", Env: "prod", Flag: "checkout", Variant: "v2", From: "v1", Steps: steps, OnFail: "rollback", State: "succeeded",
			Step: 2, Percent: 100, Version: 9, CreatedAt: fakeT0.Add(-2 * time.Hour), UpdatedAt: fakeT0.Add(-time.Hour), EndedAt: &ended},
		{ID: "ro_2", Env: "prod", Flag: "checkout", Variant: "on", From: "off", Steps: steps, OnFail: "rollback", State: "running",
			Step: 1, Percent: 25, StepStartedAt: fakeT0.Add(-90 * time.Second), AnalysisID: "http-errors-ab12", Verdict: "pass",
			History: []fakeEvent{
				{Time: fakeT0.Add(-10 * time.Minute), Event: "started", Step: 0, Percent: 1, Actor: "ci"},
				{Time: fakeT0.Add(-90 * time.Second), Event: "step", Step: 1, Percent: 25, Actor: "system:rollout", Reason: "analysis passed"},
			},
			Version: 4, CreatedAt: fakeT0.Add(-10 * time.Minute), UpdatedAt: fakeT0.Add(-90 * time.Second)},
		{ID: "ro_3", Env: "prod", Flag: "search", Variant: "new", From: "old", Steps: steps, OnFail: "rollback", State: "failed",
			Step: 0, Percent: 0, Verdict: "fail", Reason: "analysis http-errors-cd34 failed",
			Evidence: json.RawMessage(`{"verdict":"fail","reason":"error-rate: canary 31% vs baseline 2%","metrics":[{"metric":"error-rate","verdict":"fail","reason":"canary 31% vs baseline 2%"},{"metric":"latency","verdict":"pass","reason":"ok"}]}`),
			Version:  3, CreatedAt: fakeT0.Add(-5 * time.Minute), UpdatedAt: fakeT0, EndedAt: &ended},
	}}
}

// startFake serves f and returns the CLI environment pointing at it.
func startFake(t *testing.T, f *fakeRollouts) map[string]string {
	t.Helper()
	srv := httptest.NewServer(f.handler(t))
	t.Cleanup(srv.Close)
	return map[string]string{envURL: srv.URL, envToken: fakeToken, envEnv: "prod"}
}

func TestRolloutCommands(t *testing.T) {
	dir := t.TempDir()
	yamlFile := writeTemp(t, dir, "rollout.yaml", `flag: new-checkout
variant: "on"
from: "off"
steps:
  - {percent: 10, minDuration: 1m}
  - {percent: 100}
onFail: pause
`)
	notObject := writeTemp(t, dir, "list.json", `[1,2]`)
	const startBody = `{"flag":"new-checkout","from":"off","onFail":"rollback","reason":"launch",` +
		`"steps":[{"analysis":{"template":"http-errors","values":{"service":"checkout"}},"minDuration":"10m0s","percent":1},` +
		`{"analysis":{"template":"http-errors","values":{"service":"checkout"}},"minDuration":"10m0s","percent":5},{"percent":100}],"variant":"on"}`
	tests := []struct {
		name   string
		fake   func() *fakeRollouts
		args   []string
		code   int
		reqs   []string // exactly the requests sent
		stdout []string
		stderr []string
	}{
		{
			name: "start from options",
			args: []string{"rollout", "start", "--flag", "new-checkout", "--variant", "on", "--from", "off", "--steps", "1,5,100",
				"--step-duration", "10m", "--template", "http-errors", "--values", "service=checkout", "--reason", "launch"},
			reqs:   []string{"POST /api/v1/environments/prod/rollouts " + startBody},
			stdout: []string{"rollout ro_1 started in prod: new-checkout off → on, [1%] → 5% → 100% (on fail: rollback)", "flagpole rollout watch ro_1 --env prod"},
		},
		{
			name: "start with per-step durations, pause on fail, scheduled",
			args: []string{"rollout", "start", "-e", "staging", "--flag", "f", "--variant", "b", "--from", "a", "--steps", "0.5:90s, 50%:1h,99.99:1m",
				"--on-fail", "pause", "--start-at", "2030-01-02T03:04:05+01:00"},
			reqs: []string{`POST /api/v1/environments/staging/rollouts {"flag":"f","from":"a","onFail":"pause","startAt":"2030-01-02T02:04:05Z",` +
				`"steps":[{"minDuration":"1m30s","percent":0.5},{"minDuration":"1h0m0s","percent":50},{"minDuration":"1m0s","percent":99.99}],"variant":"b"}`},
			stdout: []string{"rollout ro_1 scheduled for 2030-01-02 02:04:05Z in staging: f a → b, 0.5% → 50% → 99.99% (on fail: pause)"},
		},
		{
			name:   "start from a YAML file adds the reason",
			args:   []string{"rollout", "start", "-f", yamlFile, "--reason", "from git"},
			reqs:   []string{`POST /api/v1/environments/prod/rollouts {"flag":"new-checkout","from":"off","onFail":"pause","reason":"from git","steps":[{"minDuration":"1m","percent":10},{"percent":100}],"variant":"on"}`},
			stdout: []string{"rollout ro_1 started in prod: new-checkout off → on, [10%] → 100% (on fail: pause)"},
		},
		{
			name:   "start -o json prints the rollout",
			args:   []string{"rollout", "start", "-o", "json", "--flag", "f", "--variant", "on", "--from", "off", "--steps", "50,100", "--step-duration", "1m"},
			reqs:   []string{`POST /api/v1/environments/prod/rollouts {"flag":"f","from":"off","onFail":"rollback","steps":[{"minDuration":"1m0s","percent":50},{"percent":100}],"variant":"on"}`},
			stdout: []string{`"id": "ro_1"`, `"state": "running"`},
		},
		{
			name:   "start refused: the flag has an active rollout",
			fake:   seeded,
			args:   []string{"rollout", "start", "--flag", "checkout", "--variant", "on", "--from", "off", "--steps", "50,100", "--step-duration", "1m"},
			code:   1,
			reqs:   []string{`POST /api/v1/environments/prod/rollouts {"flag":"checkout","from":"off","onFail":"rollback","steps":[{"minDuration":"1m0s","percent":50},{"percent":100}],"variant":"on"}`},
			stderr: []string{"flagpole: flag checkout already has a running rollout (ro_2) (HTTP 409 conflict)"},
		},
		{
			name:   "start refused: the server names the field",
			args:   []string{"rollout", "start", "--flag", "bad", "--variant", "on", "--from", "off", "--steps", "50,100", "--step-duration", "1m"},
			code:   1,
			reqs:   []string{`POST /api/v1/environments/prod/rollouts {"flag":"bad","from":"off","onFail":"rollback","steps":[{"minDuration":"1m0s","percent":50},{"percent":100}],"variant":"on"}`},
			stderr: []string{"the rollout is invalid (HTTP 400 invalid)", "steps[1].percent: must be more than the step before"},
		},
		{name: "start without --flag", args: []string{"rollout", "start", "--variant", "on", "--from", "off", "--steps", "1,100", "--step-duration", "1m"}, code: 1,
			stderr: []string{"--flag: required", "Run 'flagpole rollout start --help'"}},
		{name: "start without --from", args: []string{"rollout", "start", "--flag", "f", "--variant", "on", "--steps", "1,100"}, code: 1, stderr: []string{"--from: required"}},
		{name: "start same variants", args: []string{"rollout", "start", "--flag", "f", "--variant", "on", "--from", "on", "--steps", "1,100"}, code: 1, stderr: []string{`--variant and --from are both "on"`}},
		{name: "start decreasing steps", args: []string{"rollout", "start", "--flag", "f", "--variant", "on", "--from", "off", "--steps", "5,1,100", "--step-duration", "1m"}, code: 1,
			stderr: []string{`--steps "5,1,100": step 2: 1% must be more than the step before (5%)`}},
		{name: "start three decimals", args: []string{"rollout", "start", "--flag", "f", "--variant", "on", "--from", "off", "--steps", "0.125,100", "--step-duration", "1m"}, code: 1,
			stderr: []string{"step 1: 0.125% has more than two decimals"}},
		{name: "start above 100", args: []string{"rollout", "start", "--flag", "f", "--variant", "on", "--from", "off", "--steps", "50,101", "--step-duration", "1m"}, code: 1,
			stderr: []string{"step 2: 101% must be more than 0 and at most 100"}},
		{name: "start step not a number", args: []string{"rollout", "start", "--flag", "f", "--variant", "on", "--from", "off", "--steps", "1,half", "--step-duration", "1m"}, code: 1,
			stderr: []string{`step 2: "half" is not a percentage`}},
		{name: "start step without a gate", args: []string{"rollout", "start", "--flag", "f", "--variant", "on", "--from", "off", "--steps", "1,50,100"}, code: 1,
			stderr: []string{"step 1 (1%) needs a minimum duration or an analysis gate"}},
		{name: "start bad step duration", args: []string{"rollout", "start", "--flag", "f", "--variant", "on", "--from", "off", "--steps", "1:soon,100"}, code: 1,
			stderr: []string{`step 1: "soon" is not a positive duration`}},
		{name: "start bad on-fail", args: []string{"rollout", "start", "--flag", "f", "--variant", "on", "--from", "off", "--steps", "1,100", "--step-duration", "1m", "--on-fail", "retry"}, code: 1,
			stderr: []string{`--on-fail "retry": must be rollback or pause`}},
		{name: "start values without template", args: []string{"rollout", "start", "--flag", "f", "--variant", "on", "--from", "off", "--steps", "1,100", "--step-duration", "1m", "--values", "a=b"}, code: 1,
			stderr: []string{"--values: fill a template's arguments; give --template too"}},
		{name: "start bad values", args: []string{"rollout", "start", "--flag", "f", "--variant", "on", "--from", "off", "--steps", "1,100", "-t", "x", "--values", "novalue"}, code: 1,
			stderr: []string{`--values "novalue": must be NAME=VALUE`}},
		{name: "start bad start-at", args: []string{"rollout", "start", "--flag", "f", "--variant", "on", "--from", "off", "--steps", "1,100", "-t", "x", "--start-at", "tomorrow"}, code: 1,
			stderr: []string{`--start-at "tomorrow": must be an RFC 3339 time`}},
		{name: "start file with options", args: []string{"rollout", "start", "-f", yamlFile, "--flag", "x", "--steps", "1,100"}, code: 1,
			stderr: []string{"--file gives the whole rollout; it cannot be combined with --flag, --steps"}},
		{name: "start file not an object", args: []string{"rollout", "start", "-f", notObject}, code: 1, stderr: []string{"list.json: a rollout must be a JSON or YAML object"}},
		{name: "start bad watch option", args: []string{"rollout", "start", "--watch", "--every", "0s", "--flag", "f", "--variant", "on", "--from", "off", "--steps", "1,100", "-t", "x"}, code: 1,
			stderr: []string{"--every 0s: must be positive"}},
		{
			name: "status shows progress, gate, steps and history",
			fake: seeded,
			args: []string{"rollout", "status", "ro_2"},
			reqs: []string{"GET /api/v1/environments/prod/rollouts/ro_2"},
			stdout: []string{
				"flag: checkout in prod", "variant: on replacing off", "state: running",
				"progress: [#####...............] 25% (step 2 of 3)",
				"gate: analysis http-errors-ab12: pass", "on fail: rollback",
				"STEP PERCENT MIN DURATION ANALYSIS",
				"  1 1% 5m http-errors (service=checkout)", "> 2 25% 10m http-errors (service=checkout)", "  3 100% - -",
				"2025-06-01 09:58:30Z step 2 25% system:rollout analysis passed",
			},
		},
		{
			name:   "status of a failed rollout shows the evidence",
			fake:   seeded,
			args:   []string{"rollout", "status", "--flag", "search"},
			reqs:   []string{"GET /api/v1/environments/prod/rollouts?flag=search", "GET /api/v1/environments/prod/rollouts/ro_3"},
			stdout: []string{"state: failed", "reason: analysis http-errors-cd34 failed", "evidence: error-rate: canary 31% vs baseline 2%\n", "ended: 2025-06-01 11:00:00Z"},
		},
		{name: "status of an unknown rollout", fake: seeded, args: []string{"rollout", "status", "ro_9"}, code: 1,
			reqs: []string{"GET /api/v1/environments/prod/rollouts/ro_9"}, stderr: []string{"flagpole: rollout ro_9 not found (HTTP 404 not_found)"}},
		{name: "status with ID and --flag", args: []string{"rollout", "status", "ro_1", "--flag", "x"}, code: 1, stderr: []string{"give a rollout ID or --flag, not both"}},
		{name: "status without ID", args: []string{"rollout", "status"}, code: 1, stderr: []string{"missing argument ID (or --flag KEY)"}},
		{
			name:   "list filtered",
			fake:   seeded,
			args:   []string{"rollout", "list", "--flag", "checkout", "--state", "running"},
			reqs:   []string{"GET /api/v1/environments/prod/rollouts?flag=checkout&state=running"},
			stdout: []string{"ID FLAG VARIANT STATE STEP PERCENT VERDICT UPDATED", "ro_2 checkout off→on running 2/3 25% pass 2025-06-01 09:58:30Z"},
		},
		{
			name:   "list all, newest first",
			fake:   seeded,
			args:   []string{"rollout", "list"},
			reqs:   []string{"GET /api/v1/environments/prod/rollouts"},
			stdout: []string{"ro_3 search old→new failed 1/3 0% fail", "ro_2 checkout", "ro_1 checkout v1→v2 succeeded 3/3 100% -"},
		},
		{name: "list bad state", args: []string{"rollout", "list", "--state", "done"}, code: 1, stderr: []string{`--state "done": must be one of scheduled, running, paused, succeeded, failed, aborted`}},
		{
			name:   "pause with a reason",
			fake:   seeded,
			args:   []string{"rollout", "pause", "ro_2", "--reason", "looking at latency"},
			reqs:   []string{`POST /api/v1/environments/prod/rollouts/ro_2/pause {"reason":"looking at latency"}`},
			stdout: []string{"rollout ro_2 paused: checkout is paused at 25% (step 2 of 3)"},
		},
		{
			name:   "promote",
			fake:   seeded,
			args:   []string{"rollout", "promote", "ro_2"},
			reqs:   []string{`POST /api/v1/environments/prod/rollouts/ro_2/promote {}`},
			stdout: []string{"rollout ro_2 promoted: checkout is succeeded at 100% (done)"},
		},
		{
			name:   "abort by flag",
			fake:   seeded,
			args:   []string{"rollout", "abort", "--flag", "checkout", "--reason", "incident"},
			reqs:   []string{"GET /api/v1/environments/prod/rollouts?flag=checkout", `POST /api/v1/environments/prod/rollouts/ro_2/abort {"reason":"incident"}`},
			stdout: []string{"rollout ro_2 aborted: checkout is aborted at 0% (step 2 of 3)"},
		},
		{
			name:   "retry by flag finds the failed rollout",
			fake:   seeded,
			args:   []string{"rollout", "retry", "--flag", "search"},
			reqs:   []string{"GET /api/v1/environments/prod/rollouts?flag=search", `POST /api/v1/environments/prod/rollouts/ro_3/retry {}`},
			stdout: []string{"rollout ro_3 retried: search is running at 0% (step 1 of 3)"},
		},
		{
			name:   "resume of a running rollout names its state",
			fake:   seeded,
			args:   []string{"rollout", "resume", "ro_2"},
			code:   1,
			reqs:   []string{`POST /api/v1/environments/prod/rollouts/ro_2/resume {}`},
			stderr: []string{"rollout ro_2 is running: resume is not allowed (HTTP 409 conflict)"},
		},
		{
			name:   "retry by flag without a failed rollout",
			fake:   seeded,
			args:   []string{"rollout", "retry", "--flag", "checkout"},
			code:   1,
			reqs:   []string{"GET /api/v1/environments/prod/rollouts?flag=checkout"},
			stderr: []string{"flag checkout has no failed or paused rollout in prod"},
		},
		{name: "action reason with a line break", args: []string{"rollout", "abort", "ro_1", "--reason", "a\nb"}, code: 1, stderr: []string{"--reason: must be a single line"}},
		{
			name: "kill everywhere",
			fake: func() *fakeRollouts {
				return &fakeRollouts{kill: func(key string, body map[string]string) (int, any) {
					return 200, map[string]any{"flag": key, "environments": []map[string]any{
						{"name": "prod", "variant": "off", "version": 12, "abortedRollouts": []string{"ro_2"}},
						{"name": "staging", "variant": "off", "version": 4, "abortedRollouts": []string{}},
					}}
				}}
			},
			args:   []string{"kill", "checkout", "--reason", "incident 4711"},
			reqs:   []string{`POST /api/v1/flags/checkout/kill {"reason":"incident 4711"}`},
			stdout: []string{"ENVIRONMENT VARIANT VERSION ABORTED ROLLOUTS ERROR", "prod off 12 ro_2 -", "staging off 4 - -", "flag checkout killed in 2 environments"},
		},
		{
			name: "kill of a flag serving an experiment",
			fake: func() *fakeRollouts {
				return &fakeRollouts{kill: func(key string, body map[string]string) (int, any) {
					return 200, map[string]any{"flag": key, "environments": []map[string]any{
						{"name": "prod", "variant": "off", "version": 12, "abortedRollouts": []string{}, "experiment": "checkout-ab",
							"warning": `experiment "checkout-ab" still runs on this flag`},
					}}
				}}
			},
			args:   []string{"kill", "checkout"},
			reqs:   []string{`POST /api/v1/flags/checkout/kill {}`},
			stdout: []string{"prod off 12 - -", "flag checkout killed in 1 environments"},
			stderr: []string{`warning: prod: experiment "checkout-ab" still runs on this flag`},
		},
		{
			name: "kill with a variant that one environment lacks",
			fake: func() *fakeRollouts {
				return &fakeRollouts{kill: func(key string, body map[string]string) (int, any) {
					return 200, map[string]any{"flag": key, "environments": []map[string]any{
						{"name": "prod", "variant": body["variant"], "version": 12},
						{"name": "dev", "error": `variant "disabled" does not exist`},
					}}
				}}
			},
			args:   []string{"kill", "checkout", "--variant", "disabled"},
			code:   1,
			reqs:   []string{`POST /api/v1/flags/checkout/kill {"variant":"disabled"}`},
			stdout: []string{"prod disabled 12 - -", `dev - - - variant "disabled" does not exist`},
			stderr: []string{"flagpole: flag checkout was not killed in 1 of 2 environments: dev"},
		},
		{
			name: "kill without a safe variant",
			fake: func() *fakeRollouts {
				return &fakeRollouts{kill: func(string, map[string]string) (int, any) {
					return 400, fmt.Errorf("flag checkout has no safe variant")
				}}
			},
			args:   []string{"kill", "checkout"},
			code:   1,
			reqs:   []string{`POST /api/v1/flags/checkout/kill {}`},
			stderr: []string{"flag checkout has no safe variant (HTTP 400 invalid)", "variant: no safe variant: give one"},
		},
		{
			name: "kill of a flag no environment has",
			fake: func() *fakeRollouts {
				return &fakeRollouts{kill: func(key string, _ map[string]string) (int, any) {
					return 200, map[string]any{"flag": key, "environments": []any{}}
				}}
			},
			args:   []string{"kill", "nope"},
			code:   1,
			reqs:   []string{`POST /api/v1/flags/nope/kill {}`},
			stderr: []string{"flag nope was not changed: no environment this key may change has it"},
		},
		{name: "kill without a flag", args: []string{"kill"}, code: 1, stderr: []string{"missing argument FLAG"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeRollouts{}
			if tc.fake != nil {
				f = tc.fake()
			}
			env := startFake(t, f)
			r := runCLI(t, env, tc.args...)
			r.expect(t, tc.code, tc.stdout, tc.stderr)
			if got := f.requests(); !slices.Equal(got, tc.reqs) {
				t.Errorf("requests sent:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.reqs, "\n  "))
			}
		})
	}
}

// ro2With returns a copy of the running rollout ro_2 of seeded changed by change.
func ro2With(change func(r *fakeRollout)) fakeRollout {
	r := *seeded().rollouts[1]
	r.History = slices.Clone(r.History)
	change(&r)
	return r
}

func TestRolloutWatch(t *testing.T) {
	step3 := ro2With(func(r *fakeRollout) {
		r.Step, r.Percent, r.Verdict, r.AnalysisID, r.Version = 2, 100, "", "", 5
		r.History = append(r.History, fakeEvent{Time: fakeT0.Add(time.Minute), Event: "step", Step: 2, Percent: 100, Actor: "system:rollout"})
	})
	succeeded := step3
	succeeded.State, succeeded.Version = "succeeded", 6
	succeeded.History = append(slices.Clone(step3.History), fakeEvent{Time: fakeT0.Add(time.Minute), Event: "succeeded", Step: 2, Percent: 100, Actor: "system:rollout"})
	ended := fakeT0.Add(time.Minute)
	succeeded.EndedAt = &ended
	running := ro2With(func(r *fakeRollout) { r.Verdict = "" })
	failed := ro2With(func(r *fakeRollout) {
		r.State, r.Percent, r.Verdict, r.Version = "failed", 0, "fail", 5
		r.Reason = "analysis http-errors-ab12 failed at 25%"
		r.Evidence = json.RawMessage(`{"reason":"error-rate: canary 31% vs baseline 2%"}`)
		r.History = append(r.History, fakeEvent{Time: fakeT0.Add(time.Minute), Event: "failed", Step: 1, Actor: "system:rollout", Reason: "rolled back"})
	})
	paused := ro2With(func(r *fakeRollout) { r.State, r.Version, r.Verdict = "paused", 5, "fail" })
	holding := ro2With(func(r *fakeRollout) { r.Version, r.Holding = 5, true })
	aborted := ro2With(func(r *fakeRollout) { r.State, r.Percent, r.Version = "aborted", 0, 5 })

	tests := []struct {
		name     string
		script   []fakeRollout
		failGets int
		args     []string
		code     int
		stdout   []string
		absent   []string // must not be in stdout
		stderr   []string
		gets     int // GETs of the rollout expected
	}{
		{
			name:   "ramps to succeeded: exit 0",
			script: []fakeRollout{running, seeded().rollouts[1].copy(), step3, succeeded},
			args:   []string{"--progress", "plain"},
			stdout: []string{
				"09:50:00 ro_2 started: step 1 at 1% by ci",
				"09:58:30 ro_2 step: step 2 at 25% by system:rollout: analysis passed",
				"ro_2 running [#####...............] 25% step 2 of 3, gate analysis http-errors-ab12: running",
				"ro_2 running [#####...............] 25% step 2 of 3, gate analysis http-errors-ab12: pass",
				"ro_2 running [####################] 100% step 3 of 3",
				"10:01:00 ro_2 succeeded: step 3 at 100% by system:rollout",
				"rollout ro_2 SUCCEEDED: checkout serves on to 100% (in 11m)",
			},
			absent: []string{"\x1b["},
			gets:   4,
		},
		{
			name:   "a failed gate: exit 1 with the evidence",
			script: []fakeRollout{running, failed},
			args:   []string{"--progress", "plain"},
			code:   1,
			stdout: []string{"ro_2 failed: step 2 at 0% by system:rollout: rolled back",
				"rollout ro_2 FAILED at 25% (step 2 of 3): checkout serves off to everyone",
				"reason: analysis http-errors-ab12 failed at 25%", "evidence: error-rate: canary 31% vs baseline 2%"},
			gets: 2,
		},
		{
			name:   "aborted: exit 1",
			script: []fakeRollout{aborted},
			args:   []string{"--progress", "plain"},
			code:   1,
			stdout: []string{"rollout ro_2 ABORTED at 25% (step 2 of 3): checkout serves off to everyone"},
			gets:   1,
		},
		{
			name:   "paused needs attention: exit 2",
			script: []fakeRollout{running, paused},
			args:   []string{"--progress", "plain"},
			code:   2,
			stdout: []string{"rollout ro_2 is PAUSED at 25% (step 2 of 3) and needs attention: flagpole rollout resume|retry|abort ro_2 --env prod"},
			gets:   2,
		},
		{
			name:   "holding below 100% until promoted: exit 2",
			script: []fakeRollout{running, holding},
			args:   []string{"--progress", "plain"},
			code:   2,
			stdout: []string{"running (holding until promoted)", "rollout ro_2 is HOLDING at 25% (step 2 of 3) until promoted: flagpole rollout promote ro_2 --env prod"},
			gets:   2,
		},
		{
			name:   "--wait-paused follows a pause to the end",
			script: []fakeRollout{paused, paused, step3, succeeded},
			args:   []string{"--progress", "plain", "--wait-paused"},
			stdout: []string{"ro_2 paused [#####", "SUCCEEDED"},
			gets:   4,
		},
		{
			name:   "a terminal gets the view redrawn in place",
			script: []fakeRollout{running, step3, succeeded},
			args:   []string{"--progress", "tty"},
			stdout: []string{"rollout ro_2: checkout in prod, off → on", "█████", "step 2 of 3: 1% → [25%] → 100%",
				"running, in step for ", "(min 10m) · gate analysis http-errors-ab12: running", "\r\x1b[3F\x1b[J", "SUCCEEDED"},
			gets: 3,
		},
		{
			name:   "-o json prints each change once",
			script: []fakeRollout{running, running, succeeded},
			args:   []string{"-o", "json"},
			stdout: []string{`{"id":"ro_2",`, `"state":"succeeded"`},
			absent: []string{"SUCCEEDED"},
			gets:   3,
		},
		{
			name:     "a server error is reported once and retried",
			script:   []fakeRollout{succeeded},
			failGets: 2,
			args:     []string{"--progress", "plain"},
			stdout:   []string{"SUCCEEDED"},
			stderr:   []string{"flagpole: the store is unavailable (HTTP 503 unavailable); retrying every 5ms"},
			gets:     3,
		},
		{
			name:   "--timeout: exit 2",
			script: []fakeRollout{running},
			args:   []string{"--progress", "plain", "--timeout", "100ms"},
			code:   2,
			stderr: []string{"flagpole: rollout ro_2: still running at 25% (step 2 of 3) after --timeout 100ms"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := seeded()
			f.script = map[string][]fakeRollout{"ro_2": tc.script}
			f.failGets = tc.failGets
			env := startFake(t, f)
			r := runCLI(t, env, append([]string{"rollout", "watch", "ro_2", "--every", "5ms"}, tc.args...)...)
			r.expect(t, tc.code, tc.stdout, tc.stderr)
			for _, s := range tc.absent {
				if strings.Contains(r.stdout, s) {
					t.Errorf("stdout has %q:\n%s", s, r.stdout)
				}
			}
			if tc.gets > 0 {
				want := slices.Repeat([]string{"GET /api/v1/environments/prod/rollouts/ro_2"}, tc.gets)
				if got := f.requests(); !slices.Equal(got, want) {
					t.Errorf("requests %q, want %d GETs of ro_2", got, tc.gets)
				}
			}
			if slices.Contains(tc.args, "json") {
				lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
				if len(lines) != 2 {
					t.Errorf("%d JSON lines, want 2 (one per change):\n%s", len(lines), r.stdout)
				}
				for _, l := range lines {
					var v map[string]any
					mustJSON(t, l, &v)
				}
			}
		})
	}
}

// TestRolloutWatchBlock: the live view at a known time.
func TestRolloutWatchBlock(t *testing.T) {
	var r rolloutJSON
	b, _ := json.Marshal(seeded().rollouts[1])
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	w := &rolloutWatcher{now: func() time.Time { return fakeT0 }}
	want := "rollout ro_2: checkout in prod, off → on\n" +
		"  [████████░░░░░░░░░░░░░░░░░░░░░░]    25%  step 2 of 3: 1% → [25%] → 100%\n" +
		"  running, in step for 1m30s (min 10m) · gate analysis http-errors-ab12: pass\n"
	if got := w.block(&r); got != want {
		t.Errorf("block:\n%s\nwant:\n%s", got, want)
	}
	r.State, r.StartAt, r.AnalysisID, r.Verdict = "scheduled", fakeT0.Add(time.Hour), "", ""
	if got := w.block(&r); !strings.Contains(got, "  scheduled, starts 2025-06-01 11:00:00Z\n") || strings.Contains(got, "[25%]") {
		t.Errorf("scheduled block:\n%s", got)
	}
}

func (r *fakeRollout) copy() fakeRollout {
	c := *r
	c.History = slices.Clone(r.History)
	return c
}

func TestRolloutWatchEnds(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr []string
	}{
		{"unknown rollout", []string{"rollout", "watch", "ro_9", "--every", "5ms"}, 1, []string{"rollout ro_9 not found (HTTP 404 not_found)"}},
		{"by flag without a rollout", []string{"rollout", "watch", "--flag", "nope"}, 1, []string{"flag nope has no scheduled or running or paused or succeeded or failed or aborted rollout in prod"}},
		{"bad progress", []string{"rollout", "watch", "ro_2", "--progress", "fancy"}, 1, []string{`--progress "fancy": must be auto, tty or plain`}},
		{"negative timeout", []string{"rollout", "watch", "ro_2", "--timeout", "-1s"}, 1, []string{"--timeout -1s: must be positive"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runCLI(t, startFake(t, seeded()), tc.args...).expect(t, tc.code, nil, tc.stderr)
		})
	}
}

// TestRolloutStartWatch: start --watch starts, then follows to the end.
func TestRolloutStartWatch(t *testing.T) {
	f := &fakeRollouts{}
	env := startFake(t, f)
	done := fakeRollout{ID: "ro_1", Env: "prod", Flag: "f", Variant: "on", From: "off", Steps: []fakeStep{{Percent: 50, MinDuration: "1m0s"}, {Percent: 100}},
		State: "succeeded", Step: 1, Percent: 100, Version: 3, CreatedAt: fakeT0, UpdatedAt: fakeT0}
	f.script = map[string][]fakeRollout{"ro_1": {done}}
	r := runCLI(t, env, "rollout", "start", "--flag", "f", "--variant", "on", "--from", "off", "--steps", "50,100", "--step-duration", "1m", "--watch", "--every", "5ms", "--progress", "plain")
	r.expect(t, 0, []string{"rollout ro_1 started in prod", "rollout ro_1 SUCCEEDED"}, nil)
	if strings.Contains(r.stdout, "follow it with") {
		t.Errorf("start --watch still suggests watching:\n%s", r.stdout)
	}
	if got := f.requests(); len(got) != 2 || !strings.HasPrefix(got[0], "POST ") || got[1] != "GET /api/v1/environments/prod/rollouts/ro_1" {
		t.Errorf("requests %q", got)
	}
}

func TestParseSteps(t *testing.T) {
	tests := []struct {
		name     string
		spec     string
		dur      time.Duration
		template string
		want     string // JSON
		err      string
	}{
		{"durations everywhere but 100", "1,5,25,50,100", 10 * time.Minute, "",
			`[{"percent":1,"minDuration":"10m0s"},{"percent":5,"minDuration":"10m0s"},{"percent":25,"minDuration":"10m0s"},{"percent":50,"minDuration":"10m0s"},{"percent":100}]`, ""},
		{"gate only", "10,100", 0, "t", `[{"percent":10,"analysis":{"template":"t"}},{"percent":100}]`, ""},
		{"own duration wins", "10:1m,100:5m", time.Hour, "", `[{"percent":10,"minDuration":"1m0s"},{"percent":100,"minDuration":"5m0s"}]`, ""},
		{"holds below 100", "1,50", time.Minute, "", `[{"percent":1,"minDuration":"1m0s"},{"percent":50,"minDuration":"1m0s"}]`, ""},
		{"percent signs and spaces", " 1% , 100% ", time.Minute, "", `[{"percent":1,"minDuration":"1m0s"},{"percent":100}]`, ""},
		{"zero", "0,100", time.Minute, "", "", "more than 0"},
		{"equal", "5,5", time.Minute, "", "", "more than the step before"},
		{"empty item", "5,,100", time.Minute, "", "", `step 2: "" is not a percentage`},
		{"NaN", "NaN", time.Minute, "", "", "is not a percentage"},
		{"negative own duration", "5:-1m,100", 0, "t", "", "not a positive duration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			steps, err := parseSteps(tc.spec, tc.dur, tc.template, nil)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(steps)
			if string(got) != tc.want {
				t.Errorf("steps %s\nwant  %s", got, tc.want)
			}
		})
	}
}

func TestRolloutRendering(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"bar empty", progressBar(0, 10, false), "[..........]"},
		{"bar tiny share still shows", progressBar(0.5, 10, false), "[#.........]"},
		{"bar half", progressBar(50, 10, false), "[#####.....]"},
		{"bar full unicode", progressBar(100, 4, true), "[████]"},
		{"bar clamps", progressBar(150, 4, false), "[####]"},
		{"percent whole", canary.FormatPercent(25), "25%"},
		{"percent decimals", canary.FormatPercent(0.25), "0.25%"},
		{"percent rounding noise", canary.FormatPercent(33.330000000000005), "33.33%"},
		{"duration minutes", shortDuration(10 * time.Minute), "10m"},
		{"duration hours", shortDuration(2 * time.Hour), "2h"},
		{"duration mixed", shortDuration(90 * time.Minute), "1h30m"},
		{"duration seconds", shortDuration(1500 * time.Millisecond), "1.5s"},
		{"wire duration string", wireDuration("10m0s").String(), "10m"},
		{"wire duration odd", wireDuration("soon").String(), "soon"},
		{"evidence string", (&rolloutJSON{Evidence: json.RawMessage(`"too many errors"`)}).evidenceText(), "too many errors"},
		{"evidence other shape", (&rolloutJSON{Evidence: json.RawMessage(`{"score": 12}`)}).evidenceText(), `{"score":12}`},
		{"evidence of the server's shape", (&rolloutJSON{Evidence: json.RawMessage(`{"analysisId":"ro-1-a1","template":"t","phase":"Failed",` +
			`"message":"Failed: error-rate worse","report":{"verdict":"fail","reason":"error-rate: canary 30% vs 2%",` +
			`"metrics":[{"metric":"error-rate","verdict":"fail","reason":"30% vs 2%"},{"metric":"latency","verdict":"fail","reason":"p50 +40%"},{"metric":"cpu","verdict":"pass","reason":"ok"}]}}`)}).evidenceText(),
			"analysis ro-1-a1: error-rate: canary 30% vs 2%; latency: p50 +40%"},
		{"evidence message only", (&rolloutJSON{Evidence: json.RawMessage(`{"analysisId":"a","phase":"Error","message":"Prometheus unreachable"}`)}).evidenceText(), "analysis a: Prometheus unreachable"},
		{"no evidence", (&rolloutJSON{Evidence: json.RawMessage(`null`)}).evidenceText(), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
	var d wireDuration
	if err := json.Unmarshal([]byte(`90`), &d); err != nil || d.String() != "1m30s" {
		t.Errorf("a duration in seconds decodes to %q (%v), want 1m30s", d, err)
	}
	if err := json.Unmarshal([]byte(`{}`), &d); err == nil {
		t.Error("an object decodes as a duration")
	}
}

// TestRolloutDocExamples: docs/rollouts.md shows the example service
// exactly as testdata/rollout-app has it (which the end-to-end test builds
// and runs), and its analysis template is valid and uses the scope.
func TestRolloutDocExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/rollouts.md")
	if err != nil {
		t.Fatal(err)
	}
	prog, err := os.ReadFile("testdata/rollout-app/main.go")
	if err != nil {
		t.Fatal(err)
	}
	block := func(lang, contains string) string {
		for _, part := range strings.Split(string(doc), "```"+lang+"\n")[1:] {
			code, _, _ := strings.Cut(part, "```")
			if strings.Contains(code, contains) {
				return code
			}
		}
		t.Fatalf("docs/rollouts.md has no %s block containing %q", lang, contains)
		return ""
	}
	if got := block("go", "package main"); got != string(prog) {
		t.Errorf("the Go example in docs/rollouts.md differs from testdata/rollout-app/main.go; copy the file into the doc")
	}
	tpl, err := canary.ParseTemplate([]byte(block("yaml", "name: checkout-errors")))
	if err != nil {
		t.Fatalf("the doc's template: %v", err)
	}
	args := canary.Args{CanaryScope: `feature_flag_key="new-checkout",feature_flag_variant="on"`, BaselineScope: `feature_flag_key="new-checkout",feature_flag_variant="off"`}
	q, err := tpl.RenderMetric(0, args, canary.ArmCanary, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	want := `sum(increase(checkout_errors_total{ feature_flag_key="new-checkout",feature_flag_variant="on" }[600s]))`
	if q.Numerator != want {
		t.Errorf("canary numerator %q, want %q", q.Numerator, want)
	}
}
