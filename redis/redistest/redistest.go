// Package redistest starts a real redis-server for tests: on a free loopback
// port, with append-only persistence (fsync always) in a temporary directory,
// stopped when the test ends. Without the redis-server binary a test fails
// when CI=true and is skipped otherwise.
package redistest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Server is one redis-server process (or, after Stop, the data and port it
// will come back on).
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan error // receives the process's exit; buffered
}

// Start runs redis-server on a free 127.0.0.1 port and waits until it
// answers; t.Cleanup stops it. A missing binary calls t.Fatal when the
// environment has CI=true and t.Skip otherwise; a server that will not start
// calls t.Fatal.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is not installed (run `make deps`): %v", err)
		}
		t.Skipf("redis-server is not installed (run `make deps`); skipping: %v", err)
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(s.Stop)
	// A port picked by closing a listener can be taken by someone else before
	// redis binds it; try a few.
	var lastErr error
	for range 5 {
		if s.port, err = freePort(); err != nil {
			t.Fatalf("redistest: finding a free port: %v", err)
		}
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("redistest: %v", lastErr)
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Addr is "127.0.0.1:PORT".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL is "redis://127.0.0.1:PORT".
func (s *Server) URL() string { return "redis://" + s.Addr() }

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return nil
	}
	log := new(bytes.Buffer)
	cmd := exec.Command(s.bin,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(s.port),
		"--dir", s.dir, "--appendonly", "yes", "--appendfsync", "always", "--save", "",
		"--protected-mode", "no", "--daemonize", "no", "--logfile", "", "--loglevel", "warning",
	)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %v", s.bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ready(s.Addr()) {
			s.cmd, s.exited = cmd, exited
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("redis-server on port %d exited (%v): %s", s.port, err, bytes.TrimSpace(log.Bytes()))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("redis-server on port %d did not become ready in 10s: %s", s.port, bytes.TrimSpace(log.Bytes()))
		}
	}
}

// ready reports whether the server answers a data command (it refuses them
// with LOADING while it replays its append-only file).
func ready(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("EXISTS redistest:probe\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && line == ":0\r\n"
}

// Stop shuts the server down (SIGTERM, then SIGKILL after 10s) and waits for
// it to exit. Its data stays for Restart. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd, s.exited = nil, nil
}

// Restart starts a stopped server again on the same port with the same data
// and waits until it answers. It calls t.Fatal if it cannot.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	var err error
	for range 50 { // the port can linger briefly after the old process exits
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restarting: %v", err)
}
