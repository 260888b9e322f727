package deploy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/canary"
)

// Errors of a KeyChecker.
var (
	// ErrNoKey: the caller sent no API key.
	ErrNoKey = errors.New("no API key")
	// ErrBadKey: the key is unknown or revoked.
	ErrBadKey = errors.New("the API key is not valid")
	// ErrForbidden: the key's role may not call.
	ErrForbidden = errors.New("the API key may not call orchestrator hooks")
)

// CheckKeys returns a KeyChecker over a key store: admin keys and editor
// keys (of any environment) may call; sdk keys may not. Keys are looked up
// by the SHA-256 of the secret on every call (hooks are called once per
// analysis interval, so no cache is needed). A store that cannot be reached
// gives an error wrapping canary.ErrUnavailable.
func CheckKeys(store auth.Store) KeyChecker {
	return func(ctx context.Context, key string) error {
		if key == "" {
			return ErrNoKey
		}
		k, err := store.KeyByHash(ctx, auth.HashSecret(key))
		switch {
		case errors.Is(err, auth.ErrNotFound):
			return ErrBadKey
		case err != nil:
			return fmt.Errorf("the key store cannot be reached: %w", errors.Join(err, canary.ErrUnavailable))
		case k.Revoked():
			return ErrBadKey
		case !k.CanAdmin() && k.Role != auth.RoleEditor:
			return ErrForbidden
		}
		return nil
	}
}

// keyOf returns the API key a request carries in "Authorization: Bearer"
// or X-API-Key, or "".
func keyOf(r *http.Request) string {
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		return strings.TrimSpace(a[7:])
	}
	return strings.TrimSpace(r.Header.Get("X-API-Key"))
}

// keyError maps a KeyChecker error to a status and message.
func keyError(err error) (int, string) {
	switch {
	case errors.Is(err, ErrNoKey):
		return http.StatusUnauthorized, "an API key is required: put an admin or editor key in the webhook's metadata as token"
	case errors.Is(err, ErrBadKey):
		return http.StatusUnauthorized, "the API key is not valid (unknown or revoked)"
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden, "the API key's role may not call orchestrator hooks; use an admin or editor key"
	}
	return http.StatusServiceUnavailable, "the key store cannot be reached, so the API key cannot be checked; retry"
}
