package api

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flagpole/flagpole/experiments"
)

// discardEvents is an event log that stores nothing, so that the
// benchmarks measure the recorder, not a store.
type discardEvents struct{ n atomic.Int64 }

func (d *discardEvents) Append(_ context.Context, _ string, evs []experiments.Event) error {
	d.n.Add(int64(len(evs)))
	return nil
}

// benchExperimentSet is the OFREP benchmark set (95 flags) with five
// experiment flags, as running experiments write them: a 50/50 fractional
// on a salted targeting key and metadata "experiment".
func benchExperimentSet() string {
	base := benchFlagSet(95)
	var b strings.Builder
	b.WriteString(strings.TrimSuffix(base, "}}"))
	for i := range 5 {
		fmt.Fprintf(&b, `,"exp-%d":{"state":"ENABLED","variants":{"control":false,"treatment":true},"defaultVariant":"control",`+
			`"targeting":{"if":[{"var":"targetingKey"},{"fractional":[{"cat":["exp-%d:",{"var":"targetingKey"}]},["control",50],["treatment",50]]},"control"]},`+
			`"metadata":{"experiment":"exp-%d"}}`, i, i, i)
	}
	b.WriteString("}}")
	return b.String()
}

// exposureBench starts a server on benchExperimentSet, recording
// exposures into a discarding log when record is set.
func exposureBench(b *testing.B, record bool) (*harness, *discardEvents) {
	b.Helper()
	log := &discardEvents{}
	opts := []harnessOption{func(c *Config) {
		c.SyncInterval = time.Second
		c.Logger = slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}}
	if record {
		rec, err := NewExposureRecorder(log, ExposureConfig{})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); rec.Run(ctx) }()
		b.Cleanup(func() { cancel(); <-done })
		opts = append(opts, withEvents(rec))
	}
	h := newHarness(b, opts...)
	h.createEnv("default", benchExperimentSet())
	if st := h.srv.env("default"); st == nil || len(st.keys) != 100 {
		b.Fatalf("bench set not loaded")
	}
	return h, log
}

// processCPU is the CPU time this process has used (user and system, every
// thread: the handlers, the batcher and the garbage collector), which other
// work on a shared machine does not inflate as it does wall time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runExposureBench is runOFREP with request bodies made per request: from
// 1,000 returning users (their exposures de-duplicated, the steady state)
// or a new user every request (every exposure recorded).
func runExposureBench(b *testing.B, h *harness, path string, newUsers bool) {
	b.ReportAllocs()
	cpu0 := processCPU()
	b.ResetTimer()
	defer func() { b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op") }()
	var seq atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		c := newBenchClient(h.srv.Handler(), path, h.admin)
		body := make([]byte, 0, 256)
		for pb.Next() {
			i := seq.Add(1)
			if !newUsers {
				i %= 1000
			}
			body = append(body[:0], `{"context":{"targetingKey":"user-`...)
			body = strconv.AppendInt(body, i, 10)
			body = append(body, `","email":"someone@example.com","plan":"pro","country":"DE"}}`...)
			if st := c.do(body); st != 200 {
				b.Errorf("status %d", st)
				return
			}
		}
	})
}

// BenchmarkOFREPExposures compares OFREP evaluations of an experiment flag
// (single) and of a set holding five (bulk) without exposure recording
// ("off"), with it for returning users ("seen": de-duplicated) and for a
// new user every request ("new": every exposure queued and stored by the
// batcher, whose CPU is on the same two cores).
func BenchmarkOFREPExposures(b *testing.B) {
	for _, kind := range []struct{ name, path string }{
		{"single", "/ofrep/v1/evaluate/flags/exp-0"},
		{"bulk", "/ofrep/v1/evaluate/flags"},
	} {
		for _, mode := range []struct {
			name             string
			record, newUsers bool
		}{
			{"off-seen", false, false},
			{"on-seen", true, false},
			{"off-new", false, true},
			{"on-new", true, true},
		} {
			b.Run(kind.name+"/"+mode.name, func(b *testing.B) {
				h, log := exposureBench(b, mode.record)
				runExposureBench(b, h, kind.path, mode.newUsers)
				b.StopTimer()
				if mode.record && b.N > 10 {
					b.ReportMetric(float64(log.n.Load())/float64(b.N), "stored/op")
				}
			})
		}
	}
}

// BenchmarkExposureHotPath isolates what exposure recording adds to one
// evaluation of an experiment flag: the scope (recorder check, per-version
// index, targeting key) and the record, for a returning user ("seen") or a
// new one ("new", including the batcher's CPU to store it).
func BenchmarkExposureHotPath(b *testing.B) {
	for _, newUsers := range []bool{false, true} {
		name := "seen"
		if newUsers {
			name = "new"
		}
		b.Run(name, func(b *testing.B) {
			h, _ := exposureBench(b, true)
			st := h.srv.env("default")
			fe := st.flags["exp-0"]
			res := st.set.Evaluate("exp-0", map[string]any{"targetingKey": "user-1"})
			keys := make([]map[string]any, 1000)
			for i := range keys {
				keys[i] = map[string]any{"targetingKey": "user-" + strconv.Itoa(i)}
			}
			fresh := map[string]any{}
			b.ReportAllocs()
			cpu0 := processCPU()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				ctx := keys[i%len(keys)]
				if newUsers {
					fresh["targetingKey"] = "new-user-" + strconv.Itoa(i)
					ctx = fresh
				}
				h.srv.exposureScope(st, ctx).flag(fe, res)
			}
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
