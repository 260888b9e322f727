package api

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/flags"
)

// keyStub is an auth.Store that answers from a map, counts lookups, and can
// be made unavailable or slow (block until released).
type keyStub struct {
	mu      sync.Mutex
	keys    map[string]auth.Key // by hash
	down    bool
	block   chan struct{} // when non-nil, KeyByHash waits for it
	lookups atomic.Int64
}

func (s *keyStub) CreateKey(context.Context, auth.Key) error { return nil }
func (s *keyStub) Keys(context.Context) ([]auth.Key, error)  { return nil, nil }
func (s *keyStub) RevokeKey(context.Context, string, time.Time) error {
	return nil
}
func (s *keyStub) KeyByHash(ctx context.Context, hash string) (auth.Key, error) {
	s.lookups.Add(1)
	s.mu.Lock()
	block := s.block
	s.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return auth.Key{}, ctx.Err()
		}
	}
	s.mu.Lock()
	k, ok := s.keys[hash]
	down := s.down
	s.mu.Unlock()
	if down {
		return auth.Key{}, flags.ErrUnavailable
	}
	if !ok {
		return auth.Key{}, auth.ErrNotFound
	}
	return k, nil
}

func (s *keyStub) set(f func(s *keyStub)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func TestKeyCache(t *testing.T) {
	const secret = "fp_sdk_test"
	key := auth.Key{ID: "k1", Name: "web", Role: auth.RoleSDK, Envs: []string{"default"}}

	t.Run("cached within the TTL", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			st := &keyStub{keys: map[string]auth.Key{auth.HashSecret(secret): key}}
			kc := newKeyCache(st, 2*time.Second, time.Now)
			for range 5 {
				if k, err := kc.lookup(t.Context(), secret); err != nil || k.ID != "k1" {
					t.Fatalf("lookup: %v %v", k, err)
				}
			}
			if n := st.lookups.Load(); n != 1 {
				t.Errorf("store asked %d times, want 1", n)
			}
		})
	})

	t.Run("stale answer while one refresh runs", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			st := &keyStub{keys: map[string]auth.Key{auth.HashSecret(secret): key}}
			kc := newKeyCache(st, 2*time.Second, time.Now)
			if _, err := kc.lookup(t.Context(), secret); err != nil {
				t.Fatal(err)
			}
			release := make(chan struct{})
			st.set(func(s *keyStub) { s.block = release })
			time.Sleep(3 * time.Second)
			// Past the TTL, with the store hanging: answered at once, one refresh.
			for range 10 {
				if _, err := kc.lookup(t.Context(), secret); err != nil {
					t.Fatalf("stale lookup: %v", err)
				}
			}
			synctest.Wait()
			if n := st.lookups.Load(); n != 2 {
				t.Errorf("store asked %d times, want 2 (one refresh in flight)", n)
			}
			// The refresh learns of a revocation made elsewhere.
			revokedAt := time.Now()
			st.set(func(s *keyStub) {
				k := key
				k.RevokedAt = &revokedAt
				s.keys[auth.HashSecret(secret)] = k
				s.block = nil
			})
			close(release)
			synctest.Wait()
			if _, err := kc.lookup(t.Context(), secret); !errors.Is(err, errRevokedKey) {
				t.Errorf("after the refresh: %v, want revoked", err)
			}
		})
	})

	t.Run("store down", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			st := &keyStub{keys: map[string]auth.Key{auth.HashSecret(secret): key}}
			kc := newKeyCache(st, 2*time.Second, time.Now)
			if _, err := kc.lookup(t.Context(), secret); err != nil {
				t.Fatal(err)
			}
			st.set(func(s *keyStub) { s.down = true })
			time.Sleep(10 * time.Second)
			for range 3 {
				if _, err := kc.lookup(t.Context(), secret); err != nil {
					t.Fatalf("known key with the store down: %v", err)
				}
				synctest.Wait()
			}
			if n := st.lookups.Load(); n != 2 {
				t.Errorf("store asked %d times while down, want 2 (a failed refresh waits a TTL)", n)
			}
			if _, err := kc.lookup(t.Context(), "fp_sdk_unknown"); !errors.Is(err, flags.ErrUnavailable) {
				t.Errorf("unknown key with the store down: %v, want unavailable", err)
			}
		})
	})

	t.Run("revocation here wins over a refresh in flight", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			st := &keyStub{keys: map[string]auth.Key{auth.HashSecret(secret): key}}
			kc := newKeyCache(st, 2*time.Second, time.Now)
			if _, err := kc.lookup(t.Context(), secret); err != nil {
				t.Fatal(err)
			}
			release := make(chan struct{})
			st.set(func(s *keyStub) { s.block = release })
			time.Sleep(3 * time.Second)
			_, _ = kc.lookup(t.Context(), secret) // starts a refresh that reads the unrevoked key
			synctest.Wait()
			kc.revoked("k1")
			revokedAt := time.Now()
			close(release)
			synctest.Wait()
			st.set(func(s *keyStub) {
				k := key
				k.RevokedAt = &revokedAt
				s.keys[auth.HashSecret(secret)] = k
				s.block = nil
			})
			if _, err := kc.lookup(t.Context(), secret); !errors.Is(err, errRevokedKey) {
				t.Errorf("after revoking here: %v, want revoked", err)
			}
		})
	})

	t.Run("unknown keys", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			st := &keyStub{keys: map[string]auth.Key{}}
			kc := newKeyCache(st, 2*time.Second, time.Now)
			for range 3 {
				if _, err := kc.lookup(t.Context(), "fp_sdk_nope"); !errors.Is(err, errBadKey) {
					t.Fatalf("unknown key: %v", err)
				}
			}
			if n := st.lookups.Load(); n != 1 {
				t.Errorf("negative answers not cached: %d lookups", n)
			}
		})
	})
}

func TestRateLimiter(t *testing.T) {
	start := time.Unix(1000, 0)
	l := newRateLimiter(10)
	for i := range 10 {
		if ok, _ := l.allow("a", start); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	ok, wait := l.allow("a", start)
	if ok || wait != 100*time.Millisecond {
		t.Errorf("11th: ok=%v wait=%v, want refused for 100ms", ok, wait)
	}
	if ok, _ := l.allow("b", start); !ok {
		t.Errorf("another key shares the bucket")
	}
	if ok, _ := l.allow("a", start.Add(100*time.Millisecond)); !ok {
		t.Errorf("not refilled after 100ms")
	}
	slow := newRateLimiter(0.5) // one request every two seconds, burst 1
	if ok, _ := slow.allow("a", start); !ok {
		t.Fatal("first refused")
	}
	if ok, wait := slow.allow("a", start); ok || wait != 2*time.Second {
		t.Errorf("second: ok=%v wait=%v", ok, wait)
	}
}
