package api

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/flagpole/flagpole/auth"
)

// echoRoute answers what it saw: path values and the body's size.
func echoRoute(names ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var vals []string
		for _, n := range names {
			vals = append(vals, n+"="+r.PathValue(n))
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, strings.Join(vals, ",")+" body="+string(rune('0'+len(b)%10)))
	})
}

func TestExtraRoutes(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.BodyLimit = 64
		c.Extra = []Route{
			{Method: http.MethodGet, Path: "/api/v1/things/{id}/parts/{part}", Auth: AuthAdmin, Handler: echoRoute("id", "part")},
			{Method: http.MethodPost, Path: "/api/v1/hooks/{hook}", Auth: AuthNone, Handler: echoRoute("hook")},
			{Method: http.MethodPost, Path: "/api/v1/polls", Auth: AuthEditor, Handler: echoRoute()},
			// One shape, two methods, different parameter names.
			{Method: http.MethodPost, Path: "/api/v1/jobs/{config}", Auth: AuthNone, Handler: echoRoute("config")},
			{Method: http.MethodGet, Path: "/api/v1/jobs/{execution}", Auth: AuthNone, Handler: echoRoute("execution")},
		}
	})
	editor := h.newKey(auth.RoleEditor, "ed", "prod")
	sdk := h.newKey(auth.RoleSDK, "sdk", "prod")
	tests := []struct {
		name   string
		r      req
		status int
		body   string // a substring of the answer
	}{
		{"admin route, admin key, escaped values", req{method: "GET", path: "/api/v1/things/a%20b/parts/x", key: h.admin}, 418, "id=a b,part=x"},
		{"admin route, editor key", req{method: "GET", path: "/api/v1/things/a/parts/x", key: editor}, 403, `"forbidden"`},
		{"admin route, no key", req{method: "GET", path: "/api/v1/things/a/parts/x"}, 401, `"unauthorized"`},
		{"admin route, unknown key", req{method: "GET", path: "/api/v1/things/a/parts/x", key: "fp_admin_nope"}, 401, `"unauthorized"`},
		{"open route, no key", req{method: "POST", path: "/api/v1/hooks/rollout", body: "{}"}, 418, "hook=rollout body=2"},
		{"editor route, editor key", req{method: "POST", path: "/api/v1/polls", key: editor, body: "{}"}, 418, "body=2"},
		{"editor route, admin key", req{method: "POST", path: "/api/v1/polls", key: h.admin, body: "{}"}, 418, "body=2"},
		{"editor route, sdk key", req{method: "POST", path: "/api/v1/polls", key: sdk, body: "{}"}, 403, `"forbidden"`},
		{"body over the limit", req{method: "POST", path: "/api/v1/hooks/x", body: `{"a":"` + strings.Repeat("x", 100) + `"}`}, 413, ""},
		{"wrong method", req{method: "GET", path: "/api/v1/hooks/x"}, 405, ""},
		{"POST names its parameter config", req{method: "POST", path: "/api/v1/jobs/c1", body: "{}"}, 418, "config=c1"},
		{"GET names its parameter execution", req{method: "GET", path: "/api/v1/jobs/e1"}, 418, "execution=e1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := h.do(tc.r)
			if res.status != tc.status || !strings.Contains(string(res.body), tc.body) {
				t.Errorf("%d %s, want %d containing %q", res.status, res.body, tc.status, tc.body)
			}
			if res.header.Get("X-Request-Id") == "" {
				t.Error("an extra route skipped the server's middleware (no request ID)")
			}
		})
	}
	// Extra routes are labelled by their pattern in the server's metrics.
	metrics := string(h.do(req{method: "GET", path: "/metrics"}).body)
	if !strings.Contains(metrics, `route="/api/v1/hooks/:hook"`) {
		t.Error("/metrics has no series for the extra route's pattern")
	}
}

func TestExtraRoutesRejected(t *testing.T) {
	ok := echoRoute()
	tests := []struct {
		name  string
		route Route
		want  string
	}{
		{"bad method", Route{Method: "FETCH", Path: "/x", Auth: AuthNone, Handler: ok}, "method"},
		{"relative path", Route{Method: "GET", Path: "x/y", Auth: AuthNone, Handler: ok}, "path"},
		{"bad parameter", Route{Method: "GET", Path: "/x/{1a}", Auth: AuthNone, Handler: ok}, "path"},
		{"nil handler", Route{Method: "GET", Path: "/x", Auth: AuthNone}, "handler"},
		{"unknown auth", Route{Method: "GET", Path: "/x", Auth: "sdk", Handler: ok}, "auth"},
		{"a built-in route", Route{Method: "GET", Path: "/api/v1/keys", Auth: AuthAdmin, Handler: ok}, "already serves"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			_, err := New(Config{Store: h.store, Keys: h.store, Flags: h.svc, Extra: []Route{tc.route}})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "Config.Extra[0]") {
				t.Errorf("New = %v, want an error about the %s naming Config.Extra[0]", err, tc.want)
			}
		})
	}
	h := newHarness(t)
	twice := []Route{{Method: "GET", Path: "/a/{x}", Auth: AuthNone, Handler: ok}, {Method: "GET", Path: "/a/{y}", Auth: AuthNone, Handler: ok}}
	if _, err := New(Config{Store: h.store, Keys: h.store, Flags: h.svc, Extra: twice}); err == nil || !strings.Contains(err.Error(), "Config.Extra[1]") {
		t.Errorf("two routes with one pattern: %v", err)
	}
}
