package redis

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/flags"
)

// storedKey is an API key as kept in Redis: auth.Key hides its hash from
// JSON, the store must not.
type storedKey struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Role      auth.Role `json:"role"`
	Envs      []string  `json:"envs,omitempty"`
	Hash      string    `json:"hash"`
	Prefix    string    `json:"prefix"`
	CreatedAt time.Time `json:"createdAt"`
}

func (k storedKey) key(revoked string) (auth.Key, error) {
	out := auth.Key{ID: k.ID, Name: k.Name, Role: k.Role, Envs: k.Envs, Hash: k.Hash, Prefix: k.Prefix, CreatedAt: k.CreatedAt}
	if revoked != "" {
		t, err := time.Parse(time.RFC3339Nano, revoked)
		if err != nil {
			return auth.Key{}, fmt.Errorf("key %q: stored revocation time is malformed", k.ID)
		}
		out.RevokedAt = &t
	}
	return out, nil
}

// createKeyScript stores a key under its ID and hash unless either is taken.
// Storing the identical record again succeeds (a retried command).
// KEYS: byid, byhash. ARGV: id, hash, JSON.
var createKeyScript = goredis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  if cur == ARGV[3] then return 1 end
  return 0
end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
return 1
`)

// keyByHashScript returns {JSON, revokedAt or ""} for a hash, or nil.
// KEYS: byid, byhash, revoked. ARGV: hash.
var keyByHashScript = goredis.NewScript(`
local id = redis.call('HGET', KEYS[2], ARGV[1])
if not id then return false end
local k = redis.call('HGET', KEYS[1], id)
if not k then return false end
return {k, redis.call('HGET', KEYS[3], id) or ''}
`)

// revokeKeyScript records the first revocation time of an existing key.
// KEYS: byid, revoked. ARGV: id, time.
var revokeKeyScript = goredis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
return 1
`)

// CreateKey stores k (with its hash, never a secret). Errors: auth.ErrExists
// when a key with its ID or hash exists, *flags.InputError without an ID or
// hash, wrapped flags.ErrUnavailable.
func (s *Store) CreateKey(ctx context.Context, k auth.Key) (err error) {
	done := s.met.start("create_key")
	defer func() { done(err) }()
	switch {
	case k.ID == "":
		return &flags.InputError{Field: "id", Problem: "is required"}
	case k.Hash == "":
		return &flags.InputError{Field: "hash", Problem: "is required"}
	}
	if s.closed.Load() {
		return errClosed
	}
	body, err := json.Marshal(storedKey{ID: k.ID, Name: k.Name, Role: k.Role, Envs: k.Envs, Hash: k.Hash, Prefix: k.Prefix, CreatedAt: k.CreatedAt.UTC()})
	if err != nil {
		return fmt.Errorf("encoding key %q: %v", k.ID, err)
	}
	return s.write(func(fx *effects) error {
		keys, args := []string{s.keys.keysByID(), s.keys.keysByHash()}, []any{k.ID, k.Hash, body}
		n, err := createKeyScript.Run(ctx, s.rdb, keys, args...).Int()
		if err != nil {
			return translate("create key", err)
		}
		if n == 0 {
			return fmt.Errorf("key %q: %w", k.ID, auth.ErrExists)
		}
		fx.script(createKeyScript, keys, args)
		if k.RevokedAt != nil {
			at := k.RevokedAt.UTC().Format(time.RFC3339Nano)
			if err := s.rdb.HSetNX(ctx, s.keys.keysRevoked(), k.ID, at).Err(); err != nil {
				return translate("create key", err)
			}
			fx.command("HSETNX", s.keys.keysRevoked(), k.ID, at)
		}
		return nil
	})
}

// KeyByHash finds a key by its secret's hash. Errors: auth.ErrNotFound,
// wrapped flags.ErrUnavailable.
func (s *Store) KeyByHash(ctx context.Context, hash string) (k auth.Key, err error) {
	done := s.met.start("key_by_hash")
	defer func() { done(err) }()
	if s.closed.Load() {
		return auth.Key{}, errClosed
	}
	res, err := keyByHashScript.Run(ctx, s.rdb, []string{s.keys.keysByID(), s.keys.keysByHash(), s.keys.keysRevoked()}, hash).StringSlice()
	if errors.Is(err, goredis.Nil) {
		return auth.Key{}, auth.ErrNotFound
	}
	if err != nil {
		return auth.Key{}, translate("key by hash", err)
	}
	if len(res) != 2 {
		return auth.Key{}, fmt.Errorf("redis key by hash: unexpected reply of %d values", len(res))
	}
	var sk storedKey
	if err := json.Unmarshal([]byte(res[0]), &sk); err != nil {
		return auth.Key{}, fmt.Errorf("a stored key is malformed")
	}
	return sk.key(res[1])
}

// Keys lists every key, revoked ones too, oldest first (ties by ID).
// Errors: wrapped flags.ErrUnavailable.
func (s *Store) Keys(ctx context.Context) (out []auth.Key, err error) {
	done := s.met.start("keys")
	defer func() { done(err) }()
	if s.closed.Load() {
		return nil, errClosed
	}
	var byID, revoked *goredis.MapStringStringCmd
	_, err = s.rdb.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		byID = p.HGetAll(ctx, s.keys.keysByID())
		revoked = p.HGetAll(ctx, s.keys.keysRevoked())
		return nil
	})
	if err != nil {
		return nil, translate("keys", err)
	}
	out = make([]auth.Key, 0, len(byID.Val()))
	for id, body := range byID.Val() {
		var sk storedKey
		if err := json.Unmarshal([]byte(body), &sk); err != nil {
			return nil, fmt.Errorf("stored key %q is malformed", id)
		}
		k, err := sk.key(revoked.Val()[id])
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b auth.Key) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

// RevokeKey marks key id revoked at the given time; revoking a revoked key
// keeps the first time. Errors: auth.ErrNotFound, wrapped
// flags.ErrUnavailable.
func (s *Store) RevokeKey(ctx context.Context, id string, at time.Time) (err error) {
	done := s.met.start("revoke_key")
	defer func() { done(err) }()
	if s.closed.Load() {
		return errClosed
	}
	return s.write(func(fx *effects) error {
		keys, args := []string{s.keys.keysByID(), s.keys.keysRevoked()}, []any{id, at.UTC().Format(time.RFC3339Nano)}
		n, err := revokeKeyScript.Run(ctx, s.rdb, keys, args...).Int()
		if err != nil {
			return translate("revoke key", err)
		}
		if n == 0 {
			return fmt.Errorf("key %q: %w", id, auth.ErrNotFound)
		}
		fx.script(revokeKeyScript, keys, args)
		return nil
	})
}
