package redis_test

import (
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary/canarytest"
)

// BenchmarkRunnerInterval500 is one 10 s interval of 500 concurrent
// analyses executed by one canary.Runner against this store (fake metric
// source, real judge and scheduling code; see canarytest.BenchInterval):
// per step a lease acquire, a read, a fenced write of the run and its
// measurement, a due-index update and a release. redistest's Redis fsyncs
// every write; the embedded store fsyncs its journal, shared by concurrent
// writers.
func BenchmarkRunnerInterval500(b *testing.B) {
	for _, name := range []string{"redis-server", "redis-server-everysec", "embedded"} {
		b.Run(name, func(b *testing.B) {
			canarytest.BenchInterval(b, benchStores(b)[name](b), 500, 10*time.Second)
		})
	}
}
