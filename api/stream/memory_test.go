package stream

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The memory test holds many idle streams open and measures what the
// server process spends on each. The clients run in a child process (this
// test binary re-executed as TestDialHelper), so that their memory and file
// descriptors are not counted and 10,000 connections fit the fd limit.
const (
	dialAddrEnv  = "FLAGPOLE_STREAM_DIAL_ADDR"
	dialCountEnv = "FLAGPOLE_STREAM_DIAL_COUNT"
	// connsEnv sets the number of connections; the default keeps the test
	// quick. The figure in docs/benchmarks.md uses 10000.
	connsEnv = "FLAGPOLE_STREAM_CONNS"
	// budgetPerConn is the target: 10,000 idle streams in 500 MB.
	budgetPerConn = 500 << 20 / 10_000
)

// TestDialHelper is the child process: it opens the streams, says
// "ready", and holds them until its stdin closes. It does nothing in a
// normal test run.
func TestDialHelper(t *testing.T) {
	addr := os.Getenv(dialAddrEnv)
	if addr == "" {
		t.Skip("only runs as the memory test's client process")
	}
	n, _ := strconv.Atoi(os.Getenv(dialCountEnv))
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(1)
		}
		if _, err := fmt.Fprintf(c, "GET /api/v1/environments/prod/stream HTTP/1.1\r\nHost: flagpole\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
			fmt.Println("write:", err)
			os.Exit(1)
		}
		conns = append(conns, c)
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // EOF when the parent is done
	for _, c := range conns {
		c.Close()
	}
	os.Exit(0)
}

func TestIdleStreamMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens many connections")
	}
	n := 1000
	if s := os.Getenv(connsEnv); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			t.Fatalf("%s=%q: want a positive number", connsEnv, s)
		}
	}
	h, _ := newTestHub(t, Options{})
	fs := &fakeServer{}
	fs.set(1, `"e1"`, docV1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.Serve(w, r, "prod", fs.current)
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	before := measure()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDialHelper$")
	cmd.Env = append(os.Environ(), dialAddrEnv+"="+ln.Addr().String(), dialCountEnv+"="+strconv.Itoa(n))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("client process: %q, %v", line, err)
	}
	deadline := time.Now().Add(time.Minute)
	for h.Subscribers("prod") < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d streams opened", h.Subscribers("prod"), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Publish once so that every stream has also handled a change.
	h.Publish("prod", 2, `"e2"`, []byte(docV2))
	time.Sleep(100 * time.Millisecond)
	after := measure()

	perConn := (after.goBytes - before.goBytes) / uint64(n)
	rssPerConn := (int64(after.rss) - int64(before.rss)) / int64(n)
	t.Logf("%d idle streams: Go heap+stacks %d B/conn, RSS %d B/conn; projected for 10,000: %.0f MB (Go), %.0f MB (RSS); goroutines %d",
		n, perConn, rssPerConn, float64(perConn)*10_000/(1<<20), float64(rssPerConn)*10_000/(1<<20), after.goroutines-before.goroutines)
	if perConn > uint64(budgetPerConn) {
		t.Errorf("Go memory per idle stream = %d B, over the %d B budget (500 MB for 10,000)", perConn, budgetPerConn)
	}
	if rssPerConn > int64(budgetPerConn) && !raceEnabled {
		t.Errorf("RSS per idle stream = %d B, over the %d B budget", rssPerConn, budgetPerConn)
	}
}

type memFigures struct {
	goBytes    uint64 // heap in use plus goroutine stacks
	rss        uint64
	goroutines int
}

func measure() memFigures {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memFigures{goBytes: ms.HeapInuse + ms.StackInuse, rss: rss(), goroutines: runtime.NumGoroutine()}
}

// rss reads the process's resident set size from /proc (0 elsewhere).
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
