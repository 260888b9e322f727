package api

import (
	"context"
	_ "embed"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// healthz is liveness: the process serves HTTP.
func (s *Server) healthz(c echo.Context) error {
	c.Response().Header()["Cache-Control"] = hvNoStore
	return c.Blob(http.StatusOK, "application/json", []byte(`{"status":"ok"}`))
}

// component is one part's health in /readyz.
type component struct {
	Status       string     `json:"status"` // ok, degraded, starting
	Error        string     `json:"error,omitempty"`
	Since        *time.Time `json:"since,omitempty"`
	Environments *int       `json:"environments,omitempty"`
}

type readiness struct {
	Status     string               `json:"status"` // ready, degraded, starting
	Components map[string]component `json:"components"`
}

// readyz is readiness: 200 once the flag sets are loaded, also while the
// store is down (evaluation keeps serving the last loaded sets; the body
// says "degraded" with the store's error); 503 until the first load.
func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), time.Second)
	defer cancel()
	r := readiness{Status: "ready", Components: map[string]component{}}
	n := len(*s.envs.Load())
	flagsC := component{Status: "ok", Environments: &n}
	if !s.ready.Load() {
		flagsC.Status = "starting"
		r.Status = "starting"
	}
	r.Components["flags"] = flagsC
	storeC := component{Status: "ok"}
	if err := s.store.Ping(ctx); err != nil {
		storeC.Status = "degraded"
		storeC.Error = err.Error()
		if st := s.storeState.Load(); st != nil && st.err != "" {
			since := st.since.UTC()
			storeC.Since = &since
		}
		if r.Status == "ready" {
			r.Status = "degraded"
		}
	}
	r.Components["store"] = storeC
	status := http.StatusOK
	if !s.ready.Load() {
		status = http.StatusServiceUnavailable
	}
	c.Response().Header()["Cache-Control"] = hvNoStore
	return c.JSON(status, r)
}

//go:embed openapi.json
var openAPIDoc []byte

// openAPI serves the OpenAPI 3 document of the whole API.
func (s *Server) openAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/json", openAPIDoc)
}
