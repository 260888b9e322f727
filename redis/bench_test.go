package redis_test

import (
	"encoding/json"
	"fmt"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis"
	"github.com/flagpole/flagpole/redis/redistest"
)

// benchDoc is a 100-flag set of realistic size (about 20 KB): a third static,
// a third with rules on an email attribute, a third fractional.
func benchDoc() []byte {
	fl := map[string]any{}
	for i := range 100 {
		f := map[string]any{"state": "ENABLED", "variants": map[string]any{"on": true, "off": false}, "defaultVariant": "off"}
		switch i % 3 {
		case 1:
			f["targeting"] = map[string]any{"if": []any{
				map[string]any{"in": []any{"@example.com", map[string]any{"var": "email"}}}, "on", "off"}}
		case 2:
			f["targeting"] = map[string]any{"fractional": []any{[]any{"on", 25}, []any{"off", 75}}}
		}
		fl[fmt.Sprintf("flag-%03d", i)] = f
	}
	b, _ := json.Marshal(map[string]any{"flags": fl})
	return b
}

func benchStores(b *testing.B) map[string]func(b *testing.B) *redis.Store {
	return map[string]func(b *testing.B) *redis.Store{
		"redis-server": func(b *testing.B) *redis.Store {
			srv := redistest.Start(b)
			s, err := redis.Open(b.Context(), redis.Options{URL: srv.URL(), Prefix: "bench:"})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			return s
		},
		"redis-server-everysec": func(b *testing.B) *redis.Store {
			srv := redistest.Start(b)
			c := goredis.NewClient(&goredis.Options{Addr: srv.Addr()})
			defer c.Close()
			if err := c.ConfigSet(b.Context(), "appendfsync", "everysec").Err(); err != nil {
				b.Fatal(err)
			}
			s, err := redis.Open(b.Context(), redis.Options{URL: srv.URL(), Prefix: "bench:"})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			return s
		},
		"embedded": func(b *testing.B) *redis.Store {
			s, err := redis.OpenEmbedded(b.Context(), b.TempDir(), redis.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			return s
		},
	}
}

// BenchmarkSave measures one versioned write of a 100-flag set with its
// audit entry (one changed flag), including the round trip. redistest runs
// Redis with appendfsync always, so "redis-server" includes an fsync per
// write; "redis-server-everysec" shows the cost without it.
func BenchmarkSave(b *testing.B) {
	for _, name := range []string{"redis-server", "redis-server-everysec", "embedded"} {
		b.Run(name, func(b *testing.B) {
			s := benchStores(b)[name](b)
			doc := benchDoc()
			ctx := b.Context()
			if _, err := s.CreateEnvironment(ctx, "bench", doc, flags.AuditEntry{Action: "environment.create"}); err != nil {
				b.Fatal(err)
			}
			e := flags.AuditEntry{Actor: "bench", Action: "flag.update", Changes: []flags.FlagChange{{
				Key: "flag-007", Before: json.RawMessage(`{"state":"ENABLED"}`), After: json.RawMessage(`{"state":"DISABLED"}`),
				Diff: []flags.DiffOp{{Op: "replace", Path: "/state", From: json.RawMessage(`"ENABLED"`), Value: json.RawMessage(`"DISABLED"`)}},
			}}}
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			v := int64(1)
			for b.Loop() {
				snap, err := s.Save(ctx, "bench", v, doc, e)
				if err != nil {
					b.Fatal(err)
				}
				v = snap.Version
			}
		})
	}
}

// BenchmarkSnapshot measures reading one 100-flag set.
func BenchmarkSnapshot(b *testing.B) {
	s := benchStores(b)["redis-server"](b)
	doc := benchDoc()
	if _, err := s.CreateEnvironment(b.Context(), "bench", doc, flags.AuditEntry{Action: "environment.create"}); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Snapshot(b.Context(), "bench"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(int64(len(doc)))
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Snapshot(b.Context(), "bench"); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
