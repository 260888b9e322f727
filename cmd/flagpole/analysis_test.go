package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/api"
	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis"
)

// analysisAPI is the real API server with analyses on a store, behind
// httptest, and the runners executing them.
type analysisAPI struct {
	url    string
	admin  string
	store  *redis.Store
	server *api.Server
	reg    *prometheus.Registry
	logs   *syncBuffer
}

// startAnalysisAPI serves the API over store (which it does not close)
// and, when src is set, runs one runner on it with a short poll.
func startAnalysisAPI(t *testing.T, store *redis.Store, src canary.MetricSource) *analysisAPI {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	secret, hash := auth.NewSecret(auth.RoleAdmin)
	if err := store.CreateKey(ctx, auth.Key{ID: auth.NewID(), Name: "test-admin", Role: auth.RoleAdmin, Hash: hash, Prefix: secret[:12], CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	a := &analysisAPI{admin: secret, store: store, reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(a.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := api.New(api.Config{
		Store: store, Keys: store, Flags: flags.NewService(store, nil), Analyses: store,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: a.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	a.server = srv
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Run(ctx) })
	if src != nil {
		a.runner(t, ctx, &wg, store, src, "runner-main", log)
	}
	hs := httptest.NewServer(srv.Handler())
	a.url = hs.URL
	t.Cleanup(func() {
		hs.Close()
		cancel()
		wg.Wait()
		if t.Failed() {
			t.Logf("runner logs:\n%s", a.logs.String())
		}
	})
	return a
}

// runner starts a runner on store until ctx ends.
func (a *analysisAPI) runner(t *testing.T, ctx context.Context, wg *sync.WaitGroup, store canary.Store, src canary.MetricSource, owner string, log *slog.Logger) {
	t.Helper()
	r, err := canary.NewRunner(canary.RunnerConfig{
		Store: store, Source: src, Logger: log.With("owner", owner), Metrics: a.server.AnalysisMetrics(),
		Owner: owner, Poll: 100 * time.Millisecond, LeaseTTL: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { _ = r.Run(ctx) })
}

func (a *analysisAPI) env() map[string]string {
	return map[string]string{envURL: a.url, envToken: a.admin}
}

// caseSource answers the threshold query of gaugeYAML with the value of
// the case named in its scope (case="NAME"); a case set to fail errors.
type caseSource struct {
	mu     sync.Mutex
	values map[string]float64
}

func (c *caseSource) Instant(_ context.Context, q string, _ time.Time) ([]canary.Element, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for name, v := range c.values {
		if strings.Contains(q, `case="`+name+`"`) {
			if v < 0 {
				return nil, fmt.Errorf("%w: Prometheus unreachable (test)", canary.ErrSource)
			}
			return []canary.Element{{Labels: map[string]string{}, Value: v}}, nil
		}
	}
	return nil, nil
}

func (c *caseSource) Range(context.Context, string, time.Time, time.Time, time.Duration) ([]canary.Series, error) {
	return nil, fmt.Errorf("%w: no range queries", canary.ErrSource)
}

// gaugeYAML is a template with one critical threshold metric (at most 1),
// measured every second, count times.
func gaugeYAML(name string, count int) string {
	return fmt.Sprintf(`name: %s
metrics:
  - name: gauge
    kind: threshold
    query: 'gauge{ {{ .scope }} }'
    max: 1
    critical: true
schedule:
  interval: 1s
  count: %d
  consecutiveErrorLimit: 0
`, name, count)
}

func openEmbeddedStore(t *testing.T) *redis.Store {
	t.Helper()
	s, err := redis.OpenEmbedded(context.Background(), t.TempDir(), redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestTemplateCommands(t *testing.T) {
	srv := startAnalysisAPI(t, openEmbeddedStore(t), nil)
	env := srv.env()
	dir := t.TempDir()
	good := writeTemp(t, dir, "gauge.yaml", gaugeYAML("gauge", 3))
	runCLI(t, env, "templates", "apply", good).expect(t, 0, []string{"template gauge created (version 1)"}, nil)
	runCLI(t, env, "templates", "apply", good).expect(t, 0, []string{"template gauge updated (version 2)"}, nil)
	r := runCLI(t, env, "templates", "apply", good, "--if-match", "1")
	r.expect(t, 1, nil, []string{"precondition_failed"})

	bad := writeTemp(t, dir, "bad.yaml", "name: Bad\nmetrics: []\nschedule: {interval: 10ms}\n")
	r = runCLI(t, env, "templates", "apply", bad)
	r.expect(t, 1, nil, []string{"bad.yaml: the template is invalid (4 problems)", "name: \"Bad\" must be lowercase", "metrics: at least one metric", "schedule.interval: must be at least 1s", "schedule.deadline: required"})

	r = runCLI(t, env, "templates", "list")
	r.expect(t, 0, []string{"NAME VERSION METRICS INTERVAL", "gauge 2 1 1s"}, nil)
	r = runCLI(t, env, "templates", "get", "gauge")
	r.expect(t, 0, []string{"name: gauge", "kind: threshold", "interval: 1s"}, nil)
	if _, err := canary.ParseTemplate([]byte(r.stdout)); err != nil {
		t.Errorf("templates get does not print an appliable template: %v\n%s", err, r.stdout)
	}
	r = runCLI(t, env, "templates", "get", "gauge", "-o", "json")
	var st canary.StoredTemplate
	mustJSON(t, r.stdout, &st)
	if st.Version != 2 || st.UpdatedAt.IsZero() {
		t.Errorf("templates get -o json: %s", r.stdout)
	}
	runCLI(t, env, "templates", "delete", "gauge").expect(t, 0, []string{"template gauge deleted"}, nil)
	runCLI(t, env, "templates", "get", "gauge").expect(t, 1, nil, []string{"not_found"})
}

// TestAnalysisCommands runs analyses through the CLI to each verdict, with
// a runner and a fake metric source.
func TestAnalysisCommands(t *testing.T) {
	src := &caseSource{values: map[string]float64{"pass": 0.5, "fail": 3, "error": -1, "slow": 0.5, "cancel": 0.5}}
	srv := startAnalysisAPI(t, openEmbeddedStore(t), src)
	env := srv.env()
	dir := t.TempDir()
	runCLI(t, env, "templates", "apply", writeTemp(t, dir, "g.yaml", gaugeYAML("gauge", 2)), writeTemp(t, dir, "long.yaml", gaugeYAML("long", 1000))).
		expect(t, 0, []string{"template gauge created", "template long created"}, nil)
	scope := func(c string) []string {
		return []string{"--baseline-scope", `case="base"`, "--canary-scope", `case="` + c + `"`}
	}

	t.Run("gate", func(t *testing.T) {
		tests := []struct {
			name   string
			tpl    string
			c      string
			extra  []string
			code   int
			stdout []string
			stderr []string
		}{
			{"pass", "gauge", "pass", nil, 0, []string{"started", "step 1: pass (score 100.0)", "step 2: pass", "pass          gauge: canary value 0.5 is within", "PASS"}, nil},
			{"fail", "gauge", "fail", nil, 1, []string{"FAIL", "above the maximum"}, nil},
			{"no data source", "gauge", "error", nil, 2, []string{"INCONCLUSIVE", "Error"}, nil},
			{"timeout", "long", "slow", []string{"--timeout", "1500ms"}, 2, []string{"started"}, []string{"no verdict: the gate's --timeout 1.5s passed; it was cancelled"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				args := append([]string{"analysis", "gate", "-t", tc.tpl, "--every", "200ms"}, scope(tc.c)...)
				r := runCLI(t, env, append(args, tc.extra...)...)
				r.expect(t, tc.code, tc.stdout, tc.stderr)
			})
		}
	})
	// The timed-out gate cancelled its analysis.
	r := runCLI(t, env, "analysis", "list", "-t", "long", "-o", "json")
	var list struct {
		Analyses []struct {
			ID    string       `json:"id"`
			Phase canary.Phase `json:"phase"`
		} `json:"analyses"`
	}
	mustJSON(t, r.stdout, &list)
	if len(list.Analyses) != 1 || list.Analyses[0].Phase != canary.PhaseCancelled {
		t.Errorf("after the gate timed out: %s; want its analysis Cancelled", r.stdout)
	}

	// start, get, watch, list, cancel.
	r = runCLI(t, env, append([]string{"analysis", "start", "-t", "gauge", "-o", "json"}, scope("pass")...)...)
	var started analysisReply
	mustJSON(t, r.stdout, &started)
	if started.Phase != canary.PhasePending || started.Template.Name != "gauge" {
		t.Fatalf("start -o json: %s", r.stdout)
	}
	r = runCLI(t, env, "analysis", "watch", started.ID, "--every", "100ms", "-o", "json")
	r.expect(t, 0, []string{`"verdict":"pass"`, `"final":true`}, nil)
	if lines := decodeLines(t, r.stdout); len(lines) < 2 || lines[len(lines)-1]["phase"] != "Successful" {
		t.Errorf("watch -o json printed %d line(s); want one per change, ending Successful:\n%s", len(lines), r.stdout)
	}
	r = runCLI(t, env, "analysis", "get", started.ID)
	r.expect(t, 0, []string{"phase: Successful", "verdict: pass", "measurements: 2", "METRIC VERDICT REASON", "gauge (critical) pass"}, nil)
	r = runCLI(t, env, "analysis", "list", "--phase", "Successful")
	r.expect(t, 0, []string{"ID TEMPLATE PHASE VERDICT SCORE STEPS", started.ID + " gauge Successful pass 100.0 2"}, nil)

	r = runCLI(t, env, append([]string{"analysis", "start", "-t", "long"}, scope("cancel")...)...)
	r.expect(t, 0, []string{"analysis long-", "flagpole analysis watch long-"}, nil)
	id := strings.Fields(r.stdout)[1]
	runCLI(t, env, "analysis", "cancel", id, "--reason", "bad deploy").expect(t, 0, []string{"analysis " + id + " cancelled"}, nil)
	runCLI(t, env, "analysis", "cancel", id).expect(t, 1, nil, []string{"already Cancelled", "HTTP 409"})
	runCLI(t, env, "analysis", "watch", id).expect(t, 2, []string{"INCONCLUSIVE", "bad deploy"}, nil)
	runCLI(t, env, "analysis", "get", "no-such-analysis").expect(t, 1, nil, []string{"HTTP 404"})
	runCLI(t, env, "analysis", "watch", "no-such-analysis").expect(t, 1, nil, []string{"HTTP 404"})

	// The runner's observations reach /metrics through the server's hooks.
	body := httpGet(t, srv.url+"/metrics")
	for _, want := range []string{`flagpole_canary_runs_total{phase="Successful",template="gauge"}`, `flagpole_canary_measurement_errors_total{metric="gauge",template="gauge"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func httpGet(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestAnalysisUsageErrors(t *testing.T) {
	token := map[string]string{envToken: "fp_admin_test"}
	scopes := []string{"--baseline-scope", "a", "--canary-scope", "b"}
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"start without template", append([]string{"analysis", "start"}, scopes...), "--template: required"},
		{"start without baseline", []string{"analysis", "start", "-t", "x", "--canary-scope", "b"}, "--baseline-scope: required"},
		{"start without canary", []string{"analysis", "start", "-t", "x", "--baseline-scope", "a"}, "--canary-scope: required"},
		{"bad split", append([]string{"analysis", "start", "-t", "x", "--split", "1"}, scopes...), "--split 1: must be between 0 and 1"},
		{"bad arg", append([]string{"analysis", "start", "-t", "x", "--arg", "novalue"}, scopes...), `--arg "novalue": must be NAME=VALUE`},
		{"duplicate arg", append([]string{"analysis", "start", "-t", "x", "--arg", "a=1", "--arg", "a=2"}, scopes...), `--arg: "a" is given twice`},
		{"gate zero timeout", append([]string{"analysis", "gate", "-t", "x", "--timeout", "0s"}, scopes...), "--timeout 0s: must be positive"},
		{"watch without id", []string{"analysis", "watch"}, "missing argument ID"},
		{"watch zero interval", []string{"analysis", "watch", "x", "--every", "0s"}, "--every 0s: must be positive"},
		{"list bad limit", []string{"analysis", "list", "--limit", "0"}, "--limit 0: must be between 1 and 500"},
		{"apply nothing", []string{"templates", "apply"}, "missing argument FILE"},
		{"apply missing file", []string{"templates", "apply", "/nonexistent/t.yaml"}, "no such file"},
		{"unknown subcommand", []string{"analysis", "begin"}, `unknown command "begin" for "flagpole analysis"`},
		{"serve bad prometheus url", []string{"serve", "--prometheus-url", "prometheus:9090"}, `--prometheus-url "prometheus:9090": must be an http:// or https:// URL`},
		{"serve zero prometheus timeout", []string{"serve", "--prometheus-timeout", "0s"}, "--prometheus-timeout 0s: must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runCLI(t, token, tc.args...).expect(t, 1, nil, []string{tc.stderr})
		})
	}
	r := runCLI(t, map[string]string{envPrometheusURL: "ftp://x"}, "serve")
	r.expect(t, 1, nil, []string{`--prometheus-url "ftp://x"`})
}

func TestAnalysisHelp(t *testing.T) {
	tests := []struct {
		args   []string
		stdout []string
	}{
		{[]string{"--help"}, []string{"analysis", "templates"}},
		{[]string{"analysis", "--help"}, []string{"start", "get", "list", "cancel", "watch", "gate"}},
		{[]string{"analysis", "gate", "--help"}, []string{"0  pass", "1  fail", "2  inconclusive", "--timeout", "--arg"}},
		{[]string{"analysis", "watch", "--help"}, []string{"exits 0", "-o json"}},
		{[]string{"templates", "--help"}, []string{"apply", "list", "get", "delete"}},
		{[]string{"serve", "--help"}, []string{"--prometheus-url", "FLAGPOLE_PROMETHEUS_URL"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			runCLI(t, nil, tc.args...).expect(t, 0, tc.stdout, nil)
		})
	}
}

// decodeLines decodes output of one JSON object per line.
func decodeLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var all []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON line: %q", line)
		}
		all = append(all, m)
	}
	return all
}
