package sdk

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
)

func flagDoc(checkout, color string) string {
	return `{"flags":{
		"checkout":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"` + checkout + `"},
		"color":{"state":"ENABLED","variants":{"red":"#f00","blue":"#00f"},"defaultVariant":"` + color + `"}}}`
}

func TestInProcessLifecycle(t *testing.T) {
	s := newFlagServer(t, flagDoc("off", "red"))
	a := newApp(t)
	if err := a.start(fastOptions(s)...); err != nil {
		t.Fatalf("SetProviderAndWait: %v", err)
	}
	a.expect(openfeature.ProviderReady)
	if got := a.client.State(); got != openfeature.ReadyState {
		t.Fatalf("state %s, want READY", got)
	}
	if on, err := a.client.BooleanValue(bg, "checkout", true, openfeature.EvaluationContext{}); on || err != nil {
		t.Fatalf("checkout = %v, %v; want false from the first snapshot", on, err)
	}

	// A change: CONFIGURATION_CHANGED names the flag, and the new value is
	// served by the time the handler runs.
	s.setFlags(flagDoc("on", "red"))
	ev := a.expect(openfeature.ProviderConfigChange)
	if !reflect.DeepEqual(ev.FlagChanges, []string{"checkout"}) {
		t.Errorf("changed flags %q, want [checkout]", ev.FlagChanges)
	}
	if on, _ := a.client.BooleanValue(bg, "checkout", false, openfeature.EvaluationContext{}); !on {
		t.Error("checkout still false after the change")
	}

	// The server goes away: STALE, and the last values are still served.
	s.stop()
	a.expect(openfeature.ProviderStale)
	if got := a.client.State(); got != openfeature.StaleState {
		t.Errorf("state %s, want STALE", got)
	}
	d, err := a.client.BooleanValueDetails(bg, "checkout", false, openfeature.EvaluationContext{})
	if err != nil || !d.Value || d.Reason != openfeature.StaticReason {
		t.Errorf("while stale: %+v, %v; want the last value true (STATIC)", d, err)
	}

	// It comes back with a flag changed meanwhile: READY, then the change.
	s.setFlags(flagDoc("on", "blue"))
	s.start()
	ev = a.expectAll(openfeature.ProviderReady, openfeature.ProviderConfigChange)[openfeature.ProviderConfigChange]
	if !reflect.DeepEqual(ev.FlagChanges, []string{"color"}) {
		t.Errorf("changed flags after resync %q, want [color]", ev.FlagChanges)
	}
	if c, _ := a.client.StringValue(bg, "color", "", openfeature.EvaluationContext{}); c != "#00f" {
		t.Errorf("color after resync = %q, want #00f", c)
	}
	a.quiet()
}

func TestResumeWithoutSnapshot(t *testing.T) {
	s := newFlagServer(t, flagDoc("off", "red"))
	a := newApp(t)
	if err := a.start(fastOptions(s)...); err != nil {
		t.Fatal(err)
	}
	a.expect(openfeature.ProviderReady)
	if id := s.nextLastID(); id != "" {
		t.Errorf("first connection sent Last-Event-ID %q", id)
	}
	// Drop the connections only: the provider reconnects at version 1 and
	// the server resumes without a snapshot; the provider is READY again
	// with nothing changed.
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	srv.CloseClientConnections()
	a.expect(openfeature.ProviderStale)
	a.expect(openfeature.ProviderReady)
	if id := s.nextLastID(); id != "1" {
		t.Errorf("reconnection sent Last-Event-ID %q, want 1", id)
	}
	a.quiet()
}

func TestRefusedKey(t *testing.T) {
	t.Run("at init", func(t *testing.T) {
		s := newFlagServer(t, flagDoc("off", "red"))
		s.refuse.Store(true)
		a := newApp(t)
		err := a.start(fastOptions(s)...)
		var ie *openfeature.ProviderInitError
		if !errors.As(err, &ie) || ie.ErrorCode != openfeature.ProviderFatalCode || !strings.Contains(ie.Message, "401") {
			t.Fatalf("init error %v, want a fatal ProviderInitError naming 401", err)
		}
		// The SDK does not pass the error code to handlers; the state shows it.
		a.expect(openfeature.ProviderError)
		if a.client.State() != openfeature.FatalState {
			t.Errorf("state %s, want FATAL", a.client.State())
		}
		d, err := a.client.BooleanValueDetails(bg, "checkout", true, openfeature.EvaluationContext{})
		if err == nil || !d.Value || d.ErrorCode != openfeature.ProviderFatalCode {
			t.Errorf("evaluation while fatal: %+v, %v", d, err)
		}
		if n := s.streams.Load(); n != 1 {
			t.Errorf("stream requests = %d, want 1 (no retry after a refused key)", n)
		}
	})
	t.Run("revoked while running", func(t *testing.T) {
		s := newFlagServer(t, flagDoc("off", "red"))
		a := newApp(t)
		if err := a.start(fastOptions(s)...); err != nil {
			t.Fatal(err)
		}
		a.expect(openfeature.ProviderReady)
		s.refuse.Store(true)
		s.mu.Lock()
		s.srv.CloseClientConnections()
		s.mu.Unlock()
		a.expectAll(openfeature.ProviderStale, openfeature.ProviderError)
		if a.client.State() != openfeature.FatalState {
			t.Errorf("state %s, want FATAL", a.client.State())
		}
		if on, err := a.client.BooleanValue(bg, "checkout", true, openfeature.EvaluationContext{}); !on || err == nil {
			t.Errorf("evaluation while fatal = %v, %v; want the default and an error", on, err)
		}
	})
}

func TestInitTimeoutThenRecovery(t *testing.T) {
	s := newFlagServer(t, flagDoc("on", "red"))
	s.stop() // unreachable at start
	a := newApp(t)
	err := a.start(fastOptions(s, WithInitTimeout(100*time.Millisecond))...)
	var ie *openfeature.ProviderInitError
	if !errors.As(err, &ie) || ie.ErrorCode != openfeature.GeneralCode {
		t.Fatalf("init error %v, want a GENERAL ProviderInitError", err)
	}
	a.expect(openfeature.ProviderError)
	if a.client.State() != openfeature.ErrorState {
		t.Errorf("state %s, want ERROR", a.client.State())
	}
	d, err := a.client.BooleanValueDetails(bg, "checkout", false, openfeature.EvaluationContext{})
	if err == nil || d.ErrorCode != openfeature.ProviderNotReadyCode || d.Value {
		t.Errorf("evaluation without flags: %+v, %v; want the default with PROVIDER_NOT_READY", d, err)
	}
	s.start()
	a.expect(openfeature.ProviderReady)
	if on, _ := a.client.BooleanValue(bg, "checkout", false, openfeature.EvaluationContext{}); !on {
		t.Error("checkout false after recovery")
	}
	a.quiet() // no CONFIGURATION_CHANGED for the first flag set
}

func TestOfflineBootstrap(t *testing.T) {
	dir := t.TempDir()
	yamlFile := filepath.Join(dir, "flags.yaml")
	if err := os.WriteFile(yamlFile, []byte("flags:\n  checkout:\n    state: ENABLED\n    variants: {\"on\": true, \"off\": false}\n    defaultVariant: \"on\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    []Option
		wantErr string
	}{
		{name: "yaml bootstrap file", opts: []Option{WithBootstrapFile(yamlFile)}},
		{name: "missing bootstrap file", opts: []Option{WithBootstrapFile(filepath.Join(dir, "nope.json"))}, wantErr: "bootstrap file"},
		{name: "missing cache and no bootstrap", opts: []Option{WithCacheFile(filepath.Join(dir, "cache.json"))}, wantErr: "cache file"},
		{name: "no source at all", opts: nil, wantErr: "WithURL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newApp(t)
			err := a.start(tc.opts...)
			if tc.wantErr != "" {
				var ie *openfeature.ProviderInitError
				if !errors.As(err, &ie) || ie.ErrorCode != openfeature.ProviderFatalCode || !strings.Contains(ie.Message, tc.wantErr) {
					t.Fatalf("init error %v, want a fatal one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if on, err := a.client.BooleanValue(bg, "checkout", false, openfeature.EvaluationContext{}); !on || err != nil {
				t.Errorf("checkout = %v, %v; want true from the file", on, err)
			}
			a.provider.Track(bg, "ignored", openfeature.EvaluationContext{}, openfeature.TrackingEventDetails{}) // offline: dropped
		})
	}
}

func TestCacheFile(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "flags-cache.json")
	s := newFlagServer(t, flagDoc("off", "red"))
	s.setFlags(flagDoc("on", "blue")) // version 2

	first := newApp(t)
	if err := first.start(fastOptions(s, WithCacheFile(cache))...); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cache); err != nil {
		t.Fatalf("no cache file after the first snapshot: %v", err)
	}
	first.api.Shutdown(bg)
	s.nextLastID()

	t.Run("server up: resumes at the cached version", func(t *testing.T) {
		a := newApp(t)
		if err := a.start(fastOptions(s, WithCacheFile(cache))...); err != nil {
			t.Fatal(err)
		}
		if id := s.nextLastID(); id != "2" {
			t.Errorf("Last-Event-ID %q, want the cached version 2", id)
		}
		if c, _ := a.client.StringValue(bg, "color", "", openfeature.EvaluationContext{}); c != "#00f" {
			t.Errorf("color %q, want #00f", c)
		}
		a.api.Shutdown(bg)
	})
	t.Run("server down: starts from the cache after the init timeout", func(t *testing.T) {
		s.stop()
		a := newApp(t)
		if err := a.start(fastOptions(s, WithCacheFile(cache), WithInitTimeout(100*time.Millisecond))...); err != nil {
			t.Fatalf("init with a cache and no server: %v", err)
		}
		a.expect(openfeature.ProviderReady)
		if on, _ := a.client.BooleanValue(bg, "checkout", false, openfeature.EvaluationContext{}); !on {
			t.Error("checkout false; want the cached true")
		}
		// The server returns with a change: CONFIGURATION_CHANGED.
		s.setFlags(flagDoc("off", "blue"))
		s.start()
		ev := a.expect(openfeature.ProviderConfigChange)
		if !reflect.DeepEqual(ev.FlagChanges, []string{"checkout"}) {
			t.Errorf("changed %q, want [checkout]", ev.FlagChanges)
		}
	})
	t.Run("same version with other content resyncs", func(t *testing.T) {
		s.setFlags(flagDoc("on", "red"))
		v, _, _, _ := s.current()
		stale := filepath.Join(t.TempDir(), "stale.json")
		msg := fmt.Sprintf(`{"environment":"prod","version":%d,"etag":"\"elsewhere\"","flags":%s}`, v, flagDoc("off", "blue"))
		if err := os.WriteFile(stale, []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
		for len(s.lastIDs) > 0 {
			<-s.lastIDs
		}
		a := newApp(t)
		if err := a.start(fastOptions(s, WithCacheFile(stale))...); err != nil {
			t.Fatal(err)
		}
		if first, second := s.nextLastID(), s.nextLastID(); first != fmt.Sprint(v) || second != "" {
			t.Errorf("Last-Event-IDs %q then %q, want %d (resume refused: other ETag) then none (snapshot)", first, second, v)
		}
		if c, _ := a.client.StringValue(bg, "color", "", openfeature.EvaluationContext{}); c != "#f00" {
			t.Errorf("color %q, want the server's #f00", c)
		}
		a.api.Shutdown(bg)
	})
	t.Run("cache of another environment is ignored", func(t *testing.T) {
		a := newApp(t)
		err := a.start(WithCacheFile(cache), WithEnvironment("staging"))
		if err == nil || !strings.Contains(err.Error(), `"prod", not "staging"`) {
			t.Errorf("init error %v, want the environment mismatch", err)
		}
	})
}

func TestIdleStreamIsDetected(t *testing.T) {
	t.Run("heartbeats keep a quiet stream alive", func(t *testing.T) {
		s := newFlagServer(t, flagDoc("off", "red")) // heartbeats every 50 ms
		a := newApp(t)
		if err := a.start(fastOptions(s, WithStreamIdleTimeout(300*time.Millisecond))...); err != nil {
			t.Fatal(err)
		}
		a.expect(openfeature.ProviderReady)
		time.Sleep(500 * time.Millisecond)
		a.quiet()
	})
	t.Run("a silent stream is given up after the idle timeout", func(t *testing.T) {
		s := newFlagServer(t, flagDoc("off", "red"))
		s.silent.Store(true) // a snapshot, then nothing, connection kept open
		a := newApp(t)
		if err := a.start(fastOptions(s, WithStreamIdleTimeout(300*time.Millisecond))...); err != nil {
			t.Fatal(err)
		}
		a.expect(openfeature.ProviderReady)
		start := time.Now()
		a.expect(openfeature.ProviderStale)
		if waited := time.Since(start); waited < 250*time.Millisecond {
			t.Errorf("STALE after %v, before the 300ms idle timeout", waited)
		}
	})
}
