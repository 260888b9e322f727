package api

import (
	"fmt"
	"net/http"
	"regexp"

	"github.com/labstack/echo/v4"

	"github.com/flagpole/flagpole/auth"
)

// Route is an endpoint the server serves for another package (Config.Extra):
// adapters may not import each other, so packages such as deploy expose
// plain net/http handlers and cmd/flagpole hands them to the server, which
// puts them behind the same middleware as its own routes (request IDs,
// CORS, panic recovery, metrics, the request log) and authenticates the
// caller as Auth says before the handler runs. The handler reads path
// parameters with Request.PathValue; its request body is capped at
// Config.BodyLimit. It writes its own answers, errors included.
type Route struct {
	// Method is an HTTP method such as "GET".
	Method string
	// Path is the route pattern, with {name} for a path parameter, such
	// as "/api/v1/notifications/{id}". It must not be one of the
	// server's own routes.
	Path string
	// Auth is who may call: AuthAdmin, AuthEditor or AuthNone.
	Auth string
	// Handler answers the request.
	Handler http.Handler
}

// Who may call a Route.
const (
	// AuthAdmin: an admin API key; others get 401 or 403 in the API's
	// error shape.
	AuthAdmin = "admin"
	// AuthEditor: an admin key or an editor key (of any environment); sdk
	// keys get 403.
	AuthEditor = "editor"
	// AuthNone: no key is checked; the handler authenticates the caller
	// itself if it must.
	AuthNone = "none"
)

var (
	routeParamRE   = regexp.MustCompile(`\{([A-Za-z][A-Za-z0-9_]*)\}`)
	routePathRE    = regexp.MustCompile(`^(/([A-Za-z0-9._~-]+|\{[A-Za-z][A-Za-z0-9_]*\}))+$`)
	echoParamRE    = regexp.MustCompile(`:[^/]+`)
	routeMethodSet = map[string]bool{http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true, http.MethodPatch: true, http.MethodDelete: true}
)

// mountExtra adds the extra routes to e. Errors name the bad route: an
// unknown method or Auth, a malformed path, a nil handler, or a route the
// server (or an earlier extra route) already has.
func (s *Server) mountExtra(e *echo.Echo, routes []Route) error {
	// Routes clash whatever their parameters are called: compare shapes.
	shape := func(path string) string { return echoParamRE.ReplaceAllString(path, ":") }
	taken := map[string]bool{}
	for _, r := range e.Routes() {
		taken[r.Method+" "+shape(r.Path)] = true
	}
	for i, r := range routes {
		where := fmt.Sprintf("api: Config.Extra[%d] (%s %s)", i, r.Method, r.Path)
		switch {
		case !routeMethodSet[r.Method]:
			return fmt.Errorf("%s: method must be one of GET, HEAD, POST, PUT, PATCH, DELETE", where)
		case !routePathRE.MatchString(r.Path):
			return fmt.Errorf("%s: path must look like /a/{param}/b", where)
		case r.Handler == nil:
			return fmt.Errorf("%s: handler is nil", where)
		case r.Auth != AuthAdmin && r.Auth != AuthEditor && r.Auth != AuthNone:
			return fmt.Errorf("%s: auth must be %q, %q or %q", where, AuthAdmin, AuthEditor, AuthNone)
		}
		var names []string
		path := routeParamRE.ReplaceAllStringFunc(r.Path, func(m string) string {
			names = append(names, m[1:len(m)-1])
			return ":" + m[1:len(m)-1]
		})
		key := r.Method + " " + shape(path)
		if taken[key] {
			return fmt.Errorf("%s: the server already serves this route", where)
		}
		taken[key] = true
		e.Add(r.Method, path, s.extraHandler(r, names))
	}
	return nil
}

// extraHandler authenticates as r.Auth says, then calls r.Handler with the
// path parameters set and the body capped.
func (s *Server) extraHandler(r Route, names []string) echo.HandlerFunc {
	serve := func(rc *reqCtx) error {
		req := rc.Request()
		for _, n := range names {
			v, err := pathParam(rc, n)
			if err != nil {
				return err
			}
			req.SetPathValue(n, v)
		}
		if req.Body != nil {
			req.Body = http.MaxBytesReader(rc.Response(), req.Body, s.bodyLimit)
		}
		r.Handler.ServeHTTP(rc.Response(), req)
		return nil
	}
	if r.Auth == AuthNone {
		return func(c echo.Context) error {
			rc, ok := c.(*reqCtx)
			if !ok {
				rc = &reqCtx{Context: c}
			}
			return serve(rc)
		}
	}
	return s.withKey(func(rc *reqCtx, k auth.Key) error {
		switch {
		case r.Auth == AuthAdmin:
			if err := requireAdmin(k); err != nil {
				return err
			}
		case k.Role != auth.RoleAdmin && k.Role != auth.RoleEditor:
			return forbidden("an sdk key may only evaluate flags; this needs an editor or admin key")
		}
		return serve(rc)
	})
}
