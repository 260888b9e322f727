package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/flagpole/flagpole/api/ofrep"
	"github.com/flagpole/flagpole/redis/redistest"
	"github.com/flagpole/flagpole/sdk"
)

// Heavy measurements of change streams against the real binary. They are
// opt-in: the propagation figures are a benchmark, the idle-connection
// memory test runs only with FLAGPOLE_HEAVY=1. See docs/benchmarks.md,
// "Streams and SDK".

// loadFlags is a flag set of n flags: a third static booleans, a third
// with an `in` rule, a third fractional; "f0" is the one changed.
func loadFlags(n int) string {
	var sb strings.Builder
	sb.WriteString(`{"flags":{`)
	for i := range n {
		if i > 0 {
			sb.WriteByte(',')
		}
		switch i % 3 {
		case 0:
			fmt.Fprintf(&sb, `"f%d":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}`, i)
		case 1:
			fmt.Fprintf(&sb, `"f%d":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"in":[{"var":"email"},["a@x.io","b@x.io"]]},"on",null]}}`, i)
		default:
			fmt.Fprintf(&sb, `"f%d":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"fractional":[["on",10],["off",90]]}}`, i)
		}
	}
	sb.WriteString(`}}`)
	return sb.String()
}

// raiseFileLimit lets this process (and the servers it starts, which
// inherit it) hold at least n descriptors, or skips the test.
func raiseFileLimit(tb testing.TB, n uint64) {
	tb.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		tb.Skipf("getrlimit: %v", err)
	}
	if rl.Cur >= n {
		return
	}
	if rl.Max < n {
		tb.Skipf("the open-file limit is %d (hard); %d are needed", rl.Max, n)
	}
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		tb.Skipf("setrlimit: %v", err)
	}
}

// BenchmarkStreamPropagation measures how long a flag change made through
// the API of a real `flagpole serve` (on redis-server) takes to reach 1,000
// in-process providers in this process, each on its own stream: from
// sending the PATCH to each provider's CONFIGURATION_CHANGED. One
// iteration is one change reaching every provider.
//
//	go test -run '^$' -bench StreamPropagation -benchtime 20x ./cmd/flagpole/
func BenchmarkStreamPropagation(b *testing.B) {
	if raceEnabled {
		b.Skip("a measurement: run it without -race")
	}
	providers := 1000
	if v, err := strconv.Atoi(os.Getenv("FLAGPOLE_BENCH_PROVIDERS")); err == nil && v > 0 {
		providers = v
	}
	for _, nflags := range []int{2, 10, 100} {
		b.Run(fmt.Sprintf("providers=%d/flags=%d", providers, nflags), func(b *testing.B) {
			benchPropagation(b, providers, nflags)
		})
	}
}

func benchPropagation(b *testing.B, providers, nflags int) {
	raiseFileLimit(b, uint64(3*providers+1000))
	rs := redistest.Start(b)
	srv, pid := serveTB(b, rs)
	key := setupEnvTB(b, srv, "load", loadFlags(nflags))

	ps := make([]*sdk.Provider, providers)
	var wg sync.WaitGroup
	for i := range ps {
		ps[i] = sdk.NewProvider(sdk.WithURL(srv), sdk.WithSDKKey(key), sdk.WithEnvironment("load"),
			sdk.WithExposureWindow(0), sdk.WithInitTimeout(2*time.Minute), sdk.WithReconnectBackoff(50*time.Millisecond, time.Second))
		wg.Go(func() {
			if err := ps[i].Init(openfeature.EvaluationContext{}); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	var (
		mu        sync.Mutex
		sent      time.Time
		latencies []time.Duration
		arrived   = make(chan struct{}, providers)
		stop      = make(chan struct{})
		drains    sync.WaitGroup
	)
	for _, p := range ps {
		drains.Go(func() {
			for {
				select {
				case ev := <-p.EventChannel():
					if ev.EventType == openfeature.ProviderConfigChange {
						now := time.Now()
						mu.Lock()
						latencies = append(latencies, now.Sub(sent))
						mu.Unlock()
						arrived <- struct{}{}
					}
				case <-stop:
					return
				}
			}
		})
	}
	defer func() {
		close(stop)
		drains.Wait()
		var sd sync.WaitGroup
		for _, p := range ps {
			sd.Go(p.Shutdown)
		}
		sd.Wait()
	}()

	on := false
	serverCPU, clientCPU := procCPU(b, pid), selfCPU()
	b.ResetTimer()
	for b.Loop() {
		on = !on
		mu.Lock()
		sent = time.Now()
		mu.Unlock()
		variant := map[bool]string{true: "on", false: "off"}[on]
		status, body, err := tryCall(http.MethodPatch, srv+"/api/v1/environments/load/flags/f0", testAdminKey, `{"defaultVariant":"`+variant+`"}`)
		if err != nil || status != 200 {
			b.Fatalf("PATCH: %d %v %s", status, err, body)
		}
		for range providers {
			select {
			case <-arrived:
			case <-time.After(time.Minute):
				b.Fatal("a change did not reach every provider within a minute")
			}
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64((procCPU(b, pid)-serverCPU).Microseconds())/1000/n, "server-cpu-ms/op")
	b.ReportMetric(float64((selfCPU()-clientCPU).Microseconds())/1000/n, "client-cpu-ms/op")
	slices.Sort(latencies)
	q := func(f float64) float64 {
		return float64(latencies[int(f*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0), "min-ms")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
}

// BenchmarkStreamFanout is BenchmarkStreamPropagation with bare SSE
// readers instead of providers (each only scans for the change event), so
// that the figures are the server's fan-out rather than the 1,000
// providers' parsing and compiling in this process.
//
//	go test -run '^$' -bench StreamFanout -benchtime 20x ./cmd/flagpole/
func BenchmarkStreamFanout(b *testing.B) {
	if raceEnabled {
		b.Skip("a measurement: run it without -race")
	}
	for _, readers := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("readers=%d/flags=10", readers), func(b *testing.B) {
			raiseFileLimit(b, uint64(2*readers+1000))
			rs := redistest.Start(b)
			srv, pid := serveTB(b, rs)
			key := setupEnvTB(b, srv, "load", loadFlags(10))
			addr := strings.TrimPrefix(srv, "http://")
			var (
				mu        sync.Mutex
				sent      time.Time
				latencies []time.Duration
				arrived   = make(chan struct{}, readers)
				readersWG sync.WaitGroup
				conns     = make([]net.Conn, readers)
			)
			var wg sync.WaitGroup
			sem := make(chan struct{}, 64)
			for i := range conns {
				sem <- struct{}{}
				wg.Go(func() {
					defer func() { <-sem }()
					c, br, err := dialStream(addr, key)
					if err != nil {
						b.Error(err)
						return
					}
					conns[i] = c
					readersWG.Go(func() {
						for {
							line, err := br.ReadSlice('\n')
							if errors.Is(err, bufio.ErrBufferFull) {
								continue // the rest of a long data line
							}
							if err != nil {
								return
							}
							if string(line) == "event: change\n" {
								now := time.Now()
								mu.Lock()
								latencies = append(latencies, now.Sub(sent))
								mu.Unlock()
								arrived <- struct{}{}
							}
						}
					})
				})
			}
			wg.Wait()
			defer func() {
				for _, c := range conns {
					if c != nil {
						c.Close()
					}
				}
				readersWG.Wait()
			}()
			if b.Failed() {
				return
			}
			on := false
			serverCPU := procCPU(b, pid)
			b.ResetTimer()
			for b.Loop() {
				on = !on
				mu.Lock()
				sent = time.Now()
				mu.Unlock()
				variant := map[bool]string{true: "on", false: "off"}[on]
				if st, body, err := tryCall(http.MethodPatch, srv+"/api/v1/environments/load/flags/f0", testAdminKey, `{"defaultVariant":"`+variant+`"}`); err != nil || st != 200 {
					b.Fatalf("PATCH: %d %v %s", st, err, body)
				}
				for range readers {
					select {
					case <-arrived:
					case <-time.After(time.Minute):
						b.Fatal("a change did not reach every reader within a minute")
					}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((procCPU(b, pid)-serverCPU).Microseconds())/1000/float64(b.N), "server-cpu-ms/op")
			slices.Sort(latencies)
			q := func(f float64) float64 {
				return float64(latencies[int(f*float64(len(latencies)-1))].Microseconds()) / 1000
			}
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(q(1), "max-ms")
		})
	}
}

// dialStream opens env "load"'s change stream over a raw connection and
// reads up to the end of the snapshot event.
func dialStream(addr, key string) (net.Conn, *bufio.Reader, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nAccept: text/event-stream\r\n\r\n", ofrep.StreamPath("load"), addr, key)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReaderSize(c, 1024)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		c.Close()
		return nil, nil, fmt.Errorf("stream: %q %v", status, err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, nil, fmt.Errorf("reading the snapshot: %v", err)
		}
		if strings.HasPrefix(line, "data:") {
			break
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, br, nil
}

// serveTB starts `flagpole serve` on rs for a benchmark (startServe is for
// tests) and returns its URL once it is ready; it is killed at the end.
func serveTB(tb testing.TB, rs *redistest.Server) (url string, pid int) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a free port
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(binPath, "serve", "--addr", addr, "--log-format", "json", "--log-level", "warn", "--redis", rs.URL())
	cmd.Env = append(cleanEnv(), envAdminKey+"="+testAdminKey)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if tb.Failed() {
			tb.Logf("server log:\n%s", tail(logs.String(), 40))
		}
	})
	url = "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, _, err := tryCall(http.MethodGet, url+"/readyz", "", ""); err == nil && st == 200 {
			return url, cmd.Process.Pid
		}
		select {
		case <-exited:
			tb.Fatalf("flagpole serve exited:\n%s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("flagpole serve not ready:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// setupEnvTB creates env holding doc and returns a new sdk key of it.
func setupEnvTB(tb testing.TB, url, env, doc string) string {
	tb.Helper()
	if st, b, err := tryCall(http.MethodPost, url+"/api/v1/environments", testAdminKey, fmt.Sprintf(`{"name":%q,"flags":%s}`, env, doc)); err != nil || st != 201 {
		tb.Fatalf("creating %s: %d %v %s", env, st, err, b)
	}
	st, b, err := tryCall(http.MethodPost, url+"/api/v1/keys", testAdminKey, fmt.Sprintf(`{"name":"sdk","role":"sdk","environments":[%q]}`, env))
	var key struct{ Secret string }
	if err != nil || st != 201 || json.Unmarshal(b, &key) != nil || key.Secret == "" {
		tb.Fatalf("creating an sdk key: %d %v %s", st, err, b)
	}
	return key.Secret
}

// TestIdleStreamsMemory opens FLAGPOLE_HEAVY_CONNS (default 10,000) idle
// change streams to a real `flagpole serve` on redis-server and reports the
// server process's resident memory (VmRSS from /proc) before and after.
// Target: ≤ 500 MB for 10,000. Opt-in: FLAGPOLE_HEAVY=1.
//
//	FLAGPOLE_HEAVY=1 go test -count=1 -run TestIdleStreamsMemory -v ./cmd/flagpole/
func TestIdleStreamsMemory(t *testing.T) {
	if os.Getenv("FLAGPOLE_HEAVY") != "1" {
		t.Skip("heavy: set FLAGPOLE_HEAVY=1")
	}
	if raceEnabled {
		t.Skip("a measurement: run it without -race (the race detector multiplies memory)")
	}
	conns := 10_000
	if v, err := strconv.Atoi(os.Getenv("FLAGPOLE_HEAVY_CONNS")); err == nil && v > 0 {
		conns = v
	}
	raiseFileLimit(t, uint64(conns+1000))
	rs := redistest.Start(t)
	srv := flagpoleOn(t, rs, "")
	key := setupEnv(t, srv, "load", loadFlags(10))
	pid := srv.cmd.Process.Pid
	addr := strings.TrimPrefix(srv.url, "http://")
	// Warm up: one stream, so that baseline includes the loaded set, the
	// hub and the key cache.
	warm := openIdleStream(t, addr, key)
	warm.Close()
	time.Sleep(200 * time.Millisecond)
	before := rssOf(t, pid)

	open := make([]net.Conn, conns)
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range open {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			open[i] = openIdleStream(t, addr, key)
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range open {
			if c != nil {
				c.Close()
			}
		}
	}()
	if t.Failed() {
		return
	}
	opened := time.Since(start)
	eventually(t, time.Minute, "every stream counted by the server", func() bool {
		return subscribers(t, srv.url) == conns
	})
	time.Sleep(2 * time.Second) // let the server settle (GC, connection goroutines parked)
	after := rssOf(t, pid)
	per := float64(after-before) / float64(conns)
	t.Logf("%d idle streams opened in %s; server VmRSS %.1f MB before, %.1f MB after: %.1f KB per stream",
		conns, opened.Round(time.Millisecond), float64(before)/1e6, float64(after)/1e6, per/1e3)
	// The target is 500 MB for 10,000 streams; for other counts, its share.
	if budget := int64(500e6) * int64(conns) / 10_000; after > budget {
		t.Errorf("server VmRSS %.1f MB with %d streams, want ≤ %.1f MB", float64(after)/1e6, conns, float64(budget)/1e6)
	}
	if n := runtime.NumGoroutine(); n > conns/2 {
		t.Logf("note: this test process runs %d goroutines", n)
	}
}

// openIdleStream opens one change stream, reads the response head and the
// snapshot, and leaves the connection unread.
func openIdleStream(t *testing.T, addr, key string) net.Conn {
	c, _, err := dialStream(addr, key)
	if err != nil {
		t.Error(err)
		return nil
	}
	return c
}

// procCPU reads a process's CPU time (user + system) from /proc.
func procCPU(tb testing.TB, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Skipf("reading /proc: %v", err)
	}
	// Fields after the command name (which may hold spaces): state is
	// field 3, utime 14 and stime 15, in clock ticks (100 per second).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// selfCPU is this process's CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rssOf reads a process's resident set size, in bytes, from /proc.
func rssOf(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("reading /proc: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb * 1024
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// subscribers reads flagpole_stream_subscribers from the server's /metrics.
func subscribers(t *testing.T, base string) int {
	_, body, err := tryCall(http.MethodGet, base+"/metrics", "", "")
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "flagpole_stream_subscribers "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	return -1
}
