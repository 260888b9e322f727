package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// binPath is the flagpole binary that TestMain builds for the end-to-end tests.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flagpole-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "flagpole")
	if err := buildBinary(binPath); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildBinary builds this command into path, with the race detector when
// the tests have it.
func buildBinary(path string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = "/usr/local/go/bin/go" // where .ci/run expects it
	}
	args := []string{"build", "-o", path}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command(goTool, append(args, ".")...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("building flagpole for the end-to-end tests: %v\n%s", err, out)
	}
	return nil
}

// proc is one `flagpole serve` process.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	url    string
	logs   *syncBuffer
	exited chan struct{}
	err    error // of cmd.Wait, once exited is closed
}

// startServe starts `flagpole serve --addr 127.0.0.1:0 --log-format json
// args...` with env added to a clean environment, and waits until it
// listens. It is killed when the test ends, if still running.
func startServe(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	all := append([]string{"serve", "--addr", "127.0.0.1:0", "--log-format", "json", "--shutdown-timeout", "10s"}, args...)
	cmd := exec.Command(binPath, all...)
	cmd.Env = append(cleanEnv(), env...)
	cmd.Dir = t.TempDir()
	p := &proc{t: t, cmd: cmd, logs: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("server %s log:\n%s", p.url, tail(p.logs.String(), 60))
		}
	})
	deadline := time.After(60 * time.Second)
	for p.url == "" {
		if line, ok := p.logLine("flagpole serving"); ok {
			p.url = "http://" + line["addr"].(string)
			break
		}
		select {
		case <-p.exited:
			t.Fatalf("flagpole serve exited at start (%v):\n%s", p.err, p.logs.String())
		case <-deadline:
			t.Fatalf("flagpole serve did not start listening:\n%s", p.logs.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return p
}

// cleanEnv is the test process's environment without FLAGPOLE_* variables.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FLAGPOLE_") {
			out = append(out, kv)
		}
	}
	return out
}

// logLine returns the first JSON log line whose msg is msg.
func (p *proc) logLine(msg string) (map[string]any, bool) {
	sc := bufio.NewScanner(strings.NewReader(p.logs.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) == nil && line["msg"] == msg {
			return line, true
		}
	}
	return nil, false
}

// waitReady waits until /readyz answers 200.
func (p *proc) waitReady() {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s/readyz: not ready (%v)", p.url, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for the process to exit; it returns the exit code.
func (p *proc) stop() int {
	p.t.Helper()
	return p.stopWith(syscall.SIGTERM)
}

// stopWith sends sig and waits for the process to exit; it returns the exit code.
func (p *proc) stopWith(sig os.Signal) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.t.Fatal("flagpole serve did not exit within 30s of SIGTERM")
	}
	return p.cmd.ProcessState.ExitCode()
}

// cli runs the flagpole binary as a client of p with token.
func (p *proc) cli(token string, args ...string) cliResult {
	p.t.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(cleanEnv(), envURL+"="+p.url, envToken+"="+token)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		p.t.Fatal(err)
	}
	return cliResult{code: code, stdout: out.String(), stderr: errOut.String()}
}

// httpClient is shared by the tests' direct HTTP calls.
var httpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// httpDo sends one request and returns the status and body.
func httpDo(t testing.TB, method, url, token, body string) (int, []byte) {
	t.Helper()
	status, data, err := tryCall(method, url, token, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return status, data
}

func tryCall(method, url, token, body string) (int, []byte, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// evalValue evaluates key over OFREP and returns the JSON of its value ("" when absent).
func evalValue(t testing.TB, url, token, key, context string) (int, string) {
	t.Helper()
	status, body := httpDo(t, http.MethodPost, url+"/ofrep/v1/evaluate/flags/"+key, token, `{"context":`+context+`}`)
	var res struct {
		Value json.RawMessage `json:"value"`
	}
	_ = json.Unmarshal(body, &res)
	return status, string(res.Value)
}

// eventually polls cond every few milliseconds until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}
