package api

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/flagpole/flagpole/api/ofrep"
	"github.com/flagpole/flagpole/flags"
)

func TestNewRejectsBadConfig(t *testing.T) {
	h := newHarness(t)
	valid := func() Config { return Config{Store: h.store, Keys: h.store, Flags: h.svc} }
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no store", func(c *Config) { c.Store = nil }, "Store"},
		{"no keys", func(c *Config) { c.Keys = nil }, "Keys"},
		{"no service", func(c *Config) { c.Flags = nil }, "Flags"},
		{"negative body limit", func(c *Config) { c.BodyLimit = -1 }, "BodyLimit"},
		{"negative rate", func(c *Config) { c.RateLimit = -2 }, "RateLimit"},
		{"negative interval", func(c *Config) { c.SyncInterval = -1 }, "SyncInterval"},
		{"bad origin", func(c *Config) { c.CORSOrigins = []string{"app.example.com"} }, "CORS origin"},
		{"origin with path", func(c *Config) { c.CORSOrigins = []string{"https://a.example/x"} }, "CORS origin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.edit(&c)
			if _, err := New(c); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error naming %s", err, tc.want)
			}
		})
	}
	if _, err := New(valid()); err != nil {
		t.Errorf("New(valid): %v", err)
	}
}

func TestPanicsBecome500(t *testing.T) {
	h := newHarness(t)
	h.srv.e.GET("/api/v1/boom", func(echo.Context) error { panic("boom") })
	h.srv.e.POST("/ofrep/v1/boom", func(echo.Context) error { panic("boom") })
	r := h.do(req{method: "GET", path: "/api/v1/boom"})
	if e := errorOf(t, r); r.status != 500 || e.Code != "internal" || strings.Contains(e.Message, "boom") {
		t.Errorf("admin panic: %d %+v", r.status, e)
	}
	r = h.do(req{method: "POST", path: "/ofrep/v1/boom"})
	var ge ofrep.GeneralError
	if err := json.Unmarshal(r.body, &ge); err != nil || r.status != 500 || ge.ErrorDetails == "" || r.header.Get("Content-Type") != "application/json" {
		t.Errorf("OFREP panic: %d %s", r.status, r.body)
	}
	if !strings.Contains(h.logs.String(), "panic serving request") {
		t.Errorf("panic not logged")
	}
	// The server still serves.
	if r := h.do(req{method: "GET", path: "/healthz"}); r.status != 200 {
		t.Errorf("after panics: %d", r.status)
	}
}

func TestSupersededAnnouncesChanges(t *testing.T) {
	h := newHarness(t)
	h.createEnv("default", `{"flags":{"f":`+boolFlag+`}}`)
	first := h.srv.env("default")
	select {
	case <-first.superseded:
		t.Fatal("closed before any change")
	default:
	}
	if _, err := h.svc.PatchFlag(t.Context(), "default", "f", flags.FlagPatch{State: ptr(flags.Disabled)}, flags.WriteOptions{Actor: "t"}); err != nil {
		t.Fatal(err)
	}
	h.waitVersion("default", 2)
	<-first.superseded // closed by the new version
	second := h.srv.env("default")
	h.srv.removeEnv("default")
	<-second.superseded // closed by the removal
}

func TestMetricsForgetRemovedFlags(t *testing.T) {
	h := newHarness(t)
	h.createEnv("default", testFlags)
	h.eval("default", "static-on", h.admin)
	h.eval("default", "no-such-flag", h.admin)
	metrics := func() string { return string(h.do(req{method: "GET", path: "/metrics"}).body) }
	m := metrics()
	if !strings.Contains(m, `flag="static-on"`) {
		t.Fatalf("no series for an evaluated flag")
	}
	if strings.Contains(m, `flag="no-such-flag"`) {
		t.Errorf("an unknown flag got a series (unbounded cardinality)")
	}
	if r := h.do(req{method: "DELETE", path: "/api/v1/environments/default/flags/static-on", key: h.admin}); r.status != 204 {
		t.Fatalf("delete: %d", r.status)
	}
	if m := metrics(); strings.Contains(m, `flag="static-on"`) {
		t.Errorf("the deleted flag's series is still exported")
	}
	if r := h.do(req{method: "DELETE", path: "/api/v1/environments/default", key: h.admin}); r.status != 204 {
		t.Fatalf("delete env: %d", r.status)
	}
	if m := metrics(); strings.Contains(m, `environment="default"`) {
		t.Errorf("the deleted environment's series are still exported")
	}
}
