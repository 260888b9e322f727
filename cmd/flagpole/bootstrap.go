package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/flagpole/flagpole/auth"
)

// bootstrapKeyName is the name of the admin key that serve creates.
const bootstrapKeyName = "bootstrap-admin"

// setup is the work serve does once the store answers: make sure an admin
// can log in, and load the flag file.
type setup struct {
	keys   auth.Store
	secret string    // FLAGPOLE_ADMIN_KEY, or ""
	banner io.Writer // where a generated secret is shown, once
	log    *slog.Logger
	seeder *seeder // nil without --flags
	now    func() time.Time

	adminDone, seedDone bool
}

// once tries every step that has not succeeded yet and reports whether all
// have. A step that fails is logged and tried again by the next call.
func (s *setup) once(ctx context.Context) bool {
	if !s.adminDone {
		if err := s.ensureAdmin(ctx); err != nil {
			s.log.Warn("cannot check the admin key yet; will retry", "err", err)
		} else {
			s.adminDone = true
		}
	}
	if !s.seedDone {
		if s.seeder == nil {
			s.seedDone = true
		} else if res, _ := s.seeder.sync(ctx); res != syncRetry {
			s.seedDone = true
		}
	}
	return s.adminDone && s.seedDone
}

// retry calls once with a growing pause until every step succeeded or ctx ends.
func (s *setup) retry(ctx context.Context) {
	pause := 250 * time.Millisecond
	for !s.once(ctx) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// ensureAdmin makes sure an admin can use the API. With FLAGPOLE_ADMIN_KEY,
// a key with that secret is created unless it exists (a revoked one stays
// revoked). Without it, when no usable admin key exists, a new one is
// created and its secret shown once on the banner writer, never logged.
// Errors are the key store's.
func (s *setup) ensureAdmin(ctx context.Context) error {
	now := time.Now
	if s.now != nil {
		now = s.now
	}
	if s.secret != "" {
		hash := auth.HashSecret(s.secret)
		k, err := s.keys.KeyByHash(ctx, hash)
		switch {
		case err == nil:
			if k.Revoked() {
				s.log.Warn(envAdminKey+" is a revoked key; it stays revoked", "id", k.ID, "name", k.Name)
			} else if k.Role != auth.RoleAdmin {
				s.log.Warn(envAdminKey+" is a key whose role is not admin", "id", k.ID, "role", string(k.Role))
			}
			return nil
		case !errors.Is(err, auth.ErrNotFound):
			return fmt.Errorf("looking up %s: %w", envAdminKey, err)
		}
		k = auth.Key{ID: auth.NewID(), Name: bootstrapKeyName, Role: auth.RoleAdmin, Hash: hash, Prefix: secretPrefix(s.secret), CreatedAt: now().UTC()}
		if err := s.keys.CreateKey(ctx, k); err != nil {
			if errors.Is(err, auth.ErrExists) { // another replica created it first
				return nil
			}
			return fmt.Errorf("creating the key of %s: %w", envAdminKey, err)
		}
		s.log.Info("created the bootstrap admin key from "+envAdminKey, "id", k.ID, "prefix", k.Prefix)
		return nil
	}

	keys, err := s.keys.Keys(ctx)
	if err != nil {
		return fmt.Errorf("listing API keys: %w", err)
	}
	for _, k := range keys {
		if k.CanAdmin() {
			s.log.Info("admin keys exist; to add one whose secret you choose, start with " + envAdminKey + " set")
			return nil
		}
	}
	secret, hash := auth.NewSecret(auth.RoleAdmin)
	k := auth.Key{ID: auth.NewID(), Name: bootstrapKeyName, Role: auth.RoleAdmin, Hash: hash, Prefix: secretPrefix(secret), CreatedAt: now().UTC()}
	if err := s.keys.CreateKey(ctx, k); err != nil {
		return fmt.Errorf("creating an admin key: %w", err)
	}
	s.log.Info("created an admin key; its secret is shown once on standard error", "id", k.ID, "prefix", k.Prefix)
	fmt.Fprintf(s.banner, `
================================================================================
  Flagpole created an admin API key. It is shown only this once: keep it now.

      FLAGPOLE_TOKEN=%s

  Use it with the CLI (export FLAGPOLE_TOKEN=...) or send it as
  "Authorization: Bearer <key>". Set %s to choose your own key.
================================================================================

`, secret, envAdminKey)
	return nil
}

// secretPrefix is the part of a secret kept in clear to recognise the key:
// at most 12 characters and never more than a quarter of the secret.
func secretPrefix(secret string) string {
	return secret[:min(12, len(secret)/4)]
}
