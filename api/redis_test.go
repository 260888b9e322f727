package api

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/redis"
	"github.com/flagpole/flagpole/redis/redistest"
)

// TestFailStaticWithRealRedis stops a real redis-server under evaluation
// load: no evaluation fails, writes get 503, and after a restart writes work
// again and both replicas follow them.
func TestFailStaticWithRealRedis(t *testing.T) {
	rs := redistest.Start(t)
	open := func() *redis.Store {
		st, err := redis.Open(context.Background(), redis.Options{URL: rs.URL()})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	a := newHarnessOn(t, open())
	b := newHarnessOn(t, open())
	a.createEnv("default", testFlags)
	b.waitVersion("default", 1)
	sdk := a.newKey(auth.RoleSDK, "web", "default")
	for _, h := range []*harness{a, b} {
		if st, _ := h.eval("default", "banner-color", sdk); st != 200 {
			t.Fatalf("warm-up: %d", st)
		}
	}

	// Evaluate continuously on both replicas while Redis goes away.
	var ok, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, h := range []*harness{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := h.try(req{method: "POST", path: "/ofrep/v1/evaluate/flags", key: sdk, body: `{"context":{"targetingKey":"u1","email":"a@example.com"}}`})
				if err == nil && r.status == 200 {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	rs.Stop()
	before := ok.Load()
	waitFor(t, "evaluations while Redis is down", func() bool { return ok.Load() > before+200 })

	r := a.do(req{method: "PATCH", path: "/api/v1/environments/default/flags/static-on", key: a.admin, body: `{"defaultVariant":"off"}`})
	if e := errorOf(t, r); r.status != 503 || e.Code != "unavailable" {
		t.Errorf("write with Redis down: %d %+v", r.status, e)
	}
	r = b.do(req{method: "GET", path: "/readyz"})
	if r.status != 200 || !strings.Contains(string(r.body), `"degraded"`) {
		t.Errorf("readyz with Redis down: %d %s", r.status, r.body)
	}

	rs.Restart()
	waitFor(t, "a write after Redis is back", func() bool {
		r := a.do(req{method: "PATCH", path: "/api/v1/environments/default/flags/static-on", key: a.admin, body: `{"defaultVariant":"off"}`})
		return r.status == 200
	})
	b.waitVersion("default", 2)
	if st, e := b.eval("default", "static-on", sdk); st != 200 || e.Value != false {
		t.Errorf("replica B after the write on A: %d %+v", st, e)
	}
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d evaluations failed around the outage", n, n+ok.Load())
	}
	t.Logf("%d evaluations succeeded across the outage", ok.Load())
}
