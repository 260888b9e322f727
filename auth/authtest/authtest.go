// Package authtest is the conformance suite every auth.Store backend runs.
package authtest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/flagpole/flagpole/auth"
)

// Run runs the suite. newStore must return an empty store of its own each
// time it is called; the suite calls it once per subtest.
func Run(t *testing.T, newStore func(t *testing.T) auth.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s auth.Store)
	}{
		{"CreateAndFind", testCreateAndFind},
		{"Duplicates", testDuplicates},
		{"ListOldestFirst", testList},
		{"Revoke", testRevoke},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newKey(name string, r auth.Role, created time.Time, envs ...string) (auth.Key, string) {
	secret, hash := auth.NewSecret(r)
	return auth.Key{ID: auth.NewID(), Name: name, Role: r, Envs: envs, Hash: hash, Prefix: secret[:10], CreatedAt: created}, secret
}

func same(a, b auth.Key) bool {
	if (a.RevokedAt == nil) != (b.RevokedAt == nil) || a.RevokedAt != nil && !a.RevokedAt.Equal(*b.RevokedAt) {
		return false
	}
	return a.ID == b.ID && a.Name == b.Name && a.Role == b.Role && slices.Equal(a.Envs, b.Envs) &&
		a.Hash == b.Hash && a.Prefix == b.Prefix && a.CreatedAt.Equal(b.CreatedAt)
}

func testCreateAndFind(t *testing.T, s auth.Store) {
	ctx := t.Context()
	tests := []struct {
		name string
		role auth.Role
		envs []string
	}{
		{"admin", auth.RoleAdmin, nil},
		{"editor", auth.RoleEditor, []string{"dev", "staging"}},
		{"sdk", auth.RoleSDK, []string{"production"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, secret := newKey(tc.name, tc.role, t0, tc.envs...)
			if err := s.CreateKey(ctx, k); err != nil {
				t.Fatalf("CreateKey: %v", err)
			}
			got, err := s.KeyByHash(ctx, auth.HashSecret(secret))
			if err != nil {
				t.Fatalf("KeyByHash: %v", err)
			}
			if !same(got, k) || got.Revoked() {
				t.Errorf("KeyByHash = %+v; want %+v", got, k)
			}
		})
	}
	if _, err := s.KeyByHash(ctx, auth.HashSecret("fp_admin_unknown")); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("KeyByHash of an unknown secret: err = %v; want auth.ErrNotFound", err)
	}
}

func testDuplicates(t *testing.T, s auth.Store) {
	ctx := t.Context()
	k, _ := newKey("first", auth.RoleAdmin, t0)
	if err := s.CreateKey(ctx, k); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	sameID, _ := newKey("same id", auth.RoleAdmin, t0)
	sameID.ID = k.ID
	sameHash, _ := newKey("same hash", auth.RoleAdmin, t0)
	sameHash.Hash = k.Hash
	tests := []struct {
		name string
		k    auth.Key
	}{{"same ID", sameID}, {"same hash", sameHash}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := s.CreateKey(ctx, tc.k); !errors.Is(err, auth.ErrExists) {
				t.Errorf("CreateKey: err = %v; want auth.ErrExists", err)
			}
		})
	}
	keys, err := s.Keys(ctx)
	if err != nil || len(keys) != 1 || !same(keys[0], k) {
		t.Errorf("Keys after refused duplicates = %+v, %v; want only the first key", keys, err)
	}
	if got, err := s.KeyByHash(ctx, k.Hash); err != nil || got.ID != k.ID {
		t.Errorf("KeyByHash after a refused duplicate hash = %+v, %v; want the first key", got, err)
	}
}

func testList(t *testing.T, s auth.Store) {
	ctx := t.Context()
	keys, err := s.Keys(ctx)
	if err != nil || len(keys) != 0 {
		t.Fatalf("Keys on an empty store = %v, %v; want none", keys, err)
	}
	var want []string
	for i, name := range []string{"c", "a", "b"} {
		k, _ := newKey(name, auth.RoleSDK, t0.Add(time.Duration(i)*time.Hour), "dev")
		if err := s.CreateKey(ctx, k); err != nil {
			t.Fatalf("CreateKey: %v", err)
		}
		want = append(want, name)
	}
	keys, err = s.Keys(ctx)
	if err != nil {
		t.Fatalf("Keys: %v", err)
	}
	var got []string
	for _, k := range keys {
		got = append(got, k.Name)
		if k.Hash == "" {
			t.Errorf("key %q lost its hash", k.Name)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("Keys = %v; want %v (oldest first)", got, want)
	}
}

func testRevoke(t *testing.T, s auth.Store) {
	ctx := t.Context()
	k, secret := newKey("ci", auth.RoleEditor, t0, "dev")
	other, _ := newKey("other", auth.RoleEditor, t0.Add(time.Minute), "dev")
	for _, key := range []auth.Key{k, other} {
		if err := s.CreateKey(ctx, key); err != nil {
			t.Fatalf("CreateKey: %v", err)
		}
	}
	at := t0.Add(48 * time.Hour)
	if err := s.RevokeKey(ctx, k.ID, at); err != nil {
		t.Fatalf("RevokeKey: %v", err)
	}
	got, err := s.KeyByHash(ctx, auth.HashSecret(secret))
	if err != nil || got.RevokedAt == nil || !got.RevokedAt.Equal(at) || got.CanEdit("dev") {
		t.Errorf("revoked key = %+v, %v; want RevokedAt %v and no rights", got, err, at)
	}
	// Revoking again keeps it revoked (from the first time).
	if err := s.RevokeKey(ctx, k.ID, at.Add(time.Hour)); err != nil {
		t.Errorf("revoking twice: %v", err)
	}
	if got, err := s.KeyByHash(ctx, k.Hash); err != nil || !got.Revoked() {
		t.Errorf("after a second revoke = %+v, %v; want still revoked", got, err)
	}
	keys, err := s.Keys(ctx)
	if err != nil || len(keys) != 2 || !keys[0].Revoked() || keys[1].Revoked() {
		t.Errorf("Keys = %+v, %v; want the revoked key listed, the other untouched", keys, err)
	}
	if err := s.RevokeKey(ctx, "no-such-id", at); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("RevokeKey of an unknown ID: err = %v; want auth.ErrNotFound", err)
	}
}
