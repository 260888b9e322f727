package redis_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/auth/authtest"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/flags/storetest"
	"github.com/flagpole/flagpole/redis"
	"github.com/flagpole/flagpole/redis/redistest"
)

var prefixSeq atomic.Int64

// uniquePrefix gives each store its own namespace so tests can share a server.
func uniquePrefix(t *testing.T) string {
	return fmt.Sprintf("test%d-%s:", prefixSeq.Add(1), t.Name())
}

func openReal(t *testing.T, srv *redistest.Server) *redis.Store {
	t.Helper()
	s, err := redis.Open(t.Context(), redis.Options{URL: srv.URL(), Prefix: uniquePrefix(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func openEmbedded(t *testing.T) *redis.Store {
	t.Helper()
	s, err := redis.OpenEmbedded(t.Context(), t.TempDir(), redis.Options{Prefix: uniquePrefix(t)})
	if err != nil {
		t.Fatalf("OpenEmbedded: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestFlagStoreConformance(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) flags.Store { return openEmbedded(t) })
	})
	t.Run("redis-server", func(t *testing.T) {
		srv := redistest.Start(t)
		storetest.Run(t, func(t *testing.T) flags.Store { return openReal(t, srv) })
	})
}

func TestKeyStoreConformance(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		authtest.Run(t, func(t *testing.T) auth.Store { return openEmbedded(t) })
	})
	t.Run("redis-server", func(t *testing.T) {
		srv := redistest.Start(t)
		authtest.Run(t, func(t *testing.T) auth.Store { return openReal(t, srv) })
	})
}
