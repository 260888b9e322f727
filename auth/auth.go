// Package auth is Flagpole's access model: API keys, their roles and what each
// role may do. Secrets are random, shown once at creation, and stored only as
// a SHA-256 hash. The package does no I/O; [Store] is the storage contract.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"time"
)

// Role is what a key may do.
type Role string

// Roles.
const (
	// RoleAdmin may do everything.
	RoleAdmin Role = "admin"
	// RoleEditor may read and change flags in its environments.
	RoleEditor Role = "editor"
	// RoleSDK may only evaluate flags, stream and send events, in exactly one environment.
	RoleSDK Role = "sdk"
)

// Errors a [Store] returns (possibly wrapped).
var (
	ErrNotFound = errors.New("key not found")
	ErrExists   = errors.New("key already exists")
)

// Key is an API key as stored: never the secret itself, only its hash.
type Key struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Role      Role       `json:"role"`
	Envs      []string   `json:"environments,omitempty"` // editor: the environments; sdk: exactly one
	Hash      string     `json:"-"`
	Prefix    string     `json:"prefix"` // the first characters of the secret, to recognise it
	CreatedAt time.Time  `json:"createdAt"`
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
}

// Revoked reports whether the key has been revoked.
func (k Key) Revoked() bool { return k.RevokedAt != nil }

// Validate reports the first problem with a key's role and environments as a
// field name and a message, or "" and "" when it is valid.
func (k Key) Validate() (field, problem string) {
	if strings.TrimSpace(k.Name) == "" {
		return "name", "is required"
	}
	switch k.Role {
	case RoleAdmin:
		if len(k.Envs) > 0 {
			return "environments", "an admin key applies to every environment; leave it empty"
		}
	case RoleEditor:
		if len(k.Envs) == 0 {
			return "environments", "an editor key needs at least one environment"
		}
	case RoleSDK:
		if len(k.Envs) != 1 {
			return "environments", "an sdk key belongs to exactly one environment"
		}
	default:
		return "role", `must be one of "admin", "editor", "sdk"`
	}
	return "", ""
}

// CanEvaluate reports whether the key may evaluate flags (and stream them) in env.
func (k Key) CanEvaluate(env string) bool {
	if k.Revoked() {
		return false
	}
	return k.Role == RoleAdmin || slices.Contains(k.Envs, env)
}

// CanEdit reports whether the key may read and change flags in env.
func (k Key) CanEdit(env string) bool {
	if k.Revoked() {
		return false
	}
	return k.Role == RoleAdmin || (k.Role == RoleEditor && slices.Contains(k.Envs, env))
}

// CanAdmin reports whether the key may manage environments and keys.
func (k Key) CanAdmin() bool { return !k.Revoked() && k.Role == RoleAdmin }

// NewSecret returns a fresh random secret for a key of role r, and its hash.
// The secret looks like "fp_sdk_<43 base64url characters>" (256 random bits).
func NewSecret(r Role) (secret, hash string) {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	secret = "fp_" + string(r) + "_" + base64.RawURLEncoding.EncodeToString(b[:])
	return secret, HashSecret(secret)
}

// HashSecret is the stored form of a secret: hex SHA-256. Secrets are 256-bit
// random values, so a fast hash is sufficient and keeps lookups cheap.
func HashSecret(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// NewID returns a random identifier for a key (hex, 16 characters).
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Store persists API keys.
type Store interface {
	// CreateKey stores k. ErrExists if a key with its ID or hash exists.
	CreateKey(ctx context.Context, k Key) error
	// KeyByHash finds a key by its secret's hash. ErrNotFound if none.
	KeyByHash(ctx context.Context, hash string) (Key, error)
	// Keys lists every key (revoked ones too), oldest first.
	Keys(ctx context.Context) ([]Key, error)
	// RevokeKey marks a key revoked at the given time. ErrNotFound if absent.
	RevokeKey(ctx context.Context, id string, at time.Time) error
}
