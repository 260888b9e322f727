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

// keyCache remembers API key lookups by secret hash, so that evaluation
// does not wait on the key store. A lookup older than the TTL is still
// answered from the cache while one background refresh per key asks the
// store again (stale-while-revalidate); only a key never seen waits for the
// store. A revocation made through this replica takes effect here at once;
// one made through another replica is seen here within the TTL plus one
// refresh. When the key store cannot be reached, a key seen before keeps
// working (fail static); an unknown one gets 503.
type keyCache struct {
	store auth.Store
	ttl   time.Duration
	now   func() time.Time

	mu         sync.RWMutex
	m          map[string]keyEntry // by secret hash
	refreshing map[string]bool     // hashes with a refresh in flight
	gen        uint64              // bumped by every revocation
}

type keyEntry struct {
	key     auth.Key
	found   bool
	fetched time.Time
}

// maxCachedKeys bounds the cache, so that a flood of made-up keys cannot
// grow it without bound; negative answers are not cached beyond it.
const maxCachedKeys = 10000

// refreshTimeout bounds one background refresh.
const refreshTimeout = 5 * time.Second

func newKeyCache(store auth.Store, ttl time.Duration, now func() time.Time) *keyCache {
	return &keyCache{store: store, ttl: ttl, now: now, m: map[string]keyEntry{}, refreshing: map[string]bool{}}
}

var (
	errNoKey      = errors.New("no API key")
	errBadKey     = errors.New("unknown API key")
	errRevokedKey = errors.New("revoked API key")
)

// lookup returns the key for secret. Errors: errBadKey, errRevokedKey, or
// flags.ErrUnavailable (wrapped) when the key store cannot be reached and
// the key was never seen.
func (kc *keyCache) lookup(ctx context.Context, secret string) (auth.Key, error) {
	hash := auth.HashSecret(secret)
	kc.mu.RLock()
	e, ok := kc.m[hash]
	gen := kc.gen
	kc.mu.RUnlock()
	if ok {
		if kc.now().Sub(e.fetched) >= kc.ttl {
			kc.refresh(hash)
		}
		return e.result()
	}
	e, err := kc.fetch(ctx, hash)
	if err != nil {
		return auth.Key{}, errors.Join(flags.ErrUnavailable, err)
	}
	kc.put(hash, e, gen)
	return e.result()
}

func (e keyEntry) result() (auth.Key, error) {
	switch {
	case !e.found:
		return auth.Key{}, errBadKey
	case e.key.Revoked():
		return auth.Key{}, errRevokedKey
	}
	return e.key, nil
}

// fetch asks the store; a missing key is a negative entry, not an error.
func (kc *keyCache) fetch(ctx context.Context, hash string) (keyEntry, error) {
	k, err := kc.store.KeyByHash(ctx, hash)
	switch {
	case err == nil:
		return keyEntry{key: k, found: true, fetched: kc.now()}, nil
	case errors.Is(err, auth.ErrNotFound):
		return keyEntry{fetched: kc.now()}, nil
	}
	return keyEntry{}, err
}

// refresh re-reads one key in the background, at most once at a time. If
// the store cannot answer, the cached entry is kept for another TTL.
func (kc *keyCache) refresh(hash string) {
	kc.mu.Lock()
	if kc.refreshing[hash] {
		kc.mu.Unlock()
		return
	}
	kc.refreshing[hash] = true
	gen := kc.gen
	kc.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), refreshTimeout)
		defer cancel()
		e, err := kc.fetch(ctx, hash)
		kc.mu.Lock()
		delete(kc.refreshing, hash)
		kc.mu.Unlock()
		if err != nil {
			kc.mu.Lock()
			if old, ok := kc.m[hash]; ok && kc.gen == gen {
				old.fetched = kc.now()
				kc.m[hash] = old
			}
			kc.mu.Unlock()
			return
		}
		kc.put(hash, e, gen)
	}()
}

// put stores an entry read when the cache was at generation gen; a read
// that raced with a revocation is dropped, so a revoked key never returns.
func (kc *keyCache) put(hash string, e keyEntry, gen uint64) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	if kc.gen != gen {
		return
	}
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

// revoked forgets every cached lookup of the key with this ID and discards
// lookups in flight.
func (kc *keyCache) revoked(id string) {
	kc.mu.Lock()
	defer kc.mu.Unlock()
	kc.gen++
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
