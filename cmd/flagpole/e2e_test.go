package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis/redistest"
)

// testAdminKey is the FLAGPOLE_ADMIN_KEY of the end-to-end servers.
const testAdminKey = "e2e-admin-key-0123456789abcdef"

// TestEndToEnd runs the real binary on a real redis-server: create a flag
// through the API, evaluate it over OFREP, toggle it with the CLI, see the
// new value, and find it in /metrics and in the audit log.
func TestEndToEnd(t *testing.T) {
	rs := redistest.Start(t)
	srv := startServe(t, []string{envAdminKey + "=" + testAdminKey}, "--redis", rs.URL(), "--redis-prefix", "e2e:")
	srv.waitReady()

	status, body := httpDo(t, http.MethodPost, srv.url+"/api/v1/environments", testAdminKey, `{"name":"prod"}`)
	if status != http.StatusCreated {
		t.Fatalf("creating environment prod: %d %s", status, body)
	}
	status, body = httpDo(t, http.MethodPost, srv.url+"/api/v1/environments/prod/flags", testAdminKey,
		`{"key":"new-checkout","state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
		  "targeting":{"if":[{"ends_with":[{"var":"email"},"@example.com"]},"on",null]}}`)
	if status != http.StatusCreated {
		t.Fatalf("creating flag new-checkout: %d %s", status, body)
	}

	// An SDK key for prod, made by the CLI exactly as the README tells users.
	r := srv.cli(testAdminKey, "keys", "create", "--name", "web", "--role", "sdk", "--env", "prod", "-o", "json")
	r.expect(t, 0, nil, nil)
	var key struct{ Secret string }
	mustJSON(t, r.stdout, &key)
	if key.Secret == "" {
		t.Fatalf("keys create -o json printed no secret:\n%s", r.stdout)
	}

	tests := []struct {
		name    string
		context string
		want    string
	}{
		{"employee matches the rule", `{"targetingKey":"u1","email":"ada@example.com"}`, "true"},
		{"others get the default", `{"targetingKey":"u2","email":"bob@gmail.com"}`, "false"},
	}
	for _, tc := range tests {
		t.Run("before toggle: "+tc.name, func(t *testing.T) {
			eventually(t, 5*time.Second, "flag not served with the value "+tc.want, func() bool {
				status, v := evalValue(t, srv.url, key.Secret, "new-checkout", tc.context)
				return status == http.StatusOK && v == tc.want
			})
		})
	}

	// Toggle: the default becomes "on" for everyone.
	r = srv.cli(testAdminKey, "flags", "set", "new-checkout", "--env", "prod", "--default", "on", "--reason", "launch day")
	r.expect(t, 0, []string{"flag new-checkout updated in prod (version 3)"}, nil)
	eventually(t, 2*time.Second, "the toggled default is not served", func() bool {
		status, v := evalValue(t, srv.url, key.Secret, "new-checkout", `{"targetingKey":"u2","email":"bob@gmail.com"}`)
		return status == http.StatusOK && v == "true"
	})

	// Kill switch through the CLI: disabled flags resolve to the code default.
	r = srv.cli(testAdminKey, "flags", "disable", "new-checkout", "--env", "prod", "--reason", "incident 42")
	r.expect(t, 0, []string{"disabled"}, nil)
	eventually(t, 2*time.Second, "the disabled flag still has a value", func() bool {
		status, body := httpDo(t, http.MethodPost, srv.url+"/ofrep/v1/evaluate/flags/new-checkout", key.Secret, `{"context":{"targetingKey":"u1"}}`)
		return status == http.StatusOK && strings.Contains(string(body), `"reason":"DISABLED"`) && !strings.Contains(string(body), `"value"`)
	})

	status, body = httpDo(t, http.MethodGet, srv.url+"/metrics", "", "")
	if status != http.StatusOK {
		t.Fatalf("/metrics: %d", status)
	}
	metrics := string(body)
	for _, re := range []string{
		`flagpole_flag_evaluations_total\{[^}]*flag="new-checkout"[^}]*\} [1-9]`,
		`flagpole_flagset_version\{[^}]*environment="prod"[^}]*\} 4`,
		`flagpole_redis_connected 1`,
		`go_goroutines `,
		`process_cpu_seconds_total `,
	} {
		if !regexp.MustCompile(re).MatchString(metrics) {
			t.Errorf("/metrics has no line matching %s", re)
		}
	}

	r = srv.cli(testAdminKey, "audit", "--env", "prod", "--flag", "new-checkout", "-o", "json")
	r.expect(t, 0, nil, nil)
	var page flags.AuditPage
	mustJSON(t, r.stdout, &page)
	want := []struct{ action, reason string }{{"flag.update", "incident 42"}, {"flag.update", "launch day"}, {"flag.create", ""}}
	if len(page.Entries) != len(want) {
		t.Fatalf("audit has %d entries for new-checkout, want %d:\n%s", len(page.Entries), len(want), r.stdout)
	}
	for i, w := range want {
		e := page.Entries[i]
		if e.Action != w.action || e.Reason != w.reason || e.Actor != bootstrapKeyName {
			t.Errorf("audit entry %d: %s by %s (%q), want %s by %s (%q)", i, e.Action, e.Actor, e.Reason, w.action, bootstrapKeyName, w.reason)
		}
	}

	if code := srv.stop(); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

// TestEmbeddedStoreKeepsEverything runs the binary as `make run` does (the
// embedded store, the example flags, a printed admin key), changes flags,
// restarts it on the same data directory and finds everything kept.
func TestEmbeddedStoreKeepsEverything(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	examples, err := filepath.Abs("../../examples/flags.yaml")
	if err != nil {
		t.Fatal(err)
	}
	first := startServe(t, nil, "--data-dir", dataDir, "--flags", examples, "--env", "default")
	first.waitReady()
	admin := bannerSecret(t, first.logs.String())

	// The README's first evaluation.
	eventually(t, 5*time.Second, "new-checkout is not on for ada@example.com", func() bool {
		status, v := evalValue(t, first.url, admin, "new-checkout", `{"targetingKey":"user-42","email":"ada@example.com"}`)
		return status == http.StatusOK && v == "true"
	})
	first.cli(admin, "env", "create", "staging").expect(t, 0, nil, nil)
	first.cli(admin, "flags", "set", "beta", "-e", "staging", "--variant", "on=true", "--variant", "off=false", "--default", "on").expect(t, 0, nil, nil)
	first.cli(admin, "flags", "disable", "payments-kill-switch", "--reason", "drill").expect(t, 0, nil, nil)
	before := first.cli(admin, "flags", "export", "-", "-e", "default")
	before.expect(t, 0, nil, nil)
	if code := first.stopWith(os.Interrupt); code != 0 {
		t.Fatalf("exit code %d after SIGINT, want 0", code)
	}

	second := startServe(t, nil, "--data-dir", dataDir)
	second.waitReady()
	if strings.Contains(second.logs.String(), "FLAGPOLE_TOKEN=") {
		t.Error("the restarted server created another admin key although one exists")
	}
	after := second.cli(admin, "flags", "export", "-", "-e", "default")
	after.expect(t, 0, nil, nil)
	if before.stdout != after.stdout {
		t.Errorf("the default flag set changed across the restart:\nbefore:\n%s\nafter:\n%s", before.stdout, after.stdout)
	}
	second.cli(admin, "env", "list").expect(t, 0, []string{"default  2", "staging  2"}, nil)
	eventually(t, 5*time.Second, "beta is not served after the restart", func() bool {
		status, body := httpDo(t, http.MethodPost, second.url+"/ofrep/v1/evaluate/flags/beta?env=staging", admin, `{"context":{"targetingKey":"u"}}`)
		return status == http.StatusOK && strings.Contains(string(body), `"value":true`)
	})
	r := second.cli(admin, "audit", "-o", "json")
	r.expect(t, 0, nil, nil)
	var page flags.AuditPage
	mustJSON(t, r.stdout, &page)
	if len(page.Entries) != 2 || page.Entries[0].Reason != "drill" || page.Entries[1].Actor != gitopsActor || page.Entries[1].Action != "environment.create" {
		b, _ := json.Marshal(page.Entries)
		t.Errorf("audit of default after the restart: %.600s\nwant the drill, then the creation by %s", b, gitopsActor)
	}
}

// TestStartWithRedisDown starts the server while Redis is down: it serves
// /healthz at once, is not ready, and when Redis comes up it loads, creates
// the bootstrap admin key and seeds the flag file by itself.
func TestStartWithRedisDown(t *testing.T) {
	rs := redistest.Start(t)
	rs.Stop()
	file := writeTemp(t, t.TempDir(), "flags.yaml", flagFile("red"))
	srv := startServe(t, []string{envAdminKey + "=" + testAdminKey}, "--redis", rs.URL(), "--flags", file, "--env", "prod")
	if status, _ := httpDo(t, http.MethodGet, srv.url+"/healthz", "", ""); status != http.StatusOK {
		t.Errorf("/healthz with Redis down: %d, want 200", status)
	}
	if status, _ := httpDo(t, http.MethodGet, srv.url+"/readyz", "", ""); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz before anything was loaded: %d, want 503", status)
	}
	rs.Restart()
	srv.waitReady()
	eventually(t, 30*time.Second, "the flag file was not seeded after Redis came up", func() bool {
		status, v := evalValue(t, srv.url, testAdminKey, "banner?env=prod", `{}`)
		return status == http.StatusOK && v == `"#f00"`
	})
	if _, ok := srv.logLine("cannot check the admin key yet; will retry"); !ok {
		t.Error("no log line says the admin key check is retried")
	}
}
