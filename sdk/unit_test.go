package sdk

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
)

func TestSSEReader(t *testing.T) {
	type ev struct{ id, event, data string }
	tests := []struct {
		name    string
		input   string
		max     int64
		want    []ev
		wantErr string
	}{
		{name: "named event", input: "id: 3\nevent: change\ndata: {\"a\":1}\n\n", want: []ev{{"3", "change", `{"a":1}`}}},
		{name: "default type, CRLF, no space", input: "id:4\r\ndata:x\r\n\r\n", want: []ev{{"4", "message", "x"}}},
		{name: "multi-line data", input: "data: a\ndata: b\n\n", want: []ev{{"", "message", "a\nb"}}},
		{name: "comments and blank lines skipped", input: ": heartbeat\n\n\nretry: 10\n\ndata: y\n\n", want: []ev{{"", "message", "y"}}},
		{name: "event without data is not dispatched", input: "event: x\n\ndata: z\n\n", want: []ev{{"", "message", "z"}}},
		{name: "unknown fields ignored", input: "foo: bar\ndata: q\n\n", want: []ev{{"", "message", "q"}}},
		{name: "two events", input: "id: 1\ndata: a\n\nid: 2\ndata: b\n\n", want: []ev{{"1", "message", "a"}, {"2", "message", "b"}}},
		{name: "a long event then a short one (the buffer is reused)", input: "data: abcdef\n\ndata: x\n\n", want: []ev{{"", "message", "abcdef"}, {"", "message", "x"}}},
		{name: "too large", input: "data: " + strings.Repeat("x", 100) + "\n\n", max: 50, wantErr: "size limit"},
		{name: "line longer than the read buffer", input: "data: " + strings.Repeat("y", 70<<10) + "\n\n", want: []ev{{"", "message", strings.Repeat("y", 70<<10)}}},
		{name: "cut inside a line", input: "data: par", wantErr: "inside a line"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.max == 0 {
				tc.max = 1 << 20
			}
			lines := 0
			r := newSSEReader(strings.NewReader(tc.input), tc.max, func() { lines++ })
			var got []ev
			var err error
			for {
				var e sseEvent
				if e, err = r.next(); err != nil {
					break
				}
				got = append(got, ev{e.id, e.event, string(e.data)})
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err.Error() != "EOF" || len(got) != len(tc.want) {
				t.Fatalf("events %q, error %v; want %q then EOF", got, err, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("event %d = %q, want %q", i, got[i], tc.want[i])
				}
			}
			if lines == 0 {
				t.Error("activity was never reported")
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{0, 50 * time.Millisecond, 100 * time.Millisecond},
		{1, 100 * time.Millisecond, 200 * time.Millisecond},
		{3, 400 * time.Millisecond, 800 * time.Millisecond},
		{10, 5 * time.Second, 10 * time.Second},   // capped
		{1000, 5 * time.Second, 10 * time.Second}, // no overflow
	}
	for _, tc := range tests {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := backoff(tc.attempt, 100*time.Millisecond, 10*time.Second)
			if d < tc.min || d > tc.max {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", tc.attempt, d, tc.min, tc.max)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("backoff(%d) took only %d distinct values in 200 draws: no jitter", tc.attempt, len(seen))
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		header string
		want   time.Duration
	}{
		{"", 0},
		{"3", 3 * time.Second},
		{" 3 ", 3 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"999999999", time.Hour},
		{now.Add(90 * time.Second).Format(http1123), 90 * time.Second},
		{now.Add(-time.Minute).Format(http1123), 0},
		{"soon", 0},
	}
	for _, tc := range tests {
		if got := retryAfter(tc.header, now); got != tc.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tc.header, got, tc.want)
		}
	}
}

const http1123 = "Mon, 02 Jan 2006 15:04:05 GMT"

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
		want string
	}{
		{"not a URL", []Option{WithURL("flags.example.com")}, "WithURL"},
		{"ftp URL", []Option{WithURL("ftp://x")}, "WithURL"},
		{"remote without URL", []Option{WithRemoteEvaluation(), WithBootstrapFile("f.json")}, "remote evaluation needs"},
		{"negative timeout", []Option{WithURL("http://x"), WithInitTimeout(-time.Second)}, "WithInitTimeout"},
		{"backoff upside down", []Option{WithURL("http://x"), WithReconnectBackoff(time.Second, time.Millisecond)}, "WithReconnectBackoff"},
		{"bad environment", []Option{WithURL("http://x"), WithEnvironment("a/b")}, "WithEnvironment"},
		{"negative batch", []Option{WithURL("http://x"), WithEventFlush(time.Second, -1)}, "sizes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewProvider(tc.opts...)
			err := p.Init(openfeature.EvaluationContext{})
			var ie *openfeature.ProviderInitError
			if !errors.As(err, &ie) || ie.ErrorCode != openfeature.ProviderFatalCode || !strings.Contains(ie.Message, tc.want) {
				t.Errorf("Init = %v, want a fatal error mentioning %q", err, tc.want)
			}
			p.Shutdown()
		})
	}
	// A valid configuration starts nothing until Init, and Shutdown without
	// Init is fine; Init after Shutdown is refused.
	p := NewProvider(WithURL("http://127.0.0.1:1"))
	p.Shutdown()
	if err := p.Init(openfeature.EvaluationContext{}); err == nil || !strings.Contains(err.Error(), "shut down") {
		t.Errorf("Init after Shutdown = %v", err)
	}
}

func TestEvaluationBeforeInit(t *testing.T) {
	p := NewProvider(WithURL("http://127.0.0.1:1"))
	d := p.BooleanEvaluation(bg, "f", true, nil)
	if !d.Value || d.Error() == nil || d.ResolutionDetail().ErrorCode != openfeature.ProviderNotReadyCode {
		t.Errorf("before Init: %+v", d)
	}
}

func TestShutdownDuringInit(t *testing.T) {
	p := NewProvider(WithURL("http://127.0.0.1:1"), WithInitTimeout(time.Minute), WithReconnectBackoff(time.Millisecond, 5*time.Millisecond))
	done := make(chan error)
	go func() { done <- p.Init(openfeature.EvaluationContext{}) }()
	time.Sleep(20 * time.Millisecond) // Init is waiting for a server that is not there
	p.Shutdown()
	select {
	case err := <-done:
		var ie *openfeature.ProviderInitError
		if !errors.As(err, &ie) || ie.ErrorCode != openfeature.ProviderFatalCode || !strings.Contains(ie.Message, "shut down") {
			t.Errorf("Init = %v, want a fatal shut-down error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Init kept waiting after Shutdown")
	}
}

// FuzzSSEReader feeds arbitrary bytes to the stream parser: it must never
// panic, never return an event larger than its limit, and always end.
func FuzzSSEReader(f *testing.F) {
	f.Add("id: 1\nevent: snapshot\ndata: {}\n\n")
	f.Add(": c\r\n\r\ndata: a\ndata: b\n\n")
	f.Add("data")
	f.Fuzz(func(t *testing.T, in string) {
		r := newSSEReader(strings.NewReader(in), 64, nil)
		for range len(in) + 1 {
			ev, err := r.next()
			if err != nil {
				return
			}
			if len(ev.data) > 64 {
				t.Fatalf("event of %d bytes beyond the 64-byte limit", len(ev.data))
			}
		}
		t.Fatal("more events than input bytes")
	})
}
