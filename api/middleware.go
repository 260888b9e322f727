package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/flagpole/flagpole/auth"
)

// reqCtx is the echo context every handler receives: echo's own plus what
// the middleware learned about the request. Pooled; never retained.
type reqCtx struct {
	echo.Context
	id     string   // request ID
	key    auth.Key // the caller's key, once authenticated
	hasKey bool
	env    string // the environment the request is about, for the log
	ofrep  bool   // an OFREP route: errors are written in OFREP's shapes
}

func requestID(c echo.Context) string {
	if rc, ok := c.(*reqCtx); ok {
		return rc.id
	}
	return c.Response().Header().Get(echo.HeaderXRequestID)
}

// Shared header values (never modified).
var (
	hvJSON       = []string{echo.MIMEApplicationJSON}
	hvNoStore    = []string{"no-store"}
	hvVaryOrigin = []string{"Origin"}
)

// around is the one middleware every request passes: request ID, CORS,
// panic recovery, error writing, metrics and the request log.
func (s *Server) around(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		req := c.Request()
		rc := s.ctxPool.Get().(*reqCtx)
		*rc = reqCtx{Context: c, id: s.requestIDFor(req)}
		rc.ofrep = strings.HasPrefix(c.Path(), "/ofrep/")
		h := c.Response().Header()
		h[echo.HeaderXRequestID] = []string{rc.id}

		preflight := false
		if origin := req.Header.Get("Origin"); origin != "" && s.cors.enabled() {
			h["Vary"] = hvVaryOrigin
			if s.cors.allows(origin) {
				h["Access-Control-Allow-Origin"] = []string{origin}
				if req.Method == http.MethodOptions && req.Header.Get("Access-Control-Request-Method") != "" {
					preflight = true
					h["Access-Control-Allow-Methods"] = corsMethods
					h["Access-Control-Allow-Headers"] = corsAllowHeaders
					h["Access-Control-Max-Age"] = corsMaxAge
				} else {
					h["Access-Control-Expose-Headers"] = corsExposeHeaders
				}
			}
		}
		if preflight {
			_ = c.NoContent(http.StatusNoContent)
		} else {
			s.serve(rc, next)
		}

		route := c.Path()
		status := c.Response().Status
		if route == "" || (status == http.StatusNotFound && !s.isRoute(route)) {
			route = "unmatched"
		}
		elapsed := time.Since(start)
		s.m.httpRequests.WithLabelValues(route, req.Method, statusText(status)).Inc()
		s.m.httpLatency.WithLabelValues(route, req.Method).Observe(elapsed.Seconds())
		s.logRequest(rc, route, status, elapsed)
		*rc = reqCtx{}
		s.ctxPool.Put(rc)
		return nil
	}
}

// serve runs the handler, writing its error (or a recovered panic) in the
// right shape.
func (s *Server) serve(rc *reqCtx, next echo.HandlerFunc) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic serving request", "request_id", rc.id, "route", rc.Path(), "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if rc.Response().Committed {
				return
			}
			if rc.ofrep {
				s.ofrepGeneralError(rc, http.StatusInternalServerError, "internal error; see the server log for request "+rc.id)
				return
			}
			s.handleError(fmt.Errorf("panic: %v", p), rc)
		}
	}()
	if err := next(rc); err != nil {
		s.handleError(err, rc)
	}
}

func (s *Server) isRoute(path string) bool {
	return s.routePaths[path]
}

var statusTexts = func() map[int]string {
	m := map[int]string{}
	for code := 100; code < 600; code++ {
		m[code] = strconv.Itoa(code)
	}
	return m
}()

func statusText(code int) string {
	if t, ok := statusTexts[code]; ok {
		return t
	}
	return strconv.Itoa(code)
}

// requestIDFor keeps a sane incoming X-Request-ID or makes one.
func (s *Server) requestIDFor(r *http.Request) string {
	if id := r.Header.Get(echo.HeaderXRequestID); id != "" && len(id) <= 128 && validRequestID(id) {
		return id
	}
	var b [32]byte
	n := copy(b[:], s.idPrefix)
	return string(strconv.AppendUint(b[:n], s.idSeq.Add(1), 36))
}

func validRequestID(id string) bool {
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// logRequest writes one structured line per request. OFREP answers below
// 500 (evaluations, and the client errors a misconfigured SDK may repeat
// thousands of times a second) and probes are logged at debug level so that
// the hot path stays cheap; other requests at info, client errors at warn,
// server errors at error. Secrets are never logged: only the key's ID and name.
func (s *Server) logRequest(rc *reqCtx, route string, status int, elapsed time.Duration) {
	level := slog.LevelInfo
	switch {
	case status >= 500:
		level = slog.LevelError
	case rc.ofrep || route == "/healthz" || route == "/readyz" || route == "/metrics":
		level = slog.LevelDebug
	case status >= 400:
		level = slog.LevelWarn
	}
	ctx := context.Background()
	if !s.log.Enabled(ctx, level) {
		return
	}
	req := rc.Request()
	attrs := []slog.Attr{
		slog.String("request_id", rc.id),
		slog.String("method", req.Method),
		slog.String("route", route),
		slog.String("path", req.URL.Path),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.Int64("bytes", rc.Response().Size),
		slog.String("remote", req.RemoteAddr),
	}
	if rc.hasKey {
		attrs = append(attrs, slog.String("key_id", rc.key.ID), slog.String("key_name", rc.key.Name))
	}
	if rc.env != "" {
		attrs = append(attrs, slog.String("environment", rc.env))
	}
	s.log.LogAttrs(ctx, level, "request", attrs...)
}

// corsPolicy says which browser origins may call the API.
type corsPolicy struct {
	any     bool
	origins []string
}

var (
	corsMethods       = []string{"GET, POST, PUT, PATCH, DELETE, OPTIONS"}
	corsAllowHeaders  = []string{"Authorization, X-API-Key, Content-Type, If-None-Match, If-Match, X-Change-Reason, X-Request-ID, X-Flagpole-Environment"}
	corsExposeHeaders = []string{"ETag, Retry-After, X-Request-ID, Location"}
	corsMaxAge        = []string{"600"}
)

func newCORSPolicy(origins []string) (corsPolicy, error) {
	var p corsPolicy
	for _, o := range origins {
		o = strings.TrimSpace(o)
		if o == "*" {
			p.any = true
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return corsPolicy{}, fmt.Errorf("api: CORS origin %q: want \"*\" or scheme://host[:port]", o)
		}
		p.origins = append(p.origins, strings.ToLower(u.Scheme+"://"+u.Host))
	}
	return p, nil
}

func (p corsPolicy) enabled() bool { return p.any || len(p.origins) > 0 }

func (p corsPolicy) allows(origin string) bool {
	return p.any || slices.Contains(p.origins, strings.ToLower(origin))
}
