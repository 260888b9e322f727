package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary/prometheus/promtest"
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
alpha: 0.01
metrics:
  - name: error-rate
    kind: ratio
    numerator: sum(increase(checkout_errors_total{ {{ .scope }} }[{{ .window }}]))
    denominator: sum(increase(checkout_requests_total{ {{ .scope }} }[{{ .window }}]))
    margin: {relative: 0.5}
    critical: true
schedule:
  interval: 2s
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
		"-simulate", fmt.Sprint(rps), "-users", "5000", "-old-error-rate", "0.1", "-new-error-rate", fmt.Sprint(newErrorRate))
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

// rolloutStack is a flagpole server with the analysis runner on a real
// Redis and Prometheus.
type rolloutStack struct {
	rs   *redistest.Server
	prom *promtest.Server
	srv  *proc
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

// readLines returns the lines of s.
func readLines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

var _ = context.Background
var _ = os.Getenv
