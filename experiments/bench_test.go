package experiments

import (
	"strconv"
	"testing"
)

// millionUsers is an experiment's folded data for 1,000,000 users (500,000
// per arm) on three metrics: a conversion goal, a capped revenue sum and a
// ratio guardrail.
func millionUsers(b *testing.B) Observations {
	b.Helper()
	s := newSim(42)
	s.users("off", 500000, shopUser(0.30, 0, 300))
	s.users("on", 500000, shopUser(0.305, 0.01, 300))
	return s.obs
}

// BenchmarkAnalyze1M measures results for 1,000,000 users from sufficient
// statistics, per analysis mode. The cost does not depend on the number of users.
func BenchmarkAnalyze1M(b *testing.B) {
	obs := millionUsers(b)
	for _, mode := range []Mode{ModeSequential, ModeFixed, ModeBayesian} {
		b.Run(string(mode), func(b *testing.B) {
			e := shopExperiment(mode)
			b.ReportAllocs()
			for b.Loop() {
				r := Analyze(e, obs, t1)
				if r.Users != 1000000 {
					b.Fatal(r.Users)
				}
			}
		})
	}
}

func BenchmarkAssign(b *testing.B) {
	e := testExperiment()
	e.Traffic = 50
	e.Treatments = []string{"b", "c"}
	e.Defaults()
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i*7919)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_ = e.Assign(keys[i&1023])
		i++
	}
}
