package api

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flagpole/flagpole/api/ofrep"
	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/flags"
)

const boolFlag = `{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}`

// evalValue evaluates one flag through OFREP and returns the decoded body.
func (h *harness) eval(env, key, secret string) (int, ofrep.Evaluation) {
	h.t.Helper()
	r := h.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags/" + key + "?env=" + env, key: secret})
	var e ofrep.Evaluation
	_ = json.Unmarshal(r.body, &e)
	return r.status, e
}

func TestAdminRoutesHappyPath(t *testing.T) {
	h := newHarness(t)
	admin := h.admin

	// Environments.
	r := h.do(req{method: "POST", path: "/api/v1/environments", key: admin,
		body: `{"name":"prod","flags":{"flags":{"checkout":` + boolFlag + `}},"reason":"launch"}`})
	if r.status != 201 {
		t.Fatalf("create env: %d %s", r.status, r.body)
	}
	if r.header.Get("ETag") != `"1"` || r.header.Get("Location") != "/api/v1/environments/prod" {
		t.Errorf("create env headers: ETag %q Location %q", r.header.Get("ETag"), r.header.Get("Location"))
	}
	if m := r.json(t); m["name"] != "prod" || m["version"] != 1.0 || m["updatedAt"] == nil {
		t.Errorf("create env body: %v", m)
	}
	// The new environment is served at once on this replica.
	if st, e := h.eval("prod", "checkout", admin); st != 200 || e.Value != false {
		t.Fatalf("eval after create: %d %+v", st, e)
	}
	r = h.do(req{method: "GET", path: "/api/v1/environments", key: admin})
	var envs struct {
		Environments []envInfo `json:"environments"`
	}
	if err := json.Unmarshal(r.body, &envs); err != nil || r.status != 200 || len(envs.Environments) != 1 || envs.Environments[0].Name != "prod" {
		t.Errorf("list envs: %d %s", r.status, r.body)
	}
	r = h.do(req{method: "GET", path: "/api/v1/environments/prod", key: admin})
	if m := r.json(t); r.status != 200 || m["flagCount"] != 1.0 || m["version"] != 1.0 {
		t.Errorf("get env: %d %s", r.status, r.body)
	}

	// Flags: create, list, get (and 304), put, patch, delete.
	r = h.do(req{method: "POST", path: "/api/v1/environments/prod/flags", key: admin,
		header: map[string]string{"X-Change-Reason": "new banner"},
		body:   `{"key":"banner","state":"ENABLED","variants":{"a":"A","b":"B"},"defaultVariant":"a","metadata":{"owner":"web"}}`})
	if r.status != 201 || r.header.Get("ETag") != `"2"` || r.header.Get("Location") != "/api/v1/environments/prod/flags/banner" {
		t.Fatalf("create flag: %d %v %s", r.status, r.header, r.body)
	}
	want := map[string]any{"key": "banner", "state": "ENABLED", "variants": map[string]any{"a": "A", "b": "B"}, "defaultVariant": "a", "targeting": map[string]any{}, "metadata": map[string]any{"owner": "web"}}
	if got := r.json(t); !reflect.DeepEqual(got, want) {
		t.Errorf("create flag body:\n got %v\nwant %v", got, want)
	}
	if st, e := h.eval("prod", "banner", admin); st != 200 || e.Value != "A" {
		t.Errorf("eval new flag: %d %+v", st, e)
	}
	r = h.do(req{method: "GET", path: "/api/v1/environments/prod/flags", key: admin})
	var list struct {
		Version int64     `json:"version"`
		Flags   []flagOut `json:"flags"`
	}
	if err := json.Unmarshal(r.body, &list); err != nil || list.Version != 2 || len(list.Flags) != 2 || list.Flags[0].Key != "banner" || list.Flags[1].Key != "checkout" {
		t.Errorf("list flags: %s", r.body)
	}
	r = h.do(req{method: "GET", path: "/api/v1/environments/prod/flags/banner", key: admin})
	if r.status != 200 || r.header.Get("ETag") != `"2"` {
		t.Errorf("get flag: %d %v", r.status, r.header)
	}
	r = h.do(req{method: "GET", path: "/api/v1/environments/prod/flags/banner", key: admin, header: map[string]string{"If-None-Match": `"2"`}})
	if r.status != 304 {
		t.Errorf("get flag If-None-Match: %d", r.status)
	}
	r = h.do(req{method: "PUT", path: "/api/v1/environments/prod/flags/banner", key: admin, header: map[string]string{"If-Match": `"2"`},
		body: `{"state":"ENABLED","variants":{"a":"A","b":"B"},"defaultVariant":"b","targeting":{"if":[{"==":[{"var":"email"},"x@y.z"]},"a"]}}`})
	if r.status != 200 || r.header.Get("ETag") != `"3"` {
		t.Fatalf("put flag: %d %s", r.status, r.body)
	}
	if st, e := h.eval("prod", "banner", admin); st != 200 || e.Value != "B" || e.Reason != "DEFAULT" {
		t.Errorf("eval after put: %d %+v", st, e)
	}
	r = h.do(req{method: "PATCH", path: "/api/v1/environments/prod/flags/banner", key: admin, body: `{"state":"DISABLED","reason":"incident 42"}`})
	if m := r.json(t); r.status != 200 || m["state"] != "DISABLED" {
		t.Fatalf("patch flag: %d %s", r.status, r.body)
	}
	if st, e := h.eval("prod", "banner", admin); st != 200 || e.Reason != "DISABLED" || e.Value != nil {
		t.Errorf("eval after disable: %d %+v", st, e)
	}
	r = h.do(req{method: "PATCH", path: "/api/v1/environments/prod/flags/banner", key: admin, body: `{"state":"ENABLED","targeting":null,"defaultVariant":null}`})
	if m := r.json(t); r.status != 200 || m["defaultVariant"] != nil || !reflect.DeepEqual(m["targeting"], map[string]any{}) {
		t.Fatalf("patch clear: %d %s", r.status, r.body)
	}
	r = h.do(req{method: "DELETE", path: "/api/v1/environments/prod/flags/banner", key: admin})
	if r.status != 204 {
		t.Fatalf("delete flag: %d %s", r.status, r.body)
	}
	if r := h.do(req{method: "GET", path: "/api/v1/environments/prod/flags/banner", key: admin}); r.status != 404 {
		t.Errorf("get deleted flag: %d", r.status)
	}
	if st, _ := h.eval("prod", "banner", admin); st != 404 {
		t.Errorf("eval deleted flag: %d", st)
	}

	// Flag set export (JSON, YAML, 304) and import (YAML).
	r = h.do(req{method: "GET", path: "/api/v1/environments/prod/flagset", key: admin})
	etag := r.header.Get("ETag")
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" || etag == "" {
		t.Fatalf("export: %d %v", r.status, r.header)
	}
	if _, err := flags.Parse(r.body); err != nil {
		t.Errorf("exported JSON does not parse: %v", err)
	}
	for _, hdr := range []map[string]string{{"Accept": "application/yaml"}, nil} {
		path := "/api/v1/environments/prod/flagset"
		if hdr == nil {
			path += "?format=yaml"
		}
		r = h.do(req{method: "GET", path: path, key: admin, header: hdr})
		if r.status != 200 || r.header.Get("Content-Type") != "application/yaml" || !strings.Contains(string(r.body), "checkout:") {
			t.Errorf("export YAML (%v): %d %s", hdr, r.status, r.body)
		}
	}
	if r := h.do(req{method: "GET", path: "/api/v1/environments/prod/flagset", key: admin, header: map[string]string{"If-None-Match": etag}}); r.status != 304 {
		t.Errorf("export If-None-Match: %d", r.status)
	}
	yamlDoc := "flags:\n  checkout:\n    state: ENABLED\n    variants: {on: true, off: false}\n    defaultVariant: \"on\"\n"
	r = h.do(req{method: "PUT", path: "/api/v1/environments/prod/flagset", key: admin, body: yamlDoc,
		header: map[string]string{"Content-Type": "application/yaml", "X-Change-Reason": "import from git"}})
	if r.status != 200 {
		t.Fatalf("import YAML: %d %s", r.status, r.body)
	}
	if st, e := h.eval("prod", "checkout", admin); st != 200 || e.Value != true {
		t.Errorf("eval after import: %d %+v", st, e)
	}

	// Audit: newest first, who and why; per flag; paged.
	r = h.do(req{method: "GET", path: "/api/v1/environments/prod/audit", key: admin})
	var page flags.AuditPage
	if err := json.Unmarshal(r.body, &page); err != nil || r.status != 200 {
		t.Fatalf("audit: %d %s", r.status, r.body)
	}
	var actions, reasons []string
	for _, e := range page.Entries {
		actions = append(actions, e.Action)
		reasons = append(reasons, e.Reason)
		if e.Actor != "admin" {
			t.Errorf("actor = %q, want the key's name", e.Actor)
		}
	}
	wantActions := []string{"flagset.import", "flag.delete", "flag.update", "flag.update", "flag.update", "flag.create", "environment.create"}
	if !slices.Equal(actions, wantActions) {
		t.Errorf("audit actions = %v, want %v", actions, wantActions)
	}
	for _, why := range []string{"launch", "new banner", "incident 42", "import from git"} {
		if !slices.Contains(reasons, why) {
			t.Errorf("audit reasons %q lack %q", reasons, why)
		}
	}
	r = h.do(req{method: "GET", path: "/api/v1/environments/prod/audit?flag=banner&limit=2", key: admin})
	page = flags.AuditPage{}
	if err := json.Unmarshal(r.body, &page); err != nil || len(page.Entries) != 2 || page.Next == "" || page.Entries[0].Action != "flag.delete" {
		t.Fatalf("audit page 1: %s", r.body)
	}
	r = h.do(req{method: "GET", path: "/api/v1/environments/prod/audit?flag=banner&limit=2&cursor=" + page.Next, key: admin})
	page2 := flags.AuditPage{}
	if err := json.Unmarshal(r.body, &page2); err != nil || len(page2.Entries) == 0 || page2.Entries[0].ID == page.Entries[0].ID {
		t.Errorf("audit page 2: %s", r.body)
	}

	// Keys: create (secret once), use, list (no secret), revoke.
	r = h.do(req{method: "POST", path: "/api/v1/keys", key: admin, body: `{"name":"web","role":"sdk","environments":["prod"]}`})
	var ck createdKey
	if err := json.Unmarshal(r.body, &ck); err != nil || r.status != 201 || !strings.HasPrefix(ck.Secret, "fp_sdk_") || ck.ID == "" || !strings.HasPrefix(ck.Secret, ck.Prefix) {
		t.Fatalf("create key: %d %s", r.status, r.body)
	}
	if st, e := h.eval("prod", "checkout", ck.Secret); st != 200 || e.Value != true {
		t.Errorf("eval with new sdk key: %d", st)
	}
	r = h.do(req{method: "GET", path: "/api/v1/keys", key: admin})
	if r.status != 200 || strings.Contains(string(r.body), ck.Secret) || strings.Contains(string(r.body), auth.HashSecret(ck.Secret)) || !strings.Contains(string(r.body), ck.ID) {
		t.Errorf("list keys shows a secret or lacks the key: %s", r.body)
	}
	if r := h.do(req{method: "DELETE", path: "/api/v1/keys/" + ck.ID, key: admin}); r.status != 204 {
		t.Errorf("revoke: %d %s", r.status, r.body)
	}
	if st, _ := h.eval("prod", "checkout", ck.Secret); st != 401 {
		t.Errorf("eval with revoked key: %d", st)
	}

	// Delete the environment.
	if r := h.do(req{method: "DELETE", path: "/api/v1/environments/prod", key: admin}); r.status != 204 {
		t.Fatalf("delete env: %d %s", r.status, r.body)
	}
	if r := h.do(req{method: "GET", path: "/api/v1/environments/prod", key: admin}); r.status != 404 {
		t.Errorf("get deleted env: %d", r.status)
	}
	if st, _ := h.eval("prod", "checkout", admin); st != 404 {
		t.Errorf("eval in deleted env: %d", st)
	}
}

func TestMetaRoutes(t *testing.T) {
	h := newHarness(t)
	h.createEnv("default", testFlags)
	h.eval("default", "static-on", h.admin)
	tests := []struct {
		path     string
		contains []string
	}{
		{"/healthz", []string{`"status":"ok"`}},
		{"/readyz", []string{`"status":"ready"`, `"store":{"status":"ok"}`}},
		{"/api/v1/openapi.json", []string{`"openapi": "3.0.3"`}},
		{"/metrics", []string{
			`flagpole_flag_evaluations_total{environment="default",flag="static-on",reason="STATIC",variant="on"} 1`,
			`flagpole_flagset_version{environment="default"} 1`,
			`flagpole_http_requests_total{code="200",method="POST",route="/ofrep/v1/evaluate/flags/:key"} 1`,
			`flagpole_ofrep_evaluation_duration_seconds_count{kind="single"} 1`,
			`flagpole_flagset_reloads_total{result="ok"}`,
			`go_goroutines`, `process_cpu_seconds_total`,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			r := h.do(req{method: "GET", path: tc.path})
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			for _, c := range tc.contains {
				if !strings.Contains(string(r.body), c) {
					t.Errorf("body lacks %s", c)
				}
			}
		})
	}
}

func TestRequestIDAndLogs(t *testing.T) {
	h := newHarness(t)
	h.createEnv("default", testFlags)
	r := h.do(req{method: "GET", path: "/api/v1/environments", key: h.admin, header: map[string]string{"X-Request-ID": "trace-123"}})
	if r.header.Get("X-Request-ID") != "trace-123" {
		t.Errorf("X-Request-ID not echoed: %q", r.header.Get("X-Request-ID"))
	}
	r2 := h.do(req{method: "GET", path: "/api/v1/environments", key: h.admin, header: map[string]string{"X-Request-ID": "bad id\twith junk"}})
	r3 := h.do(req{method: "GET", path: "/api/v1/environments", key: h.admin})
	id2, id3 := r2.header.Get("X-Request-ID"), r3.header.Get("X-Request-ID")
	if id2 == "" || id2 == id3 || strings.Contains(id2, " ") {
		t.Errorf("generated request IDs %q, %q", id2, id3)
	}
	h.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags/static-on", key: h.admin})
	h.do(req{method: "GET", path: "/api/v1/keys", key: "fp_admin_wrong-secret"})
	logs := h.logs.String()
	if !strings.Contains(logs, `"request_id":"trace-123"`) || !strings.Contains(logs, `"route":"/api/v1/environments"`) {
		t.Errorf("request log lacks request_id or route:\n%s", logs)
	}
	if strings.Contains(logs, h.admin) || strings.Contains(logs, "wrong-secret") {
		t.Errorf("a secret appears in the logs")
	}
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	h := newHarness(t)
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi = %q", doc.OpenAPI)
	}
	routes := map[string]bool{}
	for _, r := range h.srv.e.Routes() {
		p := r.Path
		for _, seg := range strings.Split(p, "/") {
			if strings.HasPrefix(seg, ":") {
				p = strings.Replace(p, seg, "{"+seg[1:]+"}", 1)
			}
		}
		routes[strings.ToLower(r.Method)+" "+p] = true
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			switch m {
			case "get", "put", "post", "patch", "delete", "head", "options":
				documented[m+" "+p] = true
			}
		}
	}
	for r := range routes {
		if !documented[r] {
			t.Errorf("route %s is not documented", r)
		}
	}
	for d := range documented {
		if !routes[d] {
			t.Errorf("documented %s is not a route", d)
		}
	}
	// Every $ref points at something that exists.
	var all map[string]any
	_ = json.Unmarshal(openAPIDoc, &all)
	var walk func(v any)
	walk = func(v any) {
		switch t2 := v.(type) {
		case map[string]any:
			if ref, ok := t2["$ref"].(string); ok {
				parts := strings.Split(strings.TrimPrefix(ref, "#/"), "/")
				var cur any = all
				for _, p := range parts {
					m, _ := cur.(map[string]any)
					cur = m[p]
				}
				if cur == nil {
					t.Errorf("dangling $ref %s", ref)
				}
			}
			for _, c := range t2 {
				walk(c)
			}
		case []any:
			for _, c := range t2 {
				walk(c)
			}
		}
	}
	walk(all)
}

func TestInvalidStoredSetKeepsLastGood(t *testing.T) {
	h := newHarness(t)
	snap := h.createEnv("default", testFlags)
	// Write a set that does not compile straight into the store, bypassing
	// the service's validation (as a buggy writer or manual edit would).
	bad := []byte(`{"flags":{"static-on":{"state":"ENABLED","variants":{"on":true},"defaultVariant":"missing"}}}`)
	if _, err := h.raw.Save(context.Background(), "default", snap.Version, bad, flags.AuditEntry{Env: "default", Actor: "test", Action: "flagset.import"}); err != nil {
		t.Fatalf("Save: %v", err)
	}
	waitFor(t, "the invalid set to be rejected", func() bool {
		return strings.Contains(h.logs.String(), "does not compile")
	})
	if st := h.srv.env("default"); st.version != snap.Version {
		t.Errorf("serving version %d, want the last good %d", st.version, snap.Version)
	}
	if st, e := h.eval("default", "static-on", h.admin); st != 200 || e.Value != true {
		t.Errorf("eval after a bad stored set: %d %+v", st, e)
	}
	r := h.do(req{method: "GET", path: "/metrics"})
	if !strings.Contains(string(r.body), `flagpole_flagset_reloads_total{result="invalid"} 1`) {
		t.Errorf("invalid reload not counted once (the poll must not recount it)")
	}
	// A valid set stored after it is served.
	good := []byte(`{"flags":{"static-on":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}}}`)
	if _, err := h.raw.Save(context.Background(), "default", snap.Version+1, good, flags.AuditEntry{Env: "default", Actor: "test", Action: "flagset.import"}); err != nil {
		t.Fatalf("Save: %v", err)
	}
	h.waitVersion("default", snap.Version+2)
	if st, e := h.eval("default", "static-on", h.admin); st != 200 || e.Value != false {
		t.Errorf("eval after a good set: %d %+v", st, e)
	}
}

func TestReplicasFollowEachOther(t *testing.T) {
	a := newHarness(t)
	b := newHarnessOn(t, a.raw)
	a.createEnv("default", testFlags)
	b.waitVersion("default", 1)
	r := a.do(req{method: "PATCH", path: "/api/v1/environments/default/flags/static-on", key: a.admin, body: `{"defaultVariant":"off"}`})
	if r.status != 200 {
		t.Fatalf("patch on A: %d %s", r.status, r.body)
	}
	b.waitVersion("default", 2)
	if st, e := b.eval("default", "static-on", b.admin); st != 200 || e.Value != false {
		t.Errorf("B after A's write: %d %+v", st, e)
	}
	if r := a.do(req{method: "DELETE", path: "/api/v1/environments/default", key: a.admin}); r.status != 204 {
		t.Fatalf("delete on A: %d", r.status)
	}
	waitFor(t, "B to drop the environment", func() bool { return b.srv.env("default") == nil })
}

func TestFailStatic(t *testing.T) {
	h := newHarness(t)
	h.createEnv("default", testFlags)
	sdk := h.newKey(auth.RoleSDK, "web", "default")
	neverSeen := h.newKey(auth.RoleSDK, "late", "default")
	// Warm the key cache, then take the store away.
	if st, _ := h.eval("default", "static-on", sdk); st != 200 {
		t.Fatalf("warm-up: %d", st)
	}
	h.eval("default", "static-on", h.admin)
	h.store.down.Store(true)

	for i := range 20 { // evaluation keeps serving, also past the key cache's TTL
		if i == 10 {
			h.clock.Set(time.Now().Add(2 * keyCacheTTL)) // past the key cache TTL
		}
		if st, e := h.eval("default", "banner-color", sdk); st != 200 || e.Variant == "" {
			t.Fatalf("evaluation %d with the store down: %d %+v", i, st, e)
		}
		r := h.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags", key: sdk})
		if r.status != 200 {
			t.Fatalf("bulk with the store down: %d", r.status)
		}
	}
	writes := []req{
		{method: "PATCH", path: "/api/v1/environments/default/flags/static-on", key: h.admin, body: `{"state":"DISABLED"}`},
		{method: "POST", path: "/api/v1/environments", key: h.admin, body: `{"name":"other"}`},
		{method: "PUT", path: "/api/v1/environments/default/flagset", key: h.admin, body: `{"flags":{}}`},
		{method: "POST", path: "/api/v1/keys", key: h.admin, body: `{"name":"x","role":"admin"}`},
	}
	for _, w := range writes {
		r := h.do(w)
		e := errorOf(t, r)
		if r.status != 503 || e.Code != "unavailable" || !strings.Contains(e.Message, "nothing was changed") {
			t.Errorf("%s %s with the store down: %d %+v", w.method, w.path, r.status, e)
		}
	}
	// Reads fall back to what this replica serves.
	if r := h.do(req{method: "GET", path: "/api/v1/environments/default/flags/static-on", key: h.admin}); r.status != 200 {
		t.Errorf("read with the store down: %d %s", r.status, r.body)
	}
	if st, _ := h.eval("default", "static-on", neverSeen); st != 503 {
		t.Errorf("a key never seen, with the key store down: %d, want 503", st)
	}
	r := h.do(req{method: "GET", path: "/readyz"})
	var rd readiness
	if err := json.Unmarshal(r.body, &rd); err != nil || r.status != 200 || rd.Status != "degraded" || rd.Components["store"].Status != "degraded" || rd.Components["store"].Error == "" {
		t.Errorf("readyz with the store down: %d %s", r.status, r.body)
	}

	h.store.down.Store(false)
	r = h.do(req{method: "PATCH", path: "/api/v1/environments/default/flags/static-on", key: h.admin, body: `{"state":"DISABLED"}`})
	if r.status != 200 {
		t.Fatalf("write after recovery: %d %s", r.status, r.body)
	}
	if st, e := h.eval("default", "static-on", sdk); st != 200 || e.Reason != "DISABLED" {
		t.Errorf("eval after recovery: %d %+v", st, e)
	}
	waitFor(t, "readyz to recover", func() bool {
		r := h.do(req{method: "GET", path: "/readyz"})
		return strings.Contains(string(r.body), `"status":"ready"`)
	})
}

func TestIfMatch(t *testing.T) {
	h := newHarness(t)
	h.createEnv("default", `{"flags":{"f":`+boolFlag+`}}`)
	path := "/api/v1/environments/default/flags/f"
	tests := []struct {
		name    string
		ifMatch string
		status  int
	}{
		{"stale version", `"7"`, 412},
		{"weak tag", `W/"1"`, 412},
		{"not a version", `"abc"`, 412},
		{"two tags", `"1", "2"`, 400},
		{"current version", `"1"`, 200},
		{"star", `*`, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := h.srv.env("default").version
			cur, _ := h.store.Snapshot(context.Background(), "default")
			ifm := tc.ifMatch
			if tc.name == "current version" {
				ifm = cur.ETag()
			}
			r := h.do(req{method: "PATCH", path: path, key: h.admin, body: `{"state":"DISABLED"}`, header: map[string]string{"If-Match": ifm}})
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			after, _ := h.store.Snapshot(context.Background(), "default")
			if tc.status != 200 {
				e := errorOf(t, r)
				if after.Version != cur.Version || h.srv.env("default").version != before {
					t.Errorf("a refused write changed the version: %d -> %d", cur.Version, after.Version)
				}
				if tc.status == 412 && e.Code != "precondition_failed" {
					t.Errorf("code %q", e.Code)
				}
			}
			// Toggle back for the next case.
			_, _ = h.svc.PatchFlag(context.Background(), "default", "f", flags.FlagPatch{State: ptr(flags.Enabled)}, flags.WriteOptions{Actor: "test"})
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestRoles checks the status a key of each role gets on every admin route.
func TestRoles(t *testing.T) {
	h := newHarness(t)
	h.createEnv("prod", `{"flags":{"f":`+boolFlag+`}}`)
	h.createEnv("dev", `{"flags":{"f":`+boolFlag+`}}`)
	keys := map[string]string{
		"admin":      h.admin,
		"editor-dev": h.newKey(auth.RoleEditor, "ed", "dev"),
		"sdk-dev":    h.newKey(auth.RoleSDK, "sdk", "dev"),
	}
	type want map[string]int
	tests := []struct {
		name   string
		method string
		path   string
		body   string
		want   want
	}{
		{"list envs", "GET", "/api/v1/environments", "", want{"admin": 200, "editor-dev": 200, "sdk-dev": 403}},
		{"create env", "POST", "/api/v1/environments", `{"name":"x-%s"}`, want{"admin": 201, "editor-dev": 403, "sdk-dev": 403}},
		{"get own env", "GET", "/api/v1/environments/dev", "", want{"admin": 200, "editor-dev": 200, "sdk-dev": 403}},
		{"get other env", "GET", "/api/v1/environments/prod", "", want{"admin": 200, "editor-dev": 403, "sdk-dev": 403}},
		{"list flags other env", "GET", "/api/v1/environments/prod/flags", "", want{"admin": 200, "editor-dev": 403, "sdk-dev": 403}},
		{"create flag own env", "POST", "/api/v1/environments/dev/flags", `{"key":"n-%s","state":"ENABLED","variants":{"a":1}}`, want{"admin": 201, "editor-dev": 201, "sdk-dev": 403}},
		{"put flag other env", "PUT", "/api/v1/environments/prod/flags/f", boolFlag, want{"admin": 200, "editor-dev": 403, "sdk-dev": 403}},
		{"patch flag own env", "PATCH", "/api/v1/environments/dev/flags/f", `{"metadata":{"by":"%s"}}`, want{"admin": 200, "editor-dev": 200, "sdk-dev": 403}},
		{"export own env", "GET", "/api/v1/environments/dev/flagset", "", want{"admin": 200, "editor-dev": 200, "sdk-dev": 200}},
		{"export other env", "GET", "/api/v1/environments/prod/flagset", "", want{"admin": 200, "editor-dev": 403, "sdk-dev": 403}},
		{"import other env", "PUT", "/api/v1/environments/prod/flagset", `{"flags":{"f":` + boolFlag + `}}`, want{"admin": 200, "editor-dev": 403, "sdk-dev": 403}},
		{"audit own env", "GET", "/api/v1/environments/dev/audit", "", want{"admin": 200, "editor-dev": 200, "sdk-dev": 403}},
		{"list keys", "GET", "/api/v1/keys", "", want{"admin": 200, "editor-dev": 403, "sdk-dev": 403}},
		{"create key", "POST", "/api/v1/keys", `{"name":"k-%s","role":"sdk","environments":["dev"]}`, want{"admin": 201, "editor-dev": 403, "sdk-dev": 403}},
		{"revoke key", "DELETE", "/api/v1/keys/nope", "", want{"admin": 404, "editor-dev": 403, "sdk-dev": 403}},
		{"delete env", "DELETE", "/api/v1/environments/nope", "", want{"admin": 404, "editor-dev": 403, "sdk-dev": 403}},
		{"delete flag other env", "DELETE", "/api/v1/environments/prod/flags/nope", "", want{"admin": 404, "editor-dev": 403, "sdk-dev": 403}},
	}
	for _, tc := range tests {
		for role, status := range tc.want {
			t.Run(tc.name+"/"+role, func(t *testing.T) {
				before, _ := h.store.Environments(context.Background())
				body := tc.body
				if strings.Contains(body, "%s") {
					body = fmt.Sprintf(body, strings.ReplaceAll(role, "-", ""))
				}
				r := h.do(req{method: tc.method, path: tc.path, key: keys[role], body: body})
				if r.status != status {
					t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
				}
				if status == 403 {
					if e := errorOf(t, r); e.Code != "forbidden" {
						t.Errorf("code %q", e.Code)
					}
					after, _ := h.store.Environments(context.Background())
					if !reflect.DeepEqual(before, after) {
						t.Errorf("a forbidden request changed the environments")
					}
				}
			})
		}
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.BodyLimit = 4096 })
	h.createEnv("default", `{"flags":{"f":`+boolFlag+`}}`)
	sdk := h.newKey(auth.RoleSDK, "sdk", "default")
	huge := `{"name":"x","flags":{"flags":{"f":{"state":"ENABLED","variants":{"a":"` + strings.Repeat("x", 5000) + `"}}}}}`
	tests := []struct {
		name        string
		r           req
		status      int
		code        string
		field       string // a detail must name this field
		msgContains string
	}{
		{name: "malformed JSON", r: req{method: "PATCH", path: "/api/v1/environments/default/flags/f", body: `{"state": "DISABLED",}`}, status: 400, code: "invalid_request", field: "body", msgContains: "line 1, column"},
		{name: "truncated JSON", r: req{method: "POST", path: "/api/v1/environments/default/flags", body: `{"key":"g"`}, status: 400, code: "invalid_request", field: "body"},
		{name: "trailing data", r: req{method: "POST", path: "/api/v1/environments", body: `{"name":"x"} {}`}, status: 400, code: "invalid_request", field: "body"},
		{name: "empty body", r: req{method: "POST", path: "/api/v1/keys", body: ` `}, status: 400, code: "invalid_request", field: "body"},
		{name: "wrong type", r: req{method: "POST", path: "/api/v1/environments/default/flags", body: `{"key":"g","state":"ENABLED","variants":["a"]}`}, status: 400, code: "invalid_request", field: "variants"},
		{name: "wrong type in patch", r: req{method: "PATCH", path: "/api/v1/environments/default/flags/f", body: `{"state":true}`}, status: 400, code: "invalid_request", field: "state"},
		{name: "unknown field", r: req{method: "PATCH", path: "/api/v1/environments/default/flags/f", body: `{"stat":"DISABLED"}`}, status: 400, code: "invalid_request", field: "stat"},
		{name: "unknown field in key", r: req{method: "POST", path: "/api/v1/keys", body: `{"name":"k","role":"admin","admin":true}`}, status: 400, code: "invalid_request", field: "admin"},
		{name: "empty patch", r: req{method: "PATCH", path: "/api/v1/environments/default/flags/f", body: `{}`}, status: 400, code: "invalid_request", field: "body"},
		{name: "bad state", r: req{method: "PATCH", path: "/api/v1/environments/default/flags/f", body: `{"state":"ON"}`}, status: 400, code: "invalid_request", field: "state"},
		{name: "targeting not an object", r: req{method: "PATCH", path: "/api/v1/environments/default/flags/f", body: `{"targeting":"yes"}`}, status: 400, code: "invalid_request", field: "targeting"},
		{name: "huge body", r: req{method: "POST", path: "/api/v1/environments", body: huge}, status: 413, code: "too_large", field: "body"},
		{name: "huge OFREP body", r: req{method: "POST", path: "/ofrep/v1/evaluate/flags", body: `{"context":{"a":"` + strings.Repeat("x", 5000) + `"}}`}, status: 413},
		{name: "wrong content type", r: req{method: "POST", path: "/api/v1/environments/default/flags", body: `{"key":"g"}`, header: map[string]string{"Content-Type": "text/plain"}}, status: 415, code: "unsupported_media_type", field: "Content-Type"},
		{name: "flag set as form", r: req{method: "PUT", path: "/api/v1/environments/default/flagset", body: `flags=1`, header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, status: 415, code: "unsupported_media_type"},
		{name: "invalid flag", r: req{method: "POST", path: "/api/v1/environments/default/flags", body: `{"key":"g","state":"ENABLED","variants":{"a":1},"defaultVariant":"zzz"}`}, status: 422, code: "invalid_flags", field: "flags.g.defaultVariant"},
		{name: "invalid targeting", r: req{method: "PUT", path: "/api/v1/environments/default/flags/f", body: `{"state":"ENABLED","variants":{"on":true},"targeting":{"nosuchop":[1]}}`}, status: 422, code: "invalid_flags"},
		{name: "invalid flag set", r: req{method: "PUT", path: "/api/v1/environments/default/flagset", body: `{"flags":{"f":{"state":"MAYBE","variants":{}}}}`}, status: 422, code: "invalid_flags"},
		{name: "malformed YAML flag set", r: req{method: "PUT", path: "/api/v1/environments/default/flagset", body: "flags: [\n", header: map[string]string{"Content-Type": "application/yaml"}}, status: 422, code: "invalid_flags"},
		{name: "invalid flags on env create", r: req{method: "POST", path: "/api/v1/environments", body: `{"name":"new","flags":{"flags":{"f":{"state":"ENABLED","variants":{"a":1},"defaultVariant":"b"}}}}`}, status: 422, code: "invalid_flags", field: "flags.flags.f.defaultVariant"},
		{name: "bad env name", r: req{method: "POST", path: "/api/v1/environments", body: `{"name":"Prod!"}`}, status: 400, code: "invalid_request", field: "name"},
		{name: "existing env", r: req{method: "POST", path: "/api/v1/environments", body: `{"name":"default"}`}, status: 409, code: "conflict"},
		{name: "existing flag", r: req{method: "POST", path: "/api/v1/environments/default/flags", body: `{"key":"f","state":"ENABLED","variants":{"a":1}}`}, status: 409, code: "conflict", field: "key"},
		{name: "flag key missing", r: req{method: "POST", path: "/api/v1/environments/default/flags", body: `{"state":"ENABLED","variants":{"a":1}}`}, status: 400, code: "invalid_request", field: "key"},
		{name: "key mismatch on put", r: req{method: "PUT", path: "/api/v1/environments/default/flags/f", body: `{"key":"g","state":"ENABLED","variants":{"a":1}}`}, status: 400, code: "invalid_request", field: "key"},
		{name: "unknown env", r: req{method: "POST", path: "/api/v1/environments/nowhere/flags", body: `{"key":"g","state":"ENABLED","variants":{"a":1}}`}, status: 404, code: "not_found", field: "env"},
		{name: "unknown env read", r: req{method: "GET", path: "/api/v1/environments/nowhere/flags"}, status: 404, code: "not_found", field: "env"},
		{name: "unknown flag patch", r: req{method: "PATCH", path: "/api/v1/environments/default/flags/nope", body: `{"state":"DISABLED"}`}, status: 404, code: "not_found", field: "key"},
		{name: "bad audit limit", r: req{method: "GET", path: "/api/v1/environments/default/audit?limit=0"}, status: 400, code: "invalid_request", field: "limit"},
		{name: "bad export format", r: req{method: "GET", path: "/api/v1/environments/default/flagset?format=xml"}, status: 400, code: "invalid_request", field: "format"},
		{name: "bad key role", r: req{method: "POST", path: "/api/v1/keys", body: `{"name":"k","role":"root"}`}, status: 400, code: "invalid_request", field: "role"},
		{name: "sdk key without env", r: req{method: "POST", path: "/api/v1/keys", body: `{"name":"k","role":"sdk"}`}, status: 400, code: "invalid_request", field: "environments"},
		{name: "bad key env name", r: req{method: "POST", path: "/api/v1/keys", body: `{"name":"k","role":"editor","environments":["ok","Not OK"]}`}, status: 400, code: "invalid_request", field: "environments[1]"},
		{name: "reason too long", r: req{method: "PATCH", path: "/api/v1/environments/default/flags/f", body: `{"state":"DISABLED"}`, header: map[string]string{"X-Change-Reason": strings.Repeat("r", 2000)}}, status: 400, code: "invalid_request", field: "reason"},
		{name: "missing key", r: req{method: "PATCH", path: "/api/v1/environments/default/flags/f", body: `{"state":"DISABLED"}`, header: map[string]string{"Authorization": ""}}, status: 401, code: "unauthorized"},
		{name: "invalid key", r: req{method: "PATCH", path: "/api/v1/environments/default/flags/f", body: `{"state":"DISABLED"}`, key: "fp_admin_forged"}, status: 401, code: "unauthorized"},
		{name: "sdk key on admin route", r: req{method: "PATCH", path: "/api/v1/environments/default/flags/f", body: `{"state":"DISABLED"}`, key: sdk}, status: 403, code: "forbidden"},
		{name: "unknown route", r: req{method: "GET", path: "/api/v1/nothing"}, status: 404, code: "not_found"},
		{name: "wrong method", r: req{method: "PATCH", path: "/api/v1/environments"}, status: 405, code: "method_not_allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			beforeEnvs, _ := h.store.Environments(context.Background())
			beforeSnap, _ := h.store.Snapshot(context.Background(), "default")
			beforeKeys, _ := h.store.Keys(context.Background())
			r := tc.r
			if r.key == "" && r.header["Authorization"] == "" && tc.name != "missing key" {
				r.key = h.admin
			}
			if tc.name == "missing key" {
				r.header = nil
			}
			res := h.do(r)
			if res.status != tc.status {
				t.Fatalf("status %d, want %d: %s", res.status, tc.status, res.body)
			}
			if tc.code != "" {
				e := errorOf(t, res)
				if e.Code != tc.code {
					t.Errorf("code %q, want %q (%s)", e.Code, tc.code, e.Message)
				}
				if tc.field != "" && !slices.ContainsFunc(e.Details, func(d Detail) bool { return d.Field == tc.field && d.Problem != "" }) {
					t.Errorf("details %+v do not name %q", e.Details, tc.field)
				}
				if tc.msgContains != "" && !strings.Contains(e.Message, tc.msgContains) {
					t.Errorf("message %q lacks %q", e.Message, tc.msgContains)
				}
			}
			if res.header.Get("Content-Type") != "application/json" && res.status != 405 {
				t.Errorf("Content-Type %q", res.header.Get("Content-Type"))
			}
			afterEnvs, _ := h.store.Environments(context.Background())
			afterSnap, _ := h.store.Snapshot(context.Background(), "default")
			afterKeys, _ := h.store.Keys(context.Background())
			if !reflect.DeepEqual(beforeEnvs, afterEnvs) || afterSnap.Version != beforeSnap.Version || len(afterKeys) != len(beforeKeys) {
				t.Errorf("a refused request changed something: envs %v -> %v, version %d -> %d, keys %d -> %d",
					beforeEnvs, afterEnvs, beforeSnap.Version, afterSnap.Version, len(beforeKeys), len(afterKeys))
			}
		})
	}
}
