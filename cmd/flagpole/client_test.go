package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/flagpole/flagpole/api"
	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis"
)

// testAPI is the real API server on an embedded store behind httptest.
type testAPI struct {
	url   string
	admin string // an admin key's secret
	store *redis.Store
}

func startAPI(t *testing.T) *testAPI {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	store, err := redis.OpenEmbedded(ctx, t.TempDir(), redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	secret, hash := auth.NewSecret(auth.RoleAdmin)
	err = store.CreateKey(ctx, auth.Key{ID: auth.NewID(), Name: "test-admin", Role: auth.RoleAdmin, Hash: hash, Prefix: secret[:12], CreatedAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{
		Store: store, Keys: store, Flags: flags.NewService(store, nil),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registry: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Run(ctx)
	}()
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		cancel()
		<-done
		_ = store.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for !srv.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("the API server did not become ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return &testAPI{url: hs.URL, admin: secret, store: store}
}

// TestClientCommands drives every client command, in order, against the
// real API server; each step sees the state the previous ones left.
func TestClientCommands(t *testing.T) {
	srv := startAPI(t)
	dir := t.TempDir()
	env := map[string]string{envURL: srv.url, envToken: srv.admin}

	importFile := writeTemp(t, dir, "staging.yaml", `
flags:
  dark-mode:
    state: ENABLED
    variants: {"on": true, "off": false}
    defaultVariant: "on"
  greeting:
    state: ENABLED
    variants: {formal: "Good day", casual: "Hi"}
    defaultVariant: formal
    targeting:
      if:
        - in: ["@example.com", var: email]
        - casual
        - formal
`)
	invalidFile := writeTemp(t, dir, "invalid.json", `{"flags":{"broken":{"state":"ENABLED","variants":{"a":1},"defaultVariant":"b"}}}`)
	flagDef := writeTemp(t, dir, "limit.yaml", "state: ENABLED\nvariants: {low: 10, high: 100}\ndefaultVariant: low\n")
	exportYAML := filepath.Join(dir, "export.yaml")
	var sdkSecret, sdkID string

	steps := []struct {
		name   string
		args   func() []string
		env    func() map[string]string // nil: env
		code   int
		stdout []string
		stderr []string
		check  func(t *testing.T, r cliResult)
	}{
		{name: "create an environment", args: args("env", "create", "staging", "--reason", "new env"), stdout: []string{"environment staging created (version 1)"}},
		{name: "create it again", args: args("env", "create", "staging"), code: 1, stderr: []string{"HTTP 409 conflict"}},
		{name: "create with a bad name", args: args("env", "create", "Bad Name"), code: 1, stderr: []string{"HTTP 400", "name: "}},
		{name: "list environments", args: args("env", "list"), stdout: []string{"NAME", "staging  1"}},
		{name: "list environments as JSON", args: args("env", "list", "-o", "json"), check: func(t *testing.T, r cliResult) {
			var out struct{ Environments []flags.Environment }
			mustJSON(t, r.stdout, &out)
			if len(out.Environments) != 1 || out.Environments[0].Name != "staging" {
				t.Errorf("environments %+v, want staging", out.Environments)
			}
		}},
		{name: "create a flag from options", args: args("flags", "set", "beta", "-e", "staging", "--variant", "on=true", "--variant", "off=false", "--default", "off", "--reason", "first flag"), stdout: []string{"flag beta created in staging (version 2)"}},
		{name: "change one field", args: args("flags", "set", "beta", "-e", "staging", "--default", "on"), stdout: []string{"flag beta updated in staging (version 3)"}},
		{name: "change to an invalid default", args: args("flags", "set", "beta", "-e", "staging", "--default", "maybe"), code: 1, stderr: []string{"HTTP 422 invalid_flags", "flags.beta.defaultVariant: "}},
		{name: "set a missing flag without variants", args: args("flags", "set", "ghost", "-e", "staging", "--default", "x"), code: 1, stderr: []string{"HTTP 404", "--variant NAME=VALUE"}},
		{name: "set targeting", args: args("flags", "set", "beta", "-e", "staging", "--targeting", `{"if":[{"==":[{"var":"plan"},"pro"]},"on","off"]}`), stdout: []string{"updated"}},
		{name: "set a flag from a file", args: args("flags", "set", "limit", "-e", "staging", "--file", flagDef), stdout: []string{"flag limit set in staging"}},
		{name: "get a flag", args: args("flags", "get", "beta", "-e", "staging"), check: func(t *testing.T, r cliResult) {
			var f flags.Flag
			if err := yaml.Unmarshal([]byte(r.stdout), &f); err != nil {
				t.Fatalf("flags get prints no YAML: %v\n%s", err, r.stdout)
			}
			if f.DefaultVariant == nil || *f.DefaultVariant != "on" || len(f.Targeting) == 0 || f.Variants["off"] != false {
				t.Errorf("flag %+v: want default on, targeting, variant off=false", f)
			}
		}},
		{name: "list flags", args: args("flags", "list", "--env", "staging"), stdout: []string{"KEY", "beta   ENABLED  boolean  on       off,on      yes", "limit  ENABLED  number   low      high,low    -"}},
		{name: "evaluate with targeting", args: args("eval", "beta", "-e", "staging", "--context", `{"targetingKey":"u1","plan":"pro"}`), stdout: []string{"beta  true   on       TARGETING_MATCH"}},
		{name: "evaluate from a context file", args: func() []string {
			return []string{"eval", "beta", "-e", "staging", "--context", "@" + writeTemp(t, dir, "ctx.yaml", "targetingKey: u2\nplan: free\n")}
		}, stdout: []string{"beta  false  off      TARGETING_MATCH"}},
		{name: "disable", args: args("flags", "disable", "beta", "-e", "staging", "--reason", "kill switch"), stdout: []string{"flag beta disabled in staging (version 6)"}},
		{name: "evaluate a disabled flag", args: args("eval", "beta", "-e", "staging", "-o", "json"), check: func(t *testing.T, r cliResult) {
			var res map[string]any
			mustJSON(t, r.stdout, &res)
			if res["reason"] != "DISABLED" || res["value"] != nil {
				t.Errorf("result %v: want reason DISABLED and no value", res)
			}
		}},
		{name: "enable", args: args("flags", "enable", "beta", "-e", "staging"), stdout: []string{"flag beta enabled in staging (version 7)"}},
		{name: "write with a stale if-match", args: args("flags", "disable", "beta", "-e", "staging", "--if-match", "3"), code: 1, stderr: []string{"HTTP 412"}},
		{name: "evaluate every flag", args: args("eval", "-e", "staging", "--context", `{"targetingKey":"u1"}`), stdout: []string{"beta", "limit  10"}},
		{name: "evaluate an unknown flag", args: args("eval", "nope", "-e", "staging"), code: 1, stderr: []string{"FLAG_NOT_FOUND"}},
		{name: "import a YAML flag set", args: args("flags", "import", importFile, "-e", "staging", "--reason", "sync from git"), stdout: []string{"imported " + importFile + " into staging (version 8)"}},
		{name: "import an invalid flag set", args: args("flags", "import", invalidFile, "-e", "staging"), code: 1, stderr: []string{"HTTP 422", "flags.broken.defaultVariant"}},
		{name: "nothing changed after the invalid import", args: args("flags", "list", "-e", "staging", "-o", "json"), check: func(t *testing.T, r cliResult) {
			var out struct {
				Version int64
				Flags   []struct{ Key string }
			}
			mustJSON(t, r.stdout, &out)
			if out.Version != 8 || len(out.Flags) != 2 || out.Flags[0].Key != "dark-mode" || out.Flags[1].Key != "greeting" {
				t.Errorf("after a refused import: %+v, want version 8 with dark-mode and greeting", out)
			}
		}},
		{name: "export as YAML", args: args("flags", "export", exportYAML, "-e", "staging"), stdout: []string{"exported staging (version 8) to " + exportYAML}, check: func(t *testing.T, r cliResult) {
			data, err := os.ReadFile(exportYAML)
			if err != nil {
				t.Fatal(err)
			}
			doc, err := flags.Parse(data)
			if err != nil {
				t.Fatalf("the export does not parse: %v\n%s", err, data)
			}
			if len(doc.Flags) != 2 || doc.Flags["greeting"] == nil || len(doc.Flags["greeting"].Targeting) == 0 {
				t.Errorf("exported flags %v: want dark-mode and greeting with its targeting", doc.Flags)
			}
			if strings.HasPrefix(strings.TrimSpace(string(data)), "{") {
				t.Errorf("export.yaml holds JSON, not YAML")
			}
		}},
		{name: "export to stdout as JSON", args: args("flags", "export", "-", "-e", "staging"), check: func(t *testing.T, r cliResult) {
			var doc flags.Document
			mustJSON(t, r.stdout, &doc)
			if len(doc.Flags) != 2 {
				t.Errorf("exported %d flags, want 2", len(doc.Flags))
			}
		}},
		{name: "round trip: re-import the export", args: args("flags", "import", exportYAML, "-e", "staging"), stdout: []string{"(version 8)"}},
		{name: "delete a flag", args: args("flags", "delete", "dark-mode", "-e", "staging"), stdout: []string{"flag dark-mode deleted from staging (version 9)"}},
		{name: "delete it again", args: args("flags", "delete", "dark-mode", "-e", "staging"), code: 1, stderr: []string{"HTTP 404"}},
		{name: "audit", args: args("audit", "-e", "staging"), stdout: []string{"ACTOR", "test-admin  flag.delete", "sync from git", "kill switch", "first flag"}},
		{name: "audit one flag as JSON", args: args("audit", "-e", "staging", "--flag", "beta", "--limit", "3", "-o", "json"), check: func(t *testing.T, r cliResult) {
			var page flags.AuditPage
			mustJSON(t, r.stdout, &page)
			if len(page.Entries) != 3 || page.Next == "" {
				t.Fatalf("%d entries, next %q: want 3 and a cursor", len(page.Entries), page.Next)
			}
			for _, e := range page.Entries {
				if !touches(e, "beta") {
					t.Errorf("entry %d (%s) does not touch beta", e.Version, e.Action)
				}
			}
			if page.Entries[0].Version <= page.Entries[2].Version {
				t.Errorf("entries not newest first: %d then %d", page.Entries[0].Version, page.Entries[2].Version)
			}
		}},
		{name: "audit across pages", args: args("audit", "-e", "staging", "--limit", "600", "-o", "json"), check: func(t *testing.T, r cliResult) {
			var page flags.AuditPage
			mustJSON(t, r.stdout, &page)
			if len(page.Entries) != 9 || page.Next != "" {
				t.Errorf("%d entries, next %q: want all 9 and no cursor", len(page.Entries), page.Next)
			}
		}},
		{name: "audit with diffs", args: args("audit", "-e", "staging", "--flag", "beta", "-n", "2", "--changes"), stdout: []string{"flagset.import", "remove beta: was {", "flag.update", "replace beta /state: \"DISABLED\" -> \"ENABLED\""}},
		{name: "create an sdk key", args: args("keys", "create", "--name", "web", "--role", "sdk", "--env", "staging", "-o", "json"), check: func(t *testing.T, r cliResult) {
			var k struct {
				ID, Secret, Role string
				Environments     []string
			}
			mustJSON(t, r.stdout, &k)
			if !strings.HasPrefix(k.Secret, "fp_sdk_") || k.Role != "sdk" || len(k.Environments) != 1 || k.ID == "" {
				t.Fatalf("created key %+v: want an sdk key for staging with a secret", k)
			}
			sdkSecret, sdkID = k.Secret, k.ID
		}},
		{name: "create an editor key for humans", args: args("keys", "create", "--name", "ci", "--role", "editor", "-e", "staging", "-e", "default"), stdout: []string{"secret:", "fp_editor_", "not shown again"}},
		{name: "list keys", args: args("keys", "list"), stdout: []string{"test-admin", "web", "sdk", "staging", "ci", "editor", "staging,default"}, check: func(t *testing.T, r cliResult) {
			if strings.Contains(r.stdout, sdkSecret) {
				t.Error("keys list shows a secret")
			}
		}},
		{name: "the sdk key evaluates in its environment", args: args("eval", "greeting", "--context", `{"targetingKey":"u","email":"a@example.com"}`),
			env: func() map[string]string { return map[string]string{envURL: srv.url, envToken: sdkSecret} }, stdout: []string{"greeting  \"Hi\"  casual   TARGETING_MATCH"}},
		{name: "the sdk key cannot use the admin API", args: args("env", "list"),
			env: func() map[string]string { return map[string]string{envURL: srv.url, envToken: sdkSecret} }, code: 1, stderr: []string{"HTTP 403"}},
		{name: "revoke the sdk key", args: func() []string { return []string{"keys", "revoke", sdkID} }, stdout: []string{"revoked"}},
		{name: "a revoked key is refused", args: args("eval", "greeting"),
			env: func() map[string]string { return map[string]string{envURL: srv.url, envToken: sdkSecret} }, code: 1, stderr: []string{"HTTP 401"}},
		{name: "an unknown key is refused", args: args("flags", "list", "--token", "fp_admin_made_up"), code: 1, stderr: []string{"HTTP 401"}},
		{name: "flags and URL on the command line", args: func() []string { return []string{"env", "list", "--url", srv.url + "/", "--token", srv.admin} }, env: func() map[string]string { return nil }, stdout: []string{"staging"}},
		{name: "unknown environment", args: args("flags", "list", "-e", "nowhere"), code: 1, stderr: []string{"HTTP 404"}},
		{name: "create an environment from a file", args: args("env", "create", "preview", "--file", importFile), stdout: []string{"environment preview created (version 1)"}},
		{name: "it holds the file's flags", args: args("flags", "list", "-e", "preview"), stdout: []string{"dark-mode", "greeting  ENABLED  string  formal"}},
		{name: "create an environment from an invalid file", args: args("env", "create", "broken", "--file", invalidFile), code: 1, stderr: []string{"HTTP 422", "flags.broken.defaultVariant"}},
		{name: "FLAGPOLE_ENV picks the environment", args: args("flags", "list"), env: func() map[string]string {
			return map[string]string{envURL: srv.url, envToken: srv.admin, envEnv: "staging"}
		}, stdout: []string{"greeting"}},
	}
	for _, st := range steps {
		ok := t.Run(st.name, func(t *testing.T) {
			e := env
			if st.env != nil {
				e = st.env()
			}
			r := runCLI(t, e, st.args()...)
			r.expect(t, st.code, st.stdout, st.stderr)
			if st.check != nil && r.code == st.code {
				st.check(t, r)
			}
		})
		if !ok {
			t.Fatalf("step %q failed; later steps depend on it", st.name)
		}
	}
}

func args(a ...string) func() []string { return func() []string { return a } }

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("output is not the expected JSON: %v\n%s", err, s)
	}
}

func touches(e flags.AuditEntry, key string) bool {
	for _, c := range e.Changes {
		if c.Key == key {
			return true
		}
	}
	return false
}
