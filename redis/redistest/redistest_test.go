package redistest

import (
	"bufio"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// do sends one inline command and returns the first reply line.
func do(addr, cmd string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(c, "%s\r\n", cmd); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(line, "$") && line != "$-1\r\n" {
		line, err = r.ReadString('\n')
	}
	return strings.TrimSpace(line), err
}

func TestStartStopRestart(t *testing.T) {
	s := Start(t)
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") || s.URL() != "redis://"+s.Addr() {
		t.Fatalf("Addr %q, URL %q; want a loopback address and its redis:// URL", s.Addr(), s.URL())
	}
	if got, err := do(s.Addr(), "SET k v"); err != nil || got != "+OK" {
		t.Fatalf("SET = %q, %v", got, err)
	}
	s.Stop()
	if _, err := do(s.Addr(), "PING"); err == nil {
		t.Fatal("the server still answers after Stop")
	}
	s.Stop() // idempotent
	s.Restart()
	if got, err := do(s.Addr(), "GET k"); err != nil || got != "v" {
		t.Errorf("GET after Restart = %q, %v; want the value written before Stop", got, err)
	}
}

func TestServersAreIndependent(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("two servers share %s", a.Addr())
	}
	if _, err := do(a.Addr(), "SET only-a 1"); err != nil {
		t.Fatal(err)
	}
	if got, err := do(b.Addr(), "EXISTS only-a"); err != nil || got != ":0" {
		t.Errorf("EXISTS on the other server = %q, %v; want :0", got, err)
	}
}

// recorder is a testing.TB that records how Start gave up.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestMissingBinary(t *testing.T) {
	tests := []struct {
		ci        string
		wantFatal bool
	}{{"true", true}, {"", false}, {"false", false}}
	for _, tc := range tests {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Setenv("PATH", t.TempDir())
			t.Setenv("CI", tc.ci)
			r := &recorder{TB: t}
			done := make(chan struct{})
			go func() { defer close(done); Start(r) }()
			<-done
			if got := r.fatal != ""; got != tc.wantFatal {
				t.Errorf("fatal %q, skip %q; want fatal = %v", r.fatal, r.skip, tc.wantFatal)
			}
			if r.fatal == "" && r.skip == "" {
				t.Error("Start neither failed nor skipped without a binary")
			}
		})
	}
}
