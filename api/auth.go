package api

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/flags"
)

// keyCache remembers API key lookups by secret hash for a short TTL, so that
// evaluation does not ask the key store on every request. A revocation made
// through this replica takes effect here at once; one made through another
// replica within the TTL. When the key store cannot be reached, a key seen
// before keeps working (fail static); an unknown one gets 503.
type keyCache struct {
	store auth.Store
	ttl   time.Duration
	now   func() time.Time

	mu sync.RWMutex
	m  map[string]keyEntry // by secret hash
}

type keyEntry struct {
	key     auth.Key
	found   bool
	fetched time.Time
}

// maxCachedKeys bounds the cache, so that a flood of made-up keys cannot
// grow it without bound; negative answers are not cached beyond it.
const maxCachedKeys = 10000

func newKeyCache(store auth.Store, ttl time.Duration, now func() time.Time) *keyCache {
	return &keyCache{store: store, ttl: ttl, now: now, m: map[string]keyEntry{}}
}

var (
	errNoKey      = errors.New("no API key")
	errBadKey     = errors.New("unknown API key")
	errRevokedKey = errors.New("revoked API key")
)

// lookup returns the key for secret. Errors: errBadKey, errRevokedKey, or
// flags.ErrUnavailable (wrapped) when the key store cannot be reached and
// the key is not cached.
func (kc *keyCache) lookup(ctx context.Context, secret string) (auth.Key, error) {
	hash := auth.HashSecret(secret)
	now := kc.now()
	kc.mu.RLock()
	e, ok := kc.m[hash]
	kc.mu.RUnlock()
	if !ok || now.Sub(e.fetched) >= kc.ttl {
		k, err := kc.store.KeyByHash(ctx, hash)
		switch {
		case err == nil:
			e = keyEntry{key: k, found: true, fetched: now}
		case errors.Is(err, auth.ErrNotFound):
			e = keyEntry{fetched: now}
		case ok:
			// The store is away: keep using what was known (fail static).
		default:
			return auth.Key{}, errors.Join(flags.ErrUnavailable, err)
		}
		kc.put(hash, e)
	}
	switch {
	case !e.found:
		return auth.Key{}, errBadKey
	case e.key.Revoked():
		return auth.Key{}, errRevokedKey
	}
	return e.key, nil
}

func (kc *keyCache) put(hash string, e keyEntry) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if len(kc.m) >= maxCachedKeys {
		now := kc.now()
		for h, old := range kc.m {
			if now.Sub(old.fetched) >= kc.ttl {
				delete(kc.m, h)
			}
		}
		if len(kc.m) >= maxCachedKeys && !e.found {
			return
		}
	}
	kc.m[hash] = e
}

// revoked forgets every cached lookup of the key with this ID.
func (kc *keyCache) revoked(id string) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	for h, e := range kc.m {
		if e.key.ID == id {
			delete(kc.m, h)
		}
	}
}

// secretOf returns the API key a request carries, from "Authorization:
// Bearer <key>" or X-API-Key.
func secretOf(r *http.Request) string {
	if a := r.Header.Get("Authorization"); a != "" {
		if len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
			return strings.TrimSpace(a[7:])
		}
		return ""
	}
	return strings.TrimSpace(r.Header.Get("X-API-Key"))
}

// authenticate finds the caller's key. Errors: errNoKey, errBadKey,
// errRevokedKey, or a wrapped flags.ErrUnavailable.
func (s *Server) authenticate(rc *reqCtx) (auth.Key, error) {
	secret := secretOf(rc.Request())
	if secret == "" {
		return auth.Key{}, errNoKey
	}
	k, err := s.keys.lookup(rc.Request().Context(), secret)
	if err != nil {
		return auth.Key{}, err
	}
	rc.key, rc.hasKey = k, true
	return k, nil
}

// authError maps an authenticate error for the admin API.
func authError(err error) error {
	switch {
	case errors.Is(err, errNoKey):
		return newError(http.StatusUnauthorized, codeUnauthorized, "an API key is required: send Authorization: Bearer <key> or X-API-Key: <key>")
	case errors.Is(err, errBadKey):
		return newError(http.StatusUnauthorized, codeUnauthorized, "the API key is not valid")
	case errors.Is(err, errRevokedKey):
		return newError(http.StatusUnauthorized, codeUnauthorized, "the API key has been revoked")
	case errors.Is(err, flags.ErrUnavailable):
		return newError(http.StatusServiceUnavailable, codeUnavailable, "the key store is unavailable, so the API key cannot be checked; retry later")
	}
	return err
}

// keyHandler is an admin API handler for an authenticated caller.
type keyHandler func(rc *reqCtx, k auth.Key) error

// withKey authenticates the caller before h; h checks the role.
func (s *Server) withKey(h keyHandler) echo.HandlerFunc {
	return func(c echo.Context) error {
		rc, ok := c.(*reqCtx)
		if !ok {
			rc = &reqCtx{Context: c}
		}
		k, err := s.authenticate(rc)
		if err != nil {
			if errors.Is(err, errNoKey) || errors.Is(err, errBadKey) || errors.Is(err, errRevokedKey) {
				rc.Response().Header().Set("WWW-Authenticate", `Bearer realm="flagpole"`)
			}
			return authError(err)
		}
		return h(rc, k)
	}
}

func forbidden(msg string) *apiError {
	return newError(http.StatusForbidden, codeForbidden, msg)
}

func requireAdmin(k auth.Key) error {
	if k.CanAdmin() {
		return nil
	}
	if k.Role == auth.RoleSDK {
		return forbidden("an sdk key may only evaluate flags; this needs an admin key")
	}
	return forbidden("this needs an admin key")
}

func requireEdit(k auth.Key, env string) error {
	if k.CanEdit(env) {
		return nil
	}
	if k.Role == auth.RoleSDK {
		return forbidden("an sdk key may only evaluate flags; this needs an editor or admin key")
	}
	return forbidden("this key may not read or change environment " + strconv.Quote(env))
}

// rateLimiter is a token bucket per API key: rate tokens per second, up to
// one second's worth (at least 1) in the bucket.
type rateLimiter struct {
	rate  float64
	burst float64
	mu    sync.Mutex
	m     map[string]*bucket // by key ID; bounded by the number of valid keys
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64) *rateLimiter {
	return &rateLimiter{rate: rate, burst: math.Max(1, rate), m: map[string]*bucket{}}
}

// allow takes a token for id, or says how long until one is available.
func (l *rateLimiter) allow(id string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[id]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.m[id] = b
	}
	if el := now.Sub(b.last); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+el.Seconds()*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}
