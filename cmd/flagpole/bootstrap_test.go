package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/flags"
)

// memKeys is an in-memory auth.Store; failing, when set, is returned by every call.
type memKeys struct {
	mu      sync.Mutex
	keys    []auth.Key
	failing error
}

func (m *memKeys) CreateKey(_ context.Context, k auth.Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failing != nil {
		return m.failing
	}
	for _, o := range m.keys {
		if o.ID == k.ID || o.Hash == k.Hash {
			return auth.ErrExists
		}
	}
	m.keys = append(m.keys, k)
	return nil
}

func (m *memKeys) KeyByHash(_ context.Context, hash string) (auth.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failing != nil {
		return auth.Key{}, m.failing
	}
	for _, k := range m.keys {
		if k.Hash == hash {
			return k, nil
		}
	}
	return auth.Key{}, auth.ErrNotFound
}

func (m *memKeys) Keys(context.Context) ([]auth.Key, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failing != nil {
		return nil, m.failing
	}
	return append([]auth.Key(nil), m.keys...), nil
}

func (m *memKeys) RevokeKey(_ context.Context, id string, at time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.keys {
		if m.keys[i].ID == id {
			m.keys[i].RevokedAt = &at
			return nil
		}
	}
	return auth.ErrNotFound
}

func TestEnsureAdmin(t *testing.T) {
	const chosen = "a-long-chosen-admin-secret"
	revokedAt := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	admin := auth.Key{ID: "a1", Name: "ops", Role: auth.RoleAdmin, Hash: auth.HashSecret("existing-admin-secret")}
	editor := auth.Key{ID: "e1", Name: "ci", Role: auth.RoleEditor, Envs: []string{"default"}, Hash: auth.HashSecret("editor-secret-123")}
	revokedAdmin := auth.Key{ID: "a2", Name: "old", Role: auth.RoleAdmin, Hash: auth.HashSecret("old-admin-secret-1"), RevokedAt: &revokedAt}
	revokedChosen := auth.Key{ID: "a3", Name: "bootstrap-admin", Role: auth.RoleAdmin, Hash: auth.HashSecret(chosen), RevokedAt: &revokedAt}

	tests := []struct {
		name       string
		secret     string
		existing   []auth.Key
		failing    error
		wantErr    bool
		wantNew    bool   // a key named bootstrap-admin was added
		wantBanner bool   // a secret was printed
		wantLog    string // fragment of the log
		loginWith  string // secret that must now be an active admin key ("" for none to check)
	}{
		{name: "empty store creates and shows a key", wantNew: true, wantBanner: true, wantLog: "created an admin key"},
		{name: "an admin key exists", existing: []auth.Key{admin}},
		{name: "only an editor key exists", existing: []auth.Key{editor}, wantNew: true, wantBanner: true},
		{name: "only a revoked admin key exists", existing: []auth.Key{revokedAdmin}, wantNew: true, wantBanner: true},
		{name: "chosen secret is created", secret: chosen, existing: []auth.Key{admin}, wantNew: true, wantLog: "created the bootstrap admin key from FLAGPOLE_ADMIN_KEY", loginWith: chosen},
		{name: "chosen secret already exists", secret: chosen, existing: []auth.Key{{ID: "b", Name: "bootstrap-admin", Role: auth.RoleAdmin, Hash: auth.HashSecret(chosen)}}, loginWith: chosen},
		{name: "chosen secret was revoked", secret: chosen, existing: []auth.Key{revokedChosen}, wantLog: "revoked key; it stays revoked"},
		{name: "store down", failing: flags.ErrUnavailable, wantErr: true},
		{name: "store down with chosen secret", secret: chosen, failing: flags.ErrUnavailable, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := &memKeys{keys: append([]auth.Key(nil), tc.existing...), failing: tc.failing}
			var banner, logs strings.Builder
			s := &setup{
				keys: store, secret: tc.secret, banner: &banner,
				log: slog.New(slog.NewTextHandler(&logs, nil)),
				now: func() time.Time { return time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC) },
			}
			err := s.ensureAdmin(context.Background())
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr && !errors.Is(err, flags.ErrUnavailable) {
				t.Errorf("error %v does not wrap the store's error", err)
			}
			store.failing = nil
			keys, _ := store.Keys(context.Background())
			added := len(keys) - len(tc.existing)
			if want := map[bool]int{true: 1, false: 0}[tc.wantNew]; added != want {
				t.Fatalf("%d keys added, want %d: %+v", added, want, keys)
			}
			if tc.wantNew {
				k := keys[len(keys)-1]
				if k.Name != bootstrapKeyName || k.Role != auth.RoleAdmin || k.Revoked() || k.ID == "" || k.Prefix == "" {
					t.Errorf("new key %+v: want an active admin key named %q with an ID and prefix", k, bootstrapKeyName)
				}
				if !k.CreatedAt.Equal(s.now()) {
					t.Errorf("CreatedAt %v, want %v", k.CreatedAt, s.now())
				}
			}
			if tc.wantBanner {
				secret := bannerSecret(t, banner.String())
				k, err := store.KeyByHash(context.Background(), auth.HashSecret(secret))
				if err != nil || !k.CanAdmin() {
					t.Errorf("the printed secret is not an admin key: %v %+v", err, k)
				}
				if !strings.HasPrefix(secret, k.Prefix) {
					t.Errorf("prefix %q is not the start of the secret", k.Prefix)
				}
				if strings.Contains(logs.String(), secret) {
					t.Errorf("the secret was logged:\n%s", logs.String())
				}
			} else if banner.Len() > 0 {
				t.Errorf("unexpected banner:\n%s", banner.String())
			}
			if tc.wantLog != "" && !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("log lacks %q:\n%s", tc.wantLog, logs.String())
			}
			if tc.loginWith != "" {
				k, err := store.KeyByHash(context.Background(), auth.HashSecret(tc.loginWith))
				if err != nil || !k.CanAdmin() {
					t.Errorf("secret %q is not an active admin key: %v %+v", tc.loginWith, err, k)
				}
				if tc.secret != "" && strings.Contains(logs.String(), tc.secret) {
					t.Errorf("the chosen secret was logged:\n%s", logs.String())
				}
			}
		})
	}
}

func TestSetupRetriesUntilTheStoreAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &memKeys{failing: flags.ErrUnavailable}
		var banner strings.Builder
		s := &setup{keys: store, banner: &banner, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
		if s.once(context.Background()) {
			t.Fatal("once succeeded while the store was down")
		}
		done := make(chan struct{})
		go func() {
			s.retry(context.Background())
			close(done)
		}()
		time.Sleep(time.Minute) // a minute of retries against a store that is down
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("retry gave up while the store was down")
		default:
		}
		store.mu.Lock()
		store.failing = nil
		store.mu.Unlock()
		time.Sleep(5 * time.Second) // the longest pause between tries
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("retry did not finish within one pause after the store came back")
		}
		if keys, _ := store.Keys(context.Background()); len(keys) != 1 {
			t.Fatalf("%d keys, want the bootstrap key", len(keys))
		}
		bannerSecret(t, banner.String())
	})
}

// bannerSecret extracts the secret from the admin-key banner.
func bannerSecret(t *testing.T, banner string) string {
	t.Helper()
	_, rest, ok := strings.Cut(banner, "FLAGPOLE_TOKEN=")
	if !ok {
		t.Fatalf("no secret in the banner:\n%s", banner)
	}
	secret, _, _ := strings.Cut(rest, "\n")
	if !strings.HasPrefix(secret, "fp_admin_") {
		t.Fatalf("banner secret %q does not look like an admin key", secret)
	}
	return secret
}
