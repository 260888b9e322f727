package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary/prometheus/promtest"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis/redistest"
)

// End-to-end rollouts: the real binary on a real redis-server, analyses
// measured in a real Prometheus scraping the example service of
// docs/rollouts.md (testdata/rollout-app), which evaluates the flag per
// simulated user through the Go provider and counts requests and errors
// labelled feature_flag_key / feature_flag_variant.

// rolloutTemplate judges the new variant's error rate against the old
// one's with the label convention of docs/rollouts.md; the interval is
// short for the test.
const rolloutTemplate = `name: checkout-errors
description: The new variant's checkout error rate against the old variant's.
alpha: 0.001
metrics:
  - name: error-rate
    kind: ratio
    numerator: sum(increase(checkout_errors_total{ {{ .scope }} }[{{ .window }}]))
    denominator: sum(increase(checkout_requests_total{ {{ .scope }} }[{{ .window }}]))
    margin: {relative: 0.5}
    critical: true
sampleRatio: {tolerance: 0.1}
schedule:
  interval: 2s
  warmup: 1s
  deadline: 20s
  undecided: inconclusive
`

var (
	rolloutAppOnce sync.Once
	rolloutAppPath string
	rolloutAppErr  error
)

// buildRolloutApp compiles testdata/rollout-app (the program of
// docs/rollouts.md) next to the flagpole binary, once.
func buildRolloutApp(t *testing.T) string {
	t.Helper()
	rolloutAppOnce.Do(func() {
		rolloutAppPath = filepath.Join(filepath.Dir(binPath), "rollout-app")
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = "/usr/local/go/bin/go"
		}
		out, err := exec.Command(goTool, "build", "-o", rolloutAppPath, "./testdata/rollout-app").CombinedOutput()
		if err != nil {
			rolloutAppErr = fmt.Errorf("building testdata/rollout-app: %v\n%s", err, out)
		}
	})
	if rolloutAppErr != nil {
		t.Fatal(rolloutAppErr)
	}
	return rolloutAppPath
}

// TestRolloutAppExampleBuilds keeps the example of docs/rollouts.md
// compiling (and vetted by the build).
func TestRolloutAppExampleBuilds(t *testing.T) {
	t.Parallel()
	buildRolloutApp(t)
}

// freeAddr reserves a loopback port and frees it for a process to take.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// appProc is one running rollout-app.
type appProc struct {
	addr string
	cmd  *exec.Cmd
	logs *syncBuffer
}

// startRolloutApp runs the example service at addr against server url in
// env, sending itself rps checkouts a second of flag.
func startRolloutApp(t *testing.T, addr, url, sdkKey, env, flag string, rps, newErrorRate float64) *appProc {
	t.Helper()
	cmd := exec.Command(buildRolloutApp(t), "-addr", addr, "-env", env, "-flag", flag,
		"-simulate", fmt.Sprint(rps), "-users", "100000", "-old-error-rate", "0.1", "-new-error-rate", fmt.Sprint(newErrorRate))
	cmd.Env = append(cleanEnv(), "FLAGPOLE_URL="+url, "FLAGPOLE_SDK_KEY="+sdkKey)
	p := &appProc{addr: addr, cmd: cmd, logs: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("rollout-app %s (%s) log:\n%s", flag, addr, tail(p.logs.String(), 20))
		}
	})
	eventually(t, 20*time.Second, "rollout-app "+flag+" to listen", func() bool {
		select {
		case <-exited:
			t.Fatalf("rollout-app exited:\n%s", p.logs.String())
		default:
		}
		return strings.Contains(p.logs.String(), "listening on")
	})
	return p
}

// apiJSON sends a request to the server and decodes the answer into out;
// any status other than want fails the test.
func apiJSON(t *testing.T, p *proc, method, path, body string, want int, out any) {
	t.Helper()
	status, data := httpDo(t, method, p.url+path, testAdminKey, body)
	if status != want {
		t.Fatalf("%s %s: %d %s", method, path, status, data)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
}

// sdkKeyFor creates an environment holding doc and an sdk key of it.
func sdkKeyFor(t *testing.T, p *proc, env, doc string) string {
	t.Helper()
	return setupEnv(t, p, env, doc)
}

// ofrepVariants evaluates flag over OFREP for users user-0..n-1 and counts
// the variants served.
func ofrepVariants(t *testing.T, p *proc, key, env, flag string, n int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for i := range n {
		body := fmt.Sprintf(`{"context":{"targetingKey":"user-%d"}}`, i)
		req, _ := http.NewRequest(http.MethodPost, p.url+"/ofrep/v1/evaluate/flags/"+flag, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			Variant string `json:"variant"`
		}
		err = json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("OFREP %s for user-%d: %d %v", flag, i, resp.StatusCode, err)
		}
		out[res.Variant]++
	}
	return out
}

// rolloutFlags are the test's flags: each starts off for everyone, with a
// safe variant for the kill switch.
const rolloutFlags = `{"flags":{
  "good": {"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","metadata":{"safeVariant":"off"}},
  "bad":  {"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","metadata":{"safeVariant":"off"}}
}}`

// rolloutServeArgs are serve's options that make rollouts quick to test.
var rolloutServeArgs = []string{"--analysis-poll", "200ms"}

// auditEntries reads a flag's audit log in env, oldest first.
func auditEntries(t *testing.T, p *proc, env, flag string) []flags.AuditEntry {
	t.Helper()
	var page flags.AuditPage
	apiJSON(t, p, http.MethodGet, "/api/v1/environments/"+env+"/audit?limit=500&flag="+flag, "", 200, &page)
	slices.Reverse(page.Entries)
	return page.Entries
}

// servedPercent is the share of users a flag definition serves variant:
// the weight of its fractional split, else 100 or 0 by the default variant.
func servedPercent(t *testing.T, def json.RawMessage, variant string) float64 {
	t.Helper()
	var f struct {
		DefaultVariant string `json:"defaultVariant"`
		Targeting      struct {
			Fractional []json.RawMessage `json:"fractional"`
		} `json:"targeting"`
	}
	if err := json.Unmarshal(def, &f); err != nil {
		t.Fatalf("flag definition %s: %v", def, err)
	}
	if len(f.Targeting.Fractional) > 0 {
		total, mine := 0.0, 0.0
		for _, raw := range f.Targeting.Fractional {
			var entry []any
			if json.Unmarshal(raw, &entry) != nil || len(entry) != 2 {
				continue // a bucketing expression
			}
			w, _ := entry[1].(float64)
			total += w
			if entry[0] == variant {
				mine += w
			}
		}
		return math.Round(mine/total*10000) / 100
	}
	if f.DefaultVariant == variant {
		return 100
	}
	return 0
}

// rolloutWrites are the percentages the rollout's own writes (audit actor
// "rollout:<id>") set, in order, with the time of each.
func rolloutWrites(t *testing.T, entries []flags.AuditEntry, id, flag, variant string) ([]float64, []time.Time) {
	t.Helper()
	var ps []float64
	var ts []time.Time
	for _, e := range entries {
		if e.Actor != "rollout:"+id {
			continue
		}
		for _, c := range e.Changes {
			if c.Key == flag {
				ps = append(ps, servedPercent(t, c.After, variant))
				ts = append(ts, e.Time)
			}
		}
	}
	return ps, ts
}

// bucketWatch evaluates a flag over OFREP for a fixed set of users, again
// and again, and records every user's variants in order.
type bucketWatch struct {
	mu   sync.Mutex
	seen map[string][]string // user → variants, consecutive repeats dropped
	stop chan struct{}
	done chan struct{}
}

func watchBuckets(t *testing.T, p *proc, key, flag string, users int, every time.Duration) *bucketWatch {
	b := &bucketWatch{seen: map[string][]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for {
			for i := range users {
				user := fmt.Sprintf("user-%d", i)
				body := `{"context":{"targetingKey":"` + user + `"}}`
				req, _ := http.NewRequest(http.MethodPost, p.url+"/ofrep/v1/evaluate/flags/"+flag, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+key)
				req.Header.Set("Content-Type", "application/json")
				resp, err := httpClient.Do(req)
				if err != nil {
					continue
				}
				var res struct{ Variant string }
				_ = json.NewDecoder(resp.Body).Decode(&res)
				resp.Body.Close()
				b.mu.Lock()
				if v := b.seen[user]; res.Variant != "" && (len(v) == 0 || v[len(v)-1] != res.Variant) {
					b.seen[user] = append(v, res.Variant)
				}
				b.mu.Unlock()
			}
			select {
			case <-b.stop:
				return
			case <-time.After(every):
			}
		}
	}()
	t.Cleanup(b.close)
	return b
}

func (b *bucketWatch) close() {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	<-b.done
}

// TestRolloutEndToEnd: the real binary with its rollout controller and
// analysis runner, a real redis-server, a real Prometheus scraping two
// instances of the example service (one per flag), and a signed webhook
// receiver. (a) A healthy new variant ramps 10% → 50% → 100% through two
// analysis gates to succeeded, users only ever moving from off to on; (b)
// a new variant failing 40% of checkouts is rolled back at its first gate:
// everyone gets off again within a second of the verdict, the rollout is
// failed with the analysis evidence, and a signed rollout.failed webhook
// reports it. Then the kill switch turns the healthy flag off everywhere.
func TestRolloutEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real processes, redis-server and prometheus")
	}
	t.Parallel()
	rs := redistest.Start(t)
	goodAddr, badAddr := freeAddr(t), freeAddr(t)
	prom := promtest.Start(t, promtest.Options{Targets: []promtest.Target{{Addr: goodAddr}, {Addr: badAddr}}})
	rcv := &hookReceiver{t: t, ids: map[string]int{}}
	recv := httptest.NewServer(rcv)
	t.Cleanup(recv.Close)
	srv := startServe(t, []string{envAdminKey + "=" + testAdminKey, envPrometheusURL + "=" + prom.URL(),
		"HOOK_SECRET=" + hookSecret, "FLAGPOLE_WEBHOOKS_FILE=" + writeWebhooks(t, recv.URL+"/hook")},
		append([]string{"--redis", rs.URL()}, rolloutServeArgs...)...)
	srv.waitReady()
	key := sdkKeyFor(t, srv, "prod", rolloutFlags)
	srv.cli(testAdminKey, "templates", "apply", writeTemp(t, t.TempDir(), "t.yaml", rolloutTemplate)).expect(t, 0, []string{"created"}, nil)
	startRolloutApp(t, goodAddr, srv.url, key, "prod", "good", 4000, 0.1)
	startRolloutApp(t, badAddr, srv.url, key, "prod", "bad", 4000, 0.4)
	waitScrapes(t, prom, 2)
	start := func(flag string) cliResult {
		return srv.cli(testAdminKey, "rollout", "start", "--env", "prod", "--flag", flag, "--variant", "on", "--from", "off",
			"--steps", "10,50,100", "--step-duration", "1s", "--template", "checkout-errors", "--reason", "e2e "+flag,
			"--watch", "--every", "200ms", "--timeout", "50s", "--progress", "plain")
	}
	rolloutID := func(t *testing.T, out string) string {
		t.Helper()
		f := strings.Fields(out)
		if len(f) < 2 || f[0] != "rollout" {
			t.Fatalf("no rollout ID in %q", out)
		}
		return f[1]
	}

	t.Run("group", func(t *testing.T) {
		t.Run("healthy variant ramps to 100%", func(t *testing.T) {
			t.Parallel()
			buckets := watchBuckets(t, srv, key, "good", 100, 250*time.Millisecond)
			r := start("good")
			buckets.close()
			t.Logf("rollout start --watch:\n%s", r.stdout)
			r.expect(t, 0, []string{"step 2 of 3", "SUCCEEDED: good serves on to 100%"}, nil)
			id := rolloutID(t, r.stdout)
			var ro rolloutJSON
			apiJSON(t, srv, http.MethodGet, "/api/v1/environments/prod/rollouts/"+id, "", 200, &ro)
			if ro.State != rolloutSucceeded || ro.Percent != 100 {
				t.Errorf("rollout %s is %s at %v%%, want succeeded at 100%%", id, ro.State, ro.Percent)
			}
			ps, _ := rolloutWrites(t, auditEntries(t, srv, "prod", "good"), id, "good", "on")
			if !slices.Equal(ps, []float64{10, 50, 100}) {
				t.Errorf("the rollout's flag writes served %v%%, want 10, 50, 100, each once", ps)
			}
			if got := ofrepVariants(t, srv, key, "prod", "good", 200); got["on"] != 200 {
				t.Errorf("after success the flag serves %v, want on for all 200 users", got)
			}
			// Users only ever moved from off to on.
			buckets.mu.Lock()
			defer buckets.mu.Unlock()
			movedEarly := 0
			for user, vs := range buckets.seen {
				switch {
				case slices.Equal(vs, []string{"off", "on"}):
					movedEarly++
				case slices.Equal(vs, []string{"on"}), slices.Equal(vs, []string{"off"}):
				default:
					t.Errorf("%s was served %v; users may only move from off to on", user, vs)
				}
			}
			if movedEarly < 50 {
				t.Errorf("only %d of 100 users were seen moving from off to on", movedEarly)
			}
		})
		t.Run("failing variant is rolled back at the first gate", func(t *testing.T) {
			t.Parallel()
			r := start("bad")
			t.Logf("rollout start --watch:\n%s", r.stdout)
			r.expect(t, 1, []string{"FAILED at 10% (step 1 of 3): bad serves off to everyone", "evidence: analysis "}, nil)
			id := rolloutID(t, r.stdout)
			var ro rolloutJSON
			apiJSON(t, srv, http.MethodGet, "/api/v1/environments/prod/rollouts/"+id, "", 200, &ro)
			var ev struct {
				AnalysisID string `json:"analysisId"`
				Phase      string `json:"phase"`
			}
			_ = json.Unmarshal(ro.Evidence, &ev)
			if ro.State != rolloutFailed || ro.Percent != 0 || ro.Verdict != "fail" || ev.AnalysisID == "" || ev.Phase != "Failed" {
				t.Fatalf("rollout %s: %s at %v%%, verdict %q, evidence %s; want failed at 0%% with the failed analysis", id, ro.State, ro.Percent, ro.Verdict, ro.Evidence)
			}
			var run analysisReply
			apiJSON(t, srv, http.MethodGet, "/api/v1/analyses/"+ev.AnalysisID, "", 200, &run)
			ps, ts := rolloutWrites(t, auditEntries(t, srv, "prod", "bad"), id, "bad", "on")
			if !slices.Equal(ps, []float64{10, 0}) {
				t.Fatalf("the rollout's flag writes served %v%%, want 10 then 0 (the rollback)", ps)
			}
			lag := ts[1].Sub(run.EndedAt)
			t.Logf("verdict at %s, rollback written %v later", run.EndedAt.Format(time.RFC3339Nano), lag)
			if lag < 0 || lag > time.Second {
				t.Errorf("rollback written %v after the verdict; want within a second", lag)
			}
			if got := ofrepVariants(t, srv, key, "prod", "bad", 200); got["off"] != 200 {
				t.Errorf("after the rollback the flag serves %v, want off for all 200 users", got)
			}
			waitUntil(t, 20*time.Second, "a signed rollout.failed webhook", func() bool { return len(rcv.events()["rollout.failed"]) > 0 })
			hook := rcv.events()["rollout.failed"][0]
			var data struct {
				Rollout, Flag, AnalysisID string
				Evidence                  json.RawMessage
			}
			_ = json.Unmarshal(hook.Data, &data)
			if data.Rollout != id || data.Flag != "bad" || data.AnalysisID != ev.AnalysisID || len(data.Evidence) == 0 {
				t.Errorf("rollout.failed webhook data %s; want the rollout, flag and analysis evidence", hook.Data)
			}
		})
	})
	if t.Failed() {
		return
	}
	// The kill switch: the healthy flag, now on, back to its safe variant.
	srv.cli(testAdminKey, "kill", "good", "--reason", "e2e kill").expect(t, 0, []string{"prod off", "flag good killed in 1 environments"}, nil)
	if got := ofrepVariants(t, srv, key, "prod", "good", 50); got["off"] != 50 {
		t.Errorf("after the kill switch the flag serves %v, want off for everyone", got)
	}

	// The binary's /metrics tells the same story: one rollout succeeded, one
	// failed and was rolled back (within a second), none is active.
	fams := scrapeMetrics(t, srv.url)
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{name: "flagpole_rollout_ended_total", labels: map[string]string{"state": "succeeded"}, want: 1},
		{name: "flagpole_rollout_ended_total", labels: map[string]string{"state": "failed"}, want: 1},
		{name: "flagpole_rollout_active", labels: map[string]string{"state": "running"}, want: 0},
	} {
		if got, ok := metricValue(fams, c.name, c.labels); !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if steps, _ := metricValue(fams, "flagpole_rollout_steps_applied_total", map[string]string{"env": "prod"}); steps < 4 {
		t.Errorf("flagpole_rollout_steps_applied_total{env=prod} = %v, want at least 4 (three healthy steps and the failing one's first)", steps)
	}
	var rollbacks uint64
	var slowest float64
	for _, m := range fams["flagpole_rollout_rollback_seconds"].GetMetric() {
		h := m.GetHistogram()
		rollbacks += h.GetSampleCount()
		slowest = h.GetSampleSum()
	}
	if rollbacks != 1 || slowest > 1 {
		t.Errorf("flagpole_rollout_rollback_seconds: %d rollbacks taking %vs in all, want 1 within a second", rollbacks, slowest)
	}
}

// TestRolloutCLIAgainstServer drives every rollout command through the
// real binary against a real server (embedded store; steps held by time
// only, so no Prometheus): the CLI and the API agree on the contract.
func TestRolloutCLIAgainstServer(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real processes")
	}
	t.Parallel()
	srv := startServe(t, []string{envAdminKey + "=" + testAdminKey}, "--data-dir", t.TempDir())
	srv.waitReady()
	key := sdkKeyFor(t, srv, "prod", `{"flags":{
	  "cli":  {"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"},
	  "bare": {"state":"ENABLED","variants":{"a":1,"b":2},"defaultVariant":"a"}}}`)
	cli := func(args ...string) cliResult { return srv.cli(testAdminKey, append(args, "--env", "prod")...) }
	start := func(extra ...string) string {
		t.Helper()
		r := cli(append([]string{"rollout", "start", "--flag", "cli", "--variant", "on", "--from", "off", "--steps", "10,50,100", "--step-duration", "1h", "-o", "json"}, extra...)...)
		r.expect(t, 0, nil, nil)
		var ro rolloutJSON
		mustJSON(t, r.stdout, &ro)
		return ro.ID
	}

	id := start("--reason", "cli e2e")
	cli("rollout", "start", "--flag", "cli", "--variant", "on", "--from", "off", "--steps", "50,100", "--step-duration", "1h").
		expect(t, 1, nil, []string{"HTTP 409"})
	cli("rollout", "status", id).expect(t, 0, []string{"state: running", "progress: [##..................] 10% (step 1 of 3)",
		"> 1 10% 1h -", "  3 100% - -", "started", "cli e2e"}, nil)
	cli("rollout", "list", "--state", "running").expect(t, 0, []string{id + " cli off→on running 1/3 10%"}, nil)
	if got := ofrepVariants(t, srv, key, "prod", "cli", 400); got["on"] < 20 || got["on"] > 60 {
		t.Errorf("at 10%% the flag serves %v to 400 users", got)
	}
	cli("rollout", "pause", "--flag", "cli", "--reason", "look").expect(t, 0, []string{"rollout " + id + " paused: cli is paused at 10% (step 1 of 3)"}, nil)
	cli("rollout", "watch", id, "--progress", "plain").expect(t, 2, []string{"is PAUSED at 10%"}, nil)
	cli("rollout", "resume", id).expect(t, 0, []string{"resumed: cli is running at 10%"}, nil)
	cli("rollout", "resume", id).expect(t, 1, nil, []string{"running", "HTTP 409"})
	cli("rollout", "promote", id).expect(t, 0, []string{"promoted: cli is succeeded at 100% (done)"}, nil)
	cli("rollout", "watch", id, "--progress", "plain").expect(t, 0, []string{"SUCCEEDED: cli serves on to 100%"}, nil)
	if got := ofrepVariants(t, srv, key, "prod", "cli", 50); got["on"] != 50 {
		t.Errorf("after promote the flag serves %v", got)
	}

	// A second rollout, back from on to off, aborted by flag.
	r := cli("rollout", "start", "--flag", "cli", "--variant", "off", "--from", "on", "--steps", "50,100", "--step-duration", "1h")
	r.expect(t, 0, []string{"started in prod: cli on → off, [50%] → 100%"}, nil)
	cli("rollout", "abort", "--flag", "cli").expect(t, 0, []string{"aborted: cli is aborted at 0%"}, nil)
	cli("rollout", "watch", "--flag", "cli", "--progress", "plain").expect(t, 1, []string{"ABORTED at 50% (step 1 of 2): cli serves on to everyone"}, nil)
	cli("rollout", "retry", "--flag", "cli").expect(t, 1, nil, []string{"flag cli has no failed or paused rollout in prod"})

	// Scheduled, then killed: the kill switch aborts it and turns the flag
	// to the rollout's old variant.
	sid := start("--start-at", "+1h")
	cli("rollout", "status", sid).expect(t, 0, []string{"state: scheduled", "starts: "}, nil)
	srv.cli(testAdminKey, "kill", "cli").expect(t, 0, []string{"prod off", sid, "flag cli killed in 1 environments"}, nil)
	cli("rollout", "status", sid).expect(t, 0, []string{"state: aborted"}, nil)
	srv.cli(testAdminKey, "kill", "bare").expect(t, 1, nil, []string{"variant"})
	srv.cli(testAdminKey, "kill", "bare", "--variant", "b").expect(t, 0, []string{"prod b"}, nil)
}
