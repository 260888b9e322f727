package promtest

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/flagpole/flagpole/canary/prometheus/workload"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{name: "negative interval", opts: Options{ScrapeInterval: -time.Second}, want: "Options.ScrapeInterval"},
		{name: "sub-millisecond interval", opts: Options{ScrapeInterval: 1500 * time.Microsecond}, want: "Options.ScrapeInterval"},
		{name: "negative start timeout", opts: Options{StartTimeout: -1}, want: "Options.StartTimeout"},
		{name: "address without port", opts: Options{Targets: []Target{{Addr: "127.0.0.1"}}}, want: "Targets[0].Addr"},
		{name: "relative metrics path", opts: Options{Targets: []Target{{Addr: "127.0.0.1:1", MetricsPath: "metrics"}}}, want: "Targets[0].MetricsPath"},
		{name: "two paths in one job", opts: Options{Targets: []Target{{Addr: "127.0.0.1:1"}, {Addr: "127.0.0.1:2", MetricsPath: "/other"}}}, want: "Targets[1].MetricsPath"},
		{name: "bad label name", opts: Options{Targets: []Target{{Addr: "127.0.0.1:1", Labels: map[string]string{"a-b": "x"}}}}, want: "Targets[0].Labels"},
		{name: "job label", opts: Options{Targets: []Target{{Addr: "127.0.0.1:1", Labels: map[string]string{"job": "x"}}}}, want: "set by Job and Addr"},
		{name: "reserved label name", opts: Options{Targets: []Target{{Addr: "127.0.0.1:1", Labels: map[string]string{"__address__": "x"}}}}, want: "Targets[0].Labels"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := validate(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("validate = %v, want an error naming %s", err, tc.want)
			}
		})
	}
	if err := validate(Options{Targets: []Target{{Addr: "127.0.0.1:1"}, {Addr: "[::1]:2", Job: "b", MetricsPath: "/m", Labels: map[string]string{"team": "x"}}}}); err != nil {
		t.Errorf("validate(valid) = %v", err)
	}
}

func TestConfigFile(t *testing.T) {
	s := &Server{dir: t.TempDir(), interval: 1500 * time.Millisecond, targets: normalize([]Target{
		{Addr: "127.0.0.1:1"},
		{Addr: "127.0.0.1:2", Job: "other", MetricsPath: "/m", Labels: map[string]string{"team": "x"}},
		{Addr: "127.0.0.1:3"},
	})}
	if err := s.writeConfig(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(s.configPath())
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Global        map[string]string `json:"global"`
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			MetricsPath   string `json:"metrics_path"`
			StaticConfigs []struct {
				Targets []string          `json:"targets"`
				Labels  map[string]string `json:"labels"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("config is not JSON (hence not YAML): %v\n%s", err, raw)
	}
	if cfg.Global["scrape_interval"] != "1s500ms" || cfg.Global["scrape_timeout"] != "1s500ms" {
		t.Errorf("global = %v, want 1s500ms interval and timeout", cfg.Global)
	}
	if len(cfg.ScrapeConfigs) != 2 {
		t.Fatalf("%d scrape configs, want 2 jobs:\n%s", len(cfg.ScrapeConfigs), raw)
	}
	w, o := cfg.ScrapeConfigs[0], cfg.ScrapeConfigs[1]
	if w.JobName != DefaultJob || w.MetricsPath != "/metrics" || len(w.StaticConfigs) != 2 || w.StaticConfigs[1].Targets[0] != "127.0.0.1:3" {
		t.Errorf("default job = %+v", w)
	}
	if o.JobName != "other" || o.MetricsPath != "/m" || o.StaticConfigs[0].Labels["team"] != "x" {
		t.Errorf("other job = %+v", o)
	}
}

// TestMissingBinary runs TestMissingBinaryHelper in a child process, with
// and without CI=true.
func TestMissingBinary(t *testing.T) {
	tests := []struct {
		name     string
		ci       string
		wantFail bool
		want     string
	}{
		{name: "skips outside CI", ci: "", wantFail: false, want: "--- SKIP: TestMissingBinaryHelper"},
		{name: "fails in CI", ci: "true", wantFail: true, want: "make deps"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestMissingBinaryHelper$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), "PROMTEST_HELPER=1", "CI="+tc.ci, "PROMETHEUS_BIN=/nonexistent/prometheus")
			out, err := cmd.CombinedOutput()
			if failed := err != nil; failed != tc.wantFail {
				t.Errorf("child failed = %v (%v), want %v; output:\n%s", failed, err, tc.wantFail, out)
			}
			if !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "/nonexistent/prometheus") {
				t.Errorf("child output does not contain %q and the binary path:\n%s", tc.want, out)
			}
			if strings.Contains(string(out), "reached") {
				t.Errorf("Start returned without a binary:\n%s", out)
			}
		})
	}
}

func TestMissingBinaryHelper(t *testing.T) {
	if os.Getenv("PROMTEST_HELPER") != "1" {
		t.Skip("run by TestMissingBinary")
	}
	Start(t, Options{})
	t.Log("reached")
}

func TestLifecycle(t *testing.T) {
	a := workload.Start(t, workload.Options{})
	b := workload.Start(t, workload.Options{Arms: []string{"solo"}})
	p := Start(t, Options{Targets: []Target{{Addr: a.Addr()}}})
	ctx := t.Context()
	wait := func(t *testing.T, n int, within time.Duration) error {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		return p.WaitScrapes(wctx, n)
	}
	upOf := func(t *testing.T, selector string, at time.Time) model.Vector {
		t.Helper()
		v, _, _, err := p.API().Query(ctx, "up"+selector, at)
		if err != nil {
			t.Fatal(err)
		}
		return v.(model.Vector)
	}

	if err := wait(t, 2, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	scraped := time.Now()
	if v := upOf(t, `{instance="`+a.Addr()+`",job="workload"}`, scraped); len(v) != 1 || v[0].Value != 1 {
		t.Fatalf("up = %v, want 1 for the workload", v)
	}
	url := p.URL()
	if !strings.HasPrefix(url, "http://127.0.0.1:") || p.Addr() != strings.TrimPrefix(url, "http://") {
		t.Errorf("URL %q, Addr %q: want a loopback URL and its host:port", url, p.Addr())
	}

	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if p.Running() {
		t.Error("Running() = true after Stop")
	}
	if resp, err := http.Get(url + "/-/ready"); err == nil {
		resp.Body.Close()
		t.Errorf("GET /-/ready answered %d after Stop", resp.StatusCode)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("second Stop = %v, want nil", err)
	}

	if err := p.Restart(); err != nil {
		t.Fatal(err)
	}
	if p.URL() != url || !p.Running() {
		t.Errorf("after Restart URL = %q (was %q), running %v", p.URL(), url, p.Running())
	}
	if v := upOf(t, `{instance="`+a.Addr()+`"}`, scraped); len(v) != 1 || v[0].Value != 1 {
		t.Errorf("after Restart, up at %v = %v, want the old sample (same data)", scraped, v)
	}

	other := Target{Addr: b.Addr(), Job: "other", Labels: map[string]string{"team": "x"}}
	if err := p.SetTargets(Target{Addr: a.Addr()}, other); err != nil {
		t.Fatal(err)
	}
	if got := p.Targets(); len(got) != 2 || got[0].Job != DefaultJob || got[1].MetricsPath != "/metrics" {
		t.Errorf("Targets() = %+v, want defaults filled in", got)
	}
	if err := wait(t, 1, 20*time.Second); err != nil {
		t.Fatalf("after Restart and SetTargets: %v", err)
	}
	if v := upOf(t, `{instance="`+b.Addr()+`",job="other",team="x"}`, time.Time{}); len(v) != 1 || v[0].Value != 1 {
		t.Errorf("up of the added target = %v, want 1 with its labels", v)
	}

	if err := p.SetTargets(Target{Addr: "nope"}); err == nil || !strings.Contains(err.Error(), "Targets[0].Addr") {
		t.Errorf("SetTargets(bad) = %v, want an error naming Targets[0].Addr", err)
	}
	if len(p.Targets()) != 2 {
		t.Errorf("a rejected SetTargets changed the targets to %+v", p.Targets())
	}
	if err := p.WaitScrapes(ctx, 0); err == nil {
		t.Error("WaitScrapes(0) = nil, want an error")
	}

	// A target that never answers keeps WaitScrapes waiting until ctx ends.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	if err := p.SetTargets(Target{Addr: a.Addr()}, Target{Addr: deadAddr}); err != nil {
		t.Fatal(err)
	}
	err = wait(t, 1, 2*time.Second)
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") || !strings.Contains(err.Error(), "waiting for 1 scrapes of 2 targets") {
		t.Errorf("WaitScrapes with a dead target = %v, want a deadline error", err)
	}
	if !strings.Contains(p.Log(), "Completed loading of configuration file") {
		t.Error("Log() does not hold Prometheus's log")
	}
}
