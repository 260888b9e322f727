package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary/prometheus/promtest"
	"github.com/flagpole/flagpole/redis/redistest"
)

// crashServeArgs make replicas give up a dead replica's leases quickly.
var crashServeArgs = []string{"--analysis-poll", "200ms", "--analysis-lease-ttl", "2s"}

// lastRolloutLog returns the time of the latest line p's rollout
// controller logged about rollout id (a change it made, with its lease
// owner), and the line; ok is false when there is none.
func lastRolloutLog(p *proc, id string) (at time.Time, line map[string]any, ok bool) {
	sc := bufio.NewScanner(strings.NewReader(p.logs.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l map[string]any
		if json.Unmarshal(sc.Bytes(), &l) != nil || l["rollout"] != id || l["owner"] == nil {
			continue
		}
		if ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(l["time"])); err == nil && !ts.Before(at) {
			at, line, ok = ts, l, true
		}
	}
	return at, line, ok
}

// getRollout reads a rollout through p.
func getRollout(t *testing.T, p *proc, env, id string) rolloutJSON {
	t.Helper()
	var ro rolloutJSON
	apiJSON(t, p, http.MethodGet, "/api/v1/environments/"+env+"/rollouts/"+id, "", 200, &ro)
	return ro
}

// stepEvents lists the percentages of the history's step changes
// (started, step), in order.
func stepEvents(ro rolloutJSON) []float64 {
	var out []float64
	for _, e := range ro.History {
		if e.Event == "started" || e.Event == "step" {
			out = append(out, e.Percent)
		}
	}
	return out
}

// TestRolloutCrash: two `flagpole serve` replicas on one redis-server. In
// the middle of step 1 (its analysis gate running), the replica driving the
// rollout (the one whose log last spoke of it: the controller logs every
// change with its lease owner) is killed with SIGKILL; the other takes the
// rollout over when the lease lapses and carries on at the same step. In
// the middle of step 3 the survivor, now the only replica and so the
// driver, is killed too, and a new replica finishes the rollout from step
// 3. The flag's audit log holds each step's write exactly once, the history
// each step once, and each step one analysis run (the new driver
// finds the run its predecessor started).
func TestRolloutCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real processes, redis-server and prometheus")
	}
	t.Parallel()
	rs := redistest.Start(t)
	appAddr := freeAddr(t)
	prom := promtest.Start(t, promtest.Options{Targets: []promtest.Target{{Addr: appAddr}}})
	env := []string{envAdminKey + "=" + testAdminKey, envPrometheusURL + "=" + prom.URL(), envRolloutLeaseTTL + "=2s", envRolloutPoll + "=100ms"}
	args := append([]string{"--redis", rs.URL()}, crashServeArgs...)
	a := startServe(t, env, args...)
	b := startServe(t, env, args...)
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range []*proc{a, b} {
				t.Logf("%s's rollout and analysis log:\n%s", p.url, notRequests(p))
			}
		}
	})
	a.waitReady()
	b.waitReady()
	lb := &frontDoor{}
	lb.set(a, b)
	front := httptest.NewServer(lb)
	t.Cleanup(front.Close)
	key := sdkKeyFor(t, a, "prod", `{"flags":{"crash":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}}}`)
	a.cli(testAdminKey, "templates", "apply", writeTemp(t, t.TempDir(), "t.yaml", rolloutTemplate)).expect(t, 0, nil, nil)
	startRolloutApp(t, appAddr, front.URL, key, "prod", "crash", 4000, 0.1)
	waitScrapes(t, prom, 2)

	r := a.cli(testAdminKey, "rollout", "start", "--env", "prod", "--flag", "crash", "--variant", "on", "--from", "off",
		"--steps", "20,50,80,100", "--step-duration", "2s", "--template", "checkout-errors", "-o", "json")
	r.expect(t, 0, nil, nil)
	var started rolloutJSON
	mustJSON(t, r.stdout, &started)
	id := started.ID

	// Mid step 1: its analysis is running, under the driver's lease.
	waitUntil(t, 20*time.Second, "a controller to start step 1's analysis", func() bool {
		_, la, okA := lastRolloutLog(a, id)
		_, lb, okB := lastRolloutLog(b, id)
		return (okA && la["msg"] == "rollout analysis") || (okB && lb["msg"] == "rollout analysis")
	})
	atA, lineA, okA := lastRolloutLog(a, id)
	atB, lineB, okB := lastRolloutLog(b, id)
	if !okA && !okB {
		t.Fatalf("neither replica logged anything about rollout %s", id)
	}
	driver, survivor, line := a, b, lineA
	if !okA || (okB && atB.After(atA)) {
		driver, survivor, line = b, a, lineB
	}
	before := getRollout(t, survivor, "prod", id)
	if before.Step != 0 || before.State != rolloutRunning {
		t.Fatalf("before the kill the rollout is %s at step %d", before.State, before.Step+1)
	}
	t.Logf("killing the driver %s (rollout controller %v) in step 1, analysis %s running", driver.url, line["owner"], before.AnalysisID)
	driver.stopWith(syscall.SIGKILL)
	killed := time.Now()

	// The survivor takes over at the same step and moves on.
	waitUntil(t, 30*time.Second, "the survivor to move the rollout past step 1", func() bool {
		return getRollout(t, survivor, "prod", id).Step >= 1
	})
	if at, _, ok := lastRolloutLog(survivor, id); !ok || at.Before(killed) {
		t.Errorf("the survivor did not log driving rollout %s after the kill", id)
	}
	t.Logf("the survivor took step 1 over within %v", time.Since(killed).Round(100*time.Millisecond))

	// Mid step 3 (80%, analysis running): the survivor dies too; a new
	// replica finishes.
	waitUntil(t, 30*time.Second, "step 3's analysis to start", func() bool {
		ro := getRollout(t, survivor, "prod", id)
		return ro.Step == 2 && ro.AnalysisID != ""
	})
	survivor.stopWith(syscall.SIGKILL)
	c := startServe(t, env, args...)
	c.waitReady()
	lb.set(c)
	mid := getRollout(t, c, "prod", id)
	if mid.Step != 2 || mid.State != rolloutRunning {
		t.Fatalf("after both kills the rollout is %s at step %d, want running at step 3", mid.State, mid.Step+1)
	}
	waitUntil(t, 40*time.Second, "the new replica to finish the rollout", func() bool {
		return rolloutEnded(getRollout(t, c, "prod", id).State)
	})

	final := getRollout(t, c, "prod", id)
	if final.State != rolloutSucceeded || final.Percent != 100 {
		t.Fatalf("rollout %s ended %s at %v%% (%s); want succeeded at 100%%", id, final.State, final.Percent, final.Reason)
	}
	if got := stepEvents(final); !slices.Equal(got, []float64{20, 50, 80, 100}) {
		t.Errorf("history steps %v; want 20, 50, 80, 100 once each", got)
	}
	ps, _ := rolloutWrites(t, auditEntries(t, c, "prod", "crash"), id, "crash", "on")
	if !slices.Equal(ps, []float64{20, 50, 80, 100}) {
		t.Errorf("the flag's audit log has the rollout's writes %v; want 20, 50, 80, 100, each exactly once", ps)
	}
	var runs struct {
		Analyses []struct {
			ID    string `json:"id"`
			Phase string `json:"phase"`
		} `json:"analyses"`
	}
	apiJSON(t, c, http.MethodGet, "/api/v1/analyses?template=checkout-errors&limit=100", "", 200, &runs)
	perStep := map[int][]string{}
	for _, x := range runs.Analyses {
		var step, attempt int
		if _, err := fmt.Sscanf(strings.TrimPrefix(x.ID, id), "-s%d-a%d", &step, &attempt); err != nil {
			t.Errorf("analysis %s is not one of rollout %s's", x.ID, id)
			continue
		}
		perStep[step] = append(perStep[step], x.ID+" "+x.Phase)
	}
	for step := 1; step <= 3; step++ {
		if rs := perStep[step]; len(rs) != 1 || !strings.HasSuffix(rs[0], " Successful") {
			t.Errorf("step %d's analysis runs %q; want exactly one, Successful (the new driver finds the run its predecessor started)", step, rs)
		}
	}
}

// notRequests is p's log without the request lines.
func notRequests(p *proc) string {
	var b strings.Builder
	for _, l := range strings.Split(p.logs.String(), "\n") {
		if !strings.Contains(l, `"msg":"request"`) {
			b.WriteString(l + "\n")
		}
	}
	return tail(b.String(), 80)
}

// frontDoor is the load balancer in front of the replicas: it sends each
// request to the first replica still running, so that the example
// service's provider reconnects to a live one, as behind a real balancer.
type frontDoor struct {
	mu       sync.Mutex
	replicas []*proc
}

func (f *frontDoor) set(ps ...*proc) {
	f.mu.Lock()
	f.replicas = ps
	f.mu.Unlock()
}

func (f *frontDoor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	var target *proc
	for _, p := range f.replicas {
		select {
		case <-p.exited:
		default:
			if target == nil {
				target = p
			}
		}
	}
	f.mu.Unlock()
	if target == nil {
		http.Error(w, "no replica", http.StatusBadGateway)
		return
	}
	u, _ := url.Parse(target.url)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1                    // change streams
	rp.ErrorLog = log.New(io.Discard, "", 0) // streams cut by a killed replica
	rp.ServeHTTP(w, r)
}
