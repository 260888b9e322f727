package api

import (
	"context"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/flagpole/flagpole/flags"
)

// interleavingStore runs a hook just before DeleteEnvironment reaches the
// store: the moment between the handler's start and the store's delete, where
// a concurrent writer's Save can land.
type interleavingStore struct {
	flags.Store
	before atomic.Pointer[func(env string)]
}

func (s *interleavingStore) DeleteEnvironment(ctx context.Context, name string, ifVersion int64) error {
	if fn := s.before.Load(); fn != nil {
		(*fn)(name)
	}
	return s.Store.DeleteEnvironment(ctx, name, ifVersion)
}

// TestDeleteEnvironmentIfMatchIsAtomic: a client reads an environment's ETag,
// another writer saves, then the client deletes with its (now stale) If-Match.
// The delete must answer 412 and delete nothing, however the write is timed.
func TestDeleteEnvironmentIfMatchIsAtomic(t *testing.T) {
	wrap := &interleavingStore{}
	h := newHarness(t, func(c *Config) {
		wrap.Store = c.Store
		c.Store = wrap
	})
	disabled := flags.Disabled
	parent := h.t
	tests := []struct {
		name       string
		env        string // created unless "ghost"
		ifMatch    string // "read" sends the ETag the client read first
		interleave bool   // a concurrent write lands after the read, before the delete
		wantStatus int
		wantCode   string
	}{
		{"current ETag deletes", "current", "read", false, http.StatusNoContent, ""},
		{"ETag read before a concurrent write is refused", "raced", "read", true, http.StatusPreconditionFailed, codePreconditionFailed},
		{"ETag already stale is refused", "stale", `"7"`, false, http.StatusPreconditionFailed, codePreconditionFailed},
		{"no If-Match deletes despite a concurrent write", "unconditional", "", true, http.StatusNoContent, ""},
		{"If-Match star deletes", "star", "*", false, http.StatusNoContent, ""},
		{"missing environment", "ghost", `"1"`, false, http.StatusNotFound, codeNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The harness reports through the running (sub)test.
			h.t = t
			defer func() { h.t = parent }()
			path := "/api/v1/environments/" + tc.env
			if tc.env != "ghost" {
				h.createEnv(tc.env, testFlags)
			}
			ifMatch := tc.ifMatch
			if ifMatch == "read" {
				r := h.do(req{method: "GET", path: path, key: h.admin})
				if r.status != http.StatusOK || r.header.Get("ETag") != `"1"` {
					t.Fatalf("GET %s: %d ETag %q; want 200 with ETag \"1\"", path, r.status, r.header.Get("ETag"))
				}
				ifMatch = r.header.Get("ETag")
			}
			var wrote atomic.Bool
			if tc.interleave {
				fn := func(env string) {
					if env != tc.env {
						return
					}
					_, err := h.svc.PatchFlag(context.Background(), env, "static-on", flags.FlagPatch{State: &disabled}, flags.WriteOptions{Actor: "racer"})
					if err != nil {
						t.Errorf("the interleaved write failed: %v", err)
						return
					}
					wrote.Store(true)
				}
				wrap.before.Store(&fn)
				defer wrap.before.Store(nil)
			}

			r := h.do(req{method: "DELETE", path: path, key: h.admin, header: map[string]string{"If-Match": ifMatch}})
			if r.status != tc.wantStatus {
				t.Fatalf("DELETE %s (If-Match %q): %d %s; want %d", path, ifMatch, r.status, r.body, tc.wantStatus)
			}
			if tc.interleave && !wrote.Load() {
				t.Fatal("the concurrent write did not land between the read and the delete")
			}
			if tc.wantCode != "" {
				if e := errorOf(t, r); e.Code != tc.wantCode {
					t.Errorf("error code %q; want %q (%s)", e.Code, tc.wantCode, r.body)
				}
			}
			got := h.do(req{method: "GET", path: path, key: h.admin})
			if tc.wantStatus != http.StatusPreconditionFailed {
				if got.status != http.StatusNotFound {
					t.Errorf("GET %s after the delete: %d; want 404", path, got.status)
				}
				return
			}
			// Refused: nothing was deleted, and the concurrent write survived.
			wantVersion := float64(1)
			if tc.interleave {
				wantVersion = 2
			}
			if got.status != http.StatusOK || got.json(t)["version"] != wantVersion {
				t.Fatalf("GET %s after a refused delete: %d %s; want 200 at version %v", path, got.status, got.body, wantVersion)
			}
			if e := errorOf(t, r); !slices.ContainsFunc(e.Details, func(d Detail) bool { return d.Field == "If-Match" }) {
				t.Errorf("412 details %+v; want one naming If-Match", e.Details)
			}
			if tc.interleave {
				f := h.do(req{method: "GET", path: path + "/flags/static-on", key: h.admin})
				if f.status != http.StatusOK || f.json(t)["state"] != "DISABLED" {
					t.Errorf("static-on after a refused delete: %d %s; want the concurrent write's DISABLED", f.status, f.body)
				}
				a := h.do(req{method: "GET", path: path + "/audit", key: h.admin})
				entries, _ := a.json(t)["entries"].([]any)
				if a.status != http.StatusOK || len(entries) != 2 {
					t.Errorf("audit after a refused delete: %d %s; want the create and the concurrent write", a.status, a.body)
				}
			}
			// With the current ETag the delete then goes through.
			cur := got.header.Get("ETag")
			if d := h.do(req{method: "DELETE", path: path, key: h.admin, header: map[string]string{"If-Match": cur}}); d.status != http.StatusNoContent {
				t.Errorf("DELETE %s with the current ETag %s: %d %s; want 204", path, cur, d.status, d.body)
			}
		})
	}
}
