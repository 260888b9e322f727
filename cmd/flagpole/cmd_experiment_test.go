package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flagpole/flagpole/experiments"
)

// fakeExperimentsAPI implements the experiments HTTP contract
// (docs/experiments.md) in memory, and records what it was sent.
type fakeExperimentsAPI struct {
	t  *testing.T
	mu sync.Mutex
	xp map[string]*experimentReply // by env/key
	// last request
	method, path, query, reason, ifMatch, accept string
	body                                         []byte
	requests                                     int
}

func newFakeExperimentsAPI(t *testing.T) (*fakeExperimentsAPI, *httptest.Server) {
	f := &fakeExperimentsAPI{t: t, xp: map[string]*experimentReply{}}
	mux := http.NewServeMux()
	base := "/api/v1/environments/{env}/experiments"
	mux.HandleFunc("POST "+base, f.create)
	mux.HandleFunc("GET "+base, f.list)
	mux.HandleFunc("GET "+base+"/{key}", f.get)
	mux.HandleFunc("DELETE "+base+"/{key}", f.delete)
	mux.HandleFunc("POST "+base+"/{key}/{action}", f.action)
	mux.HandleFunc("GET "+base+"/{key}/results", f.results)
	mux.HandleFunc("GET "+base+"/{key}/results.svg", f.chart)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		f.mu.Lock()
		f.method, f.path, f.query, f.body = r.Method, r.URL.Path, r.URL.RawQuery, body
		f.reason, f.ifMatch, f.accept = r.Header.Get("X-Change-Reason"), r.Header.Get("If-Match"), r.Header.Get("Accept")
		f.requests++
		f.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer test-token" {
			writeErr(w, http.StatusUnauthorized, "unauthorized", "bad key", "")
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return f, ts
}

func writeErr(w http.ResponseWriter, status int, code, msg, field string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	details := []map[string]string{}
	if field != "" {
		details = append(details, map[string]string{"field": field, "problem": msg})
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": msg, "details": details}})
}

func writeOK(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeExperimentsAPI) lookup(w http.ResponseWriter, r *http.Request) *experimentReply {
	f.mu.Lock()
	defer f.mu.Unlock()
	x := f.xp[r.PathValue("env")+"/"+r.PathValue("key")]
	if x == nil {
		writeErr(w, http.StatusNotFound, "not_found", fmt.Sprintf("experiment %q does not exist", r.PathValue("key")), "key")
	}
	return x
}

func (f *fakeExperimentsAPI) create(w http.ResponseWriter, r *http.Request) {
	var e experiments.Experiment
	if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
		writeErr(w, http.StatusBadRequest, "invalid_request", err.Error(), "body")
		return
	}
	e.Defaults()
	f.mu.Lock()
	defer f.mu.Unlock()
	id := r.PathValue("env") + "/" + e.Key
	if f.xp[id] != nil {
		writeErr(w, http.StatusConflict, "conflict", "experiment exists", "key")
		return
	}
	x := &experimentReply{Experiment: e, Version: 1, CreatedAt: time.Now()}
	f.xp[id] = x
	writeOK(w, http.StatusCreated, x)
}

func (f *fakeExperimentsAPI) list(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []experimentReply{}
	for id, x := range f.xp {
		if strings.HasPrefix(id, r.PathValue("env")+"/") && (r.URL.Query().Get("status") == "" || string(x.Status) == r.URL.Query().Get("status")) {
			out = append(out, *x)
		}
	}
	writeOK(w, http.StatusOK, map[string]any{"experiments": out})
}

func (f *fakeExperimentsAPI) get(w http.ResponseWriter, r *http.Request) {
	if x := f.lookup(w, r); x != nil {
		writeOK(w, http.StatusOK, x)
	}
}

func (f *fakeExperimentsAPI) delete(w http.ResponseWriter, r *http.Request) {
	x := f.lookup(w, r)
	if x == nil {
		return
	}
	if x.Status == experiments.StatusRunning {
		writeErr(w, http.StatusConflict, "conflict", "a running experiment cannot be deleted; stop and archive it first", "status")
		return
	}
	f.mu.Lock()
	delete(f.xp, r.PathValue("env")+"/"+r.PathValue("key"))
	f.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeExperimentsAPI) action(w http.ResponseWriter, r *http.Request) {
	x := f.lookup(w, r)
	if x == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	var err error
	switch r.PathValue("action") {
	case "start":
		err = x.Start(now)
	case "stop":
		var in struct {
			Decision *struct{ Action, Variant, Reason string } `json:"decision"`
		}
		if json.NewDecoder(r.Body).Decode(&in) != nil || in.Decision == nil {
			writeErr(w, http.StatusBadRequest, "invalid_request", "is required", "decision")
			return
		}
		err = x.Stop(now, experiments.StopDecision{Outcome: experiments.Outcome(in.Decision.Action), Variant: in.Decision.Variant, Note: in.Decision.Reason})
	case "restart":
		var in struct{ Salt string }
		_ = json.NewDecoder(r.Body).Decode(&in)
		err = x.Restart(now, in.Salt)
	case "archive":
		err = x.Archive(now)
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		writeErr(w, http.StatusConflict, "conflict", err.Error(), "status")
		return
	}
	x.Version++
	writeOK(w, http.StatusOK, x)
}

// analysed returns the results of x on simulated data: conversion 10% →
// 12% on 10,000 users per arm.
func analysed(x *experimentReply) experiments.Results {
	rng := rand.New(rand.NewPCG(1, 2))
	obs := experiments.Observations{Users: map[string]int64{}, Metrics: map[string]map[string]experiments.Stats{}}
	for i, arm := range x.Arms() {
		obs.Users[arm] = 10_000
		for _, m := range x.Metrics {
			p := 0.10
			if i > 0 && m.Role == experiments.RoleGoal {
				p = 0.12
			}
			if obs.Metrics[m.Key] == nil {
				obs.Metrics[m.Key] = map[string]experiments.Stats{}
			}
			var st experiments.Stats
			for range 10_000 {
				v := 0.0
				if rng.Float64() < p {
					v = 1
				}
				st.Add(v, 0)
			}
			obs.Metrics[m.Key][arm] = st
		}
	}
	return experiments.Analyze(&x.Experiment, obs, time.Now())
}

func (f *fakeExperimentsAPI) results(w http.ResponseWriter, r *http.Request) {
	if x := f.lookup(w, r); x != nil {
		writeOK(w, http.StatusOK, resultsReply{Results: analysed(x), GeneratedAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)})
	}
}

func (f *fakeExperimentsAPI) chart(w http.ResponseWriter, r *http.Request) {
	if x := f.lookup(w, r); x != nil {
		w.Header().Set("Content-Type", "image/svg+xml")
		_ = experiments.EffectChart(w, analysed(x))
	}
}

const experimentYAML = `key: checkout-test
flagKey: new-checkout
hypothesis: The one-page checkout converts better.
control: "off"
treatments: ["on"]
metrics:
  - key: purchase
    kind: conversion
    event: purchase
    role: goal
  - key: errors
    kind: count
    event: error
    role: guardrail
    direction: lower_is_better
`

func TestExperimentCommands(t *testing.T) {
	f, ts := newFakeExperimentsAPI(t)
	env := map[string]string{envURL: ts.URL, envToken: "test-token", envEnv: "prod"}
	dir := t.TempDir()
	file := filepath.Join(dir, "checkout.yaml")
	if err := os.WriteFile(file, []byte(experimentYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("key: x\nflagKey: f\ncontrol: a\ntreatments: [a]\nmetrics: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unquoted := filepath.Join(dir, "unquoted.yml")
	if err := os.WriteFile(unquoted, []byte(strings.ReplaceAll(experimentYAML, `"`, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	svg := filepath.Join(dir, "effects.svg")

	// The steps share the fake server's state, in order.
	steps := []struct {
		name       string
		args       []string
		code       int
		stdout     []string
		stderr     []string
		wantMethod string
		wantPath   string
		wantQuery  string
		wantBody   string // JSON the server must have received (compared as JSON)
		wantReason string
		noRequest  bool
	}{
		{name: "create", args: []string{"experiment", "create", "-f", file, "--reason", "Q3 test"},
			stdout: []string{"experiment checkout-test created (draft, version 1)"}, wantMethod: "POST", wantPath: "/api/v1/environments/prod/experiments", wantReason: "Q3 test"},
		{name: "create an invalid file", args: []string{"experiment", "create", "-f", bad}, code: 1,
			stderr: []string{"the experiment is invalid", "treatments[0]", "metrics"}, noRequest: true},
		{name: "create with YAML booleans for variants", args: []string{"experiment", "create", "-f", unquoted}, code: 1,
			stderr: []string{"Experiment.control of type string", `quote variant names such as "on"`}, noRequest: true},
		{name: "create without a file", args: []string{"experiment", "create"}, code: 1, stderr: []string{"missing --file", "--help"}, noRequest: true},
		{name: "create twice", args: []string{"experiment", "create", "-f", file}, code: 1, stderr: []string{"experiment exists (HTTP 409 conflict)", "key: experiment exists"}},
		{name: "list", args: []string{"experiment", "list"}, stdout: []string{"KEY STATUS FLAG ARMS TRAFFIC METRICS STARTED DECISION", "checkout-test draft new-checkout off,on 100% 2 - -"},
			wantMethod: "GET", wantPath: "/api/v1/environments/prod/experiments"},
		{name: "list by status", args: []string{"experiment", "list", "--status", "running"}, stdout: []string{"KEY STATUS"}, wantQuery: "status=running"},
		{name: "list by a bad status", args: []string{"experiment", "list", "--status", "done"}, code: 1, stderr: []string{`--status "done": must be draft, running, stopped or archived`}, noRequest: true},
		{name: "get", args: []string{"experiment", "get", "checkout-test"},
			stdout: []string{"Flag: new-checkout", "Arms: off (control, weight 1), on (treatment, weight 1)", "Hypothesis: The one-page checkout converts better.",
				"sequential, alpha 0.05", "purchase conversion purchase goal higher_is_better -", "errors count error guardrail lower_is_better"},
			wantPath: "/api/v1/environments/prod/experiments/checkout-test"},
		{name: "get unknown", args: []string{"experiment", "get", "nope"}, code: 1, stderr: []string{`experiment "nope" does not exist (HTTP 404 not_found)`}},
		{name: "start", args: []string{"experiment", "start", "checkout-test", "--reason", "go"}, stdout: []string{"experiment checkout-test started (running, version 2)"},
			wantMethod: "POST", wantPath: "/api/v1/environments/prod/experiments/checkout-test/start", wantReason: "go"},
		{name: "delete while running", args: []string{"experiment", "delete", "checkout-test"}, code: 1, stderr: []string{"cannot be deleted", "HTTP 409"}},
		{name: "results", args: []string{"experiment", "results", "checkout-test", "--svg", svg},
			stdout: []string{
				"Experiment checkout-test: sequential (anytime-valid) analysis, 95% confidence sequences, holm correction across goals",
				"Users: 20,000 — off 10,000 (50.0%, expected 50.0%), on 10,000 (50.0%, expected 50.0%)",
				"METRIC ROLE TREATMENT CONTROL TREATMENT VALUE ABSOLUTE EFFECT [INTERVAL] RELATIVE EFFECT [INTERVAL] P-VALUE / CHANCE TO WIN VERDICT",
				"purchase goal on 0.09", "better",
				"errors guardrail (lower is better) on", "harm p = ", "inconclusive",
				"Health: healthy", "Sample ratio: χ² = 0 (df 1), p = 1.000 — no mismatch", "Crossovers: 0 users",
				"Power: the minimum detectable effect is now", "in purchase (on vs control)", "Recommendation: SHIP on", "Ship on: it moved purchase the right way",
				"Chart saved to " + svg},
			wantMethod: "GET", wantPath: "/api/v1/environments/prod/experiments/checkout-test/results"},
		{name: "results as JSON", args: []string{"experiment", "results", "checkout-test", "-o", "json"},
			stdout: []string{`"recommendation": {`, `"action": "ship"`, `"generatedAt": "2026-03-01T12:00:00Z"`}},
		{name: "stop to ship without a variant", args: []string{"experiment", "stop", "checkout-test", "--decision", "ship"}, code: 1,
			stderr: []string{"--decision ship needs --variant"}, noRequest: true},
		{name: "stop with a bad decision", args: []string{"experiment", "stop", "checkout-test", "--decision", "win"}, code: 1,
			stderr: []string{`--decision "win": must be ship, rollback or none`}, noRequest: true},
		{name: "stop without a decision", args: []string{"experiment", "stop", "checkout-test"}, code: 1, stderr: []string{"missing --decision"}, noRequest: true},
		{name: "restart", args: []string{"experiment", "restart", "checkout-test", "--salt", "checkout-test.2"}, stdout: []string{"experiment checkout-test restarted (running, version 3)"},
			wantPath: "/api/v1/environments/prod/experiments/checkout-test/restart", wantBody: `{"salt":"checkout-test.2"}`},
		{name: "stop", args: []string{"experiment", "stop", "checkout-test", "--decision", "ship", "--variant", "on", "--reason", "+2 points"},
			stdout: []string{"experiment checkout-test stopped (stopped, version 4)"}, wantMethod: "POST",
			wantPath: "/api/v1/environments/prod/experiments/checkout-test/stop", wantBody: `{"decision":{"action":"ship","variant":"on","reason":"+2 points"}}`, wantReason: "+2 points"},
		{name: "get stopped", args: []string{"experiment", "get", "checkout-test"}, stdout: []string{"Decision: ship on: +2 points", "Stopped:"}},
		{name: "archive", args: []string{"experiment", "archive", "checkout-test"}, stdout: []string{"experiment checkout-test archived (archived, version 5)"},
			wantPath: "/api/v1/environments/prod/experiments/checkout-test/archive"},
		{name: "delete", args: []string{"experiment", "delete", "checkout-test", "-e", "prod"}, stdout: []string{"experiment checkout-test deleted"},
			wantMethod: "DELETE", wantPath: "/api/v1/environments/prod/experiments/checkout-test"},
		{name: "another environment", args: []string{"experiments", "list", "--env", "staging"}, stdout: []string{"KEY STATUS"},
			wantPath: "/api/v1/environments/staging/experiments"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			f.mu.Lock()
			before := f.requests
			f.mu.Unlock()
			res := runCLI(t, env, st.args...)
			res.expect(t, st.code, st.stdout, st.stderr)
			f.mu.Lock()
			defer f.mu.Unlock()
			if st.noRequest {
				if f.requests != before {
					t.Errorf("%d requests sent, want none", f.requests-before)
				}
				return
			}
			if st.wantMethod != "" && f.method != st.wantMethod {
				t.Errorf("method %s, want %s", f.method, st.wantMethod)
			}
			if st.wantPath != "" && f.path != st.wantPath {
				t.Errorf("path %s, want %s", f.path, st.wantPath)
			}
			if f.query != st.wantQuery {
				t.Errorf("query %q, want %q", f.query, st.wantQuery)
			}
			if f.reason != st.wantReason {
				t.Errorf("X-Change-Reason %q, want %q", f.reason, st.wantReason)
			}
			if st.wantBody != "" {
				var got, want any
				if err := json.Unmarshal(f.body, &got); err != nil {
					t.Fatalf("body %q: %v", f.body, err)
				}
				_ = json.Unmarshal([]byte(st.wantBody), &want)
				gj, _ := json.Marshal(got)
				wj, _ := json.Marshal(want)
				if !bytes.Equal(gj, wj) {
					t.Errorf("body %s, want %s", gj, wj)
				}
			}
		})
	}
	data, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("<svg")) || !bytes.Contains(data, []byte("purchase")) {
		t.Errorf("the saved chart is not the SVG: %.200s", data)
	}
}

func TestExperimentResultsSVGToStdout(t *testing.T) {
	f, ts := newFakeExperimentsAPI(t)
	env := map[string]string{envURL: ts.URL, envToken: "test-token"}
	f.xp["default/exp"] = &experimentReply{Experiment: experiments.Experiment{Key: "exp", FlagKey: "f", Control: "a", Treatments: []string{"b"},
		Metrics: []experiments.Metric{{Key: "m", Kind: experiments.KindConversion, Event: "e", Role: experiments.RoleGoal}}}, Version: 1}
	res := runCLI(t, env, "experiment", "results", "exp", "--svg", "-")
	res.expect(t, 0, []string{"<svg", "</svg>"}, nil)
	if strings.Contains(res.stdout, "Recommendation:") {
		t.Error("--svg - wrote the table too")
	}
	if f.accept != "image/svg+xml" || f.path != "/api/v1/environments/default/experiments/exp/results.svg" {
		t.Errorf("asked %s with Accept %q", f.path, f.accept)
	}
}

func TestFormatHelpers(t *testing.T) {
	tests := []struct{ name, got, want string }{
		{"relative", fmtRel(0.1234, true), "+12.3%"},
		{"small relative", fmtRel(-0.0042, true), "-0.42%"},
		{"zero", fmtRel(0, true), "0%"},
		{"count", fmtCount(1234567), "1,234,567"},
		{"negative count", fmtCount(-1234), "-1,234"},
		{"signed", fmtSigned(0.01981), "+0.01981"},
		{"tiny p", fmtP(0.00002), "< 0.0001"},
		{"p", fmtP(0.0312), "= 0.031"},
		{"days", fmtDuration(3 * 86400), "3.0 days"},
		{"minutes", fmtDuration(5400), "1h30m0s"},
		{"traffic", fmtTraffic(0), "100%"},
		{"estimate", fmtEstimate(&experiments.Estimate{Value: 0.02, Lower: 0.01, Upper: 0.03}, true), "+2.0% [+1.0%, +3.0%]"},
		{"no estimate", fmtEstimate(nil, true), "-"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}
