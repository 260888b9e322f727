package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/flags"
)

// exposureFlags has two experiment flags and ordinary ones.
const exposureFlags = `{
  "flags": {
    "checkout": {"state": "ENABLED", "variants": {"control": "old", "treatment": "new"}, "defaultVariant": "control",
      "targeting": {"if": [{"var": "targetingKey"}, {"fractional": [{"cat": ["exp:", {"var": "targetingKey"}]}, ["control", 50], ["treatment", 50]]}, "control"]},
      "metadata": {"experiment": "checkout-test"}},
    "pricing": {"state": "ENABLED", "variants": {"a": 1, "b": 2}, "defaultVariant": "b", "metadata": {"experiment": "pricing-test", "team": "growth"}},
    "plain": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on",
      "targeting": {"fractional": [{"var": "targetingKey"}, ["on", 50], ["off", 50]]}},
    "numbered": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on", "metadata": {"experiment": 3}},
    "off": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on", "metadata": {"experiment": "dormant"}},
    "no-default": {"state": "ENABLED", "variants": {"on": true, "off": false}, "metadata": {"experiment": "x"},
      "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", null]}}
  }
}`

// exposureHarness is a server whose event log records exposures into a
// fake log; stop ends the recorder's Run (flushing) and waits for it.
type exposureHarness struct {
	*harness
	rec  *ExposureRecorder
	log  *fakeEvents
	reg  *prometheus.Registry
	stop func()
}

func newExposureHarness(t *testing.T, cfg ExposureConfig, run bool) *exposureHarness {
	t.Helper()
	log := &fakeEvents{}
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	rec, err := NewExposureRecorder(copyingEvents{log}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	xh := &exposureHarness{rec: rec, log: log, reg: reg, stop: func() {}}
	if run {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); rec.Run(ctx) }()
		var once sync.Once
		xh.stop = func() { once.Do(func() { cancel(); <-done }) }
		t.Cleanup(xh.stop)
	}
	xh.harness = newHarness(t, withEvents(rec))
	xh.createEnv("prod", exposureFlags)
	return xh
}

func (xh *exposureHarness) evalOne(flag, ctx string) {
	xh.t.Helper()
	r := xh.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags/" + flag + "?env=prod", key: xh.admin, body: `{"context":` + ctx + `}`})
	if r.status != 200 && r.status != 400 && r.status != 404 {
		xh.t.Fatalf("evaluate %s: %d %s", flag, r.status, r.body)
	}
}

func (xh *exposureHarness) evalAll(ctx string) {
	xh.t.Helper()
	r := xh.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags?env=prod", key: xh.admin, body: `{"context":` + ctx + `}`})
	if r.status != 200 {
		xh.t.Fatalf("bulk evaluate: %d %s", r.status, r.body)
	}
}

func (xh *exposureHarness) counts() map[string]float64 {
	out := map[string]float64{}
	for _, res := range []string{"recorded", "deduplicated", "dropped", "failed"} {
		out[res] = testutil.ToFloat64(xh.recCounter(res))
	}
	return out
}

func (xh *exposureHarness) recCounter(result string) prometheus.Counter {
	switch result {
	case "recorded":
		return xh.rec.recorded
	case "deduplicated":
		return xh.rec.deduplicated
	case "dropped":
		return xh.rec.dropped
	}
	return xh.rec.failed
}

// exposures renders stored exposures as "flag/variant/key", sorted.
func exposures(evs []experiments.Event) []string {
	var out []string
	for _, e := range evs {
		if !e.IsExposure() || e.Time.IsZero() {
			out = append(out, fmt.Sprintf("bad event %+v", e))
			continue
		}
		out = append(out, e.FlagKey+"/"+e.Variant+"/"+e.TargetingKey)
	}
	slices.Sort(out)
	return out
}

func TestOFREPRecordsExposures(t *testing.T) {
	xh := newExposureHarness(t, ExposureConfig{}, true)
	// single evaluates checkout for key and returns the variant served.
	single := func(key string) string {
		r := xh.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags/checkout?env=prod", key: xh.admin, body: `{"context":{"targetingKey":"` + key + `"}}`})
		v, _ := r.json(t)["variant"].(string)
		return v
	}
	// bulk evaluates every flag and returns checkout's variant.
	bulk := func(ctx string) string {
		r := xh.do(req{method: "POST", path: "/ofrep/v1/evaluate/flags?env=prod", key: xh.admin, body: `{"context":` + ctx + `}`})
		var out struct {
			Flags []struct{ Key, Variant string }
		}
		if err := json.Unmarshal(r.body, &out); err != nil || r.status != 200 {
			t.Fatalf("bulk: %d %s", r.status, r.body)
		}
		for _, f := range out.Flags {
			if f.Key == "checkout" {
				return f.Variant
			}
		}
		return ""
	}
	v1, v2 := single("u1"), single("u2")
	xh.evalOne("pricing", `{"targetingKey":"u1"}`)
	xh.evalOne("pricing", `{"targetingKey":"u1"}`)            // de-duplicated
	xh.evalOne("pricing", `{}`)                               // no targeting key
	xh.evalOne("pricing", `{"targetingKey":""}`)              // empty targeting key
	xh.evalOne("plain", `{"targetingKey":"u1"}`)              // not an experiment flag
	xh.evalOne("numbered", `{"targetingKey":"u1"}`)           // "experiment" is not a key
	xh.evalOne("off", `{"targetingKey":"u1"}`)                // disabled: no variant
	xh.evalOne("no-default", `{"targetingKey":"u1"}`)         // code default: no variant
	xh.evalOne("missing", `{"targetingKey":"u1"}`)            // no such flag
	v3 := bulk(`{"targetingKey":"u3"}`)                       // checkout and pricing
	bulk(`{"targetingKey":"u3"}`)                             // de-duplicated (2)
	v4 := bulk(`{"targetingKey":"u4","plan":"pro"}`)          // checkout, pricing and no-default
	xh.evalOne("pricing", `{"targetingKey":"u3","plan":"x"}`) // de-duplicated with the bulk one
	if v1 == "" || v2 == "" || v3 == "" || v4 == "" {
		t.Fatalf("checkout variants %q %q %q %q", v1, v2, v3, v4)
	}
	xh.stop() // flushes

	got := exposures(xh.log.all("prod"))
	want := []string{
		"checkout/" + v1 + "/u1", "checkout/" + v2 + "/u2", "checkout/" + v3 + "/u3", "checkout/" + v4 + "/u4",
		"no-default/on/u4",
		"pricing/b/u1", "pricing/b/u3", "pricing/b/u4",
	}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("stored exposures\n got  %q\n want %q", got, want)
	}
	c := xh.counts()
	if c["recorded"] != float64(len(want)) || c["deduplicated"] != 4 || c["dropped"] != 0 || c["failed"] != 0 {
		t.Errorf("counters %v, want %d recorded, 4 deduplicated", c, len(want))
	}
	for _, e := range xh.log.all("prod") {
		if len(e.Validate()) > 0 || time.Since(e.Time) > time.Minute {
			t.Errorf("exposure %+v: %v", e, e.Validate())
		}
	}
	if n, err := testutil.GatherAndCount(xh.reg, "flagpole_exposures_total"); err != nil || n != 4 {
		t.Errorf("flagpole_exposures_total: %d series, %v", n, err)
	}
}

// The index of experiment flags follows flag changes: starting an
// experiment (metadata added) starts exposures, stopping it ends them.
func TestExposuresFollowFlagChanges(t *testing.T) {
	xh := newExposureHarness(t, ExposureConfig{Window: time.Nanosecond}, true)
	on := "on"
	set := func(meta map[string]any) {
		t.Helper()
		f := &flags.Flag{State: flags.Enabled, Variants: map[string]any{"on": true, "off": false}, DefaultVariant: &on, Metadata: meta}
		snap, err := xh.svc.PutFlag(context.Background(), "prod", "plain", f, flags.WriteOptions{Actor: "test"})
		if err != nil {
			t.Fatal(err)
		}
		xh.waitVersion("prod", snap.Version)
	}
	xh.evalOne("plain", `{"targetingKey":"before"}`)
	set(map[string]any{"experiment": "plain-test"})
	xh.evalOne("plain", `{"targetingKey":"during"}`)
	xh.evalAll(`{"targetingKey":"during-bulk"}`)
	set(nil)
	xh.evalOne("plain", `{"targetingKey":"after"}`)
	xh.evalAll(`{"targetingKey":"after-bulk"}`)
	xh.stop()
	var got []string
	for _, e := range exposures(xh.log.all("prod")) {
		if strings.HasPrefix(e, "plain/") {
			got = append(got, e)
		}
	}
	if want := []string{"plain/on/during", "plain/on/during-bulk"}; !slices.Equal(got, want) {
		t.Errorf("exposures of plain %q, want %q", got, want)
	}
	if n := len(*xh.rec.indexes.Load()); n != 1 {
		t.Errorf("%d cached indexes, want 1 (old versions forgotten)", n)
	}
}

// A user exposed in one experiment run is exposed again in the next (a
// restart changes the targeting's salt; another experiment changes the
// marker) even in the same variant and within the window; an edit of
// another flag does not re-expose.
func TestExposureDeduplicationPerRun(t *testing.T) {
	xh := newExposureHarness(t, ExposureConfig{Window: time.Hour}, true)
	b := "b"
	put := func(key string, f *flags.Flag) {
		t.Helper()
		snap, err := xh.svc.PutFlag(context.Background(), "prod", key, f, flags.WriteOptions{Actor: "test"})
		if err != nil {
			t.Fatal(err)
		}
		xh.waitVersion("prod", snap.Version)
	}
	pricing := func(meta map[string]any, targeting string) *flags.Flag {
		return &flags.Flag{State: flags.Enabled, Variants: map[string]any{"a": 1, "b": 2}, DefaultVariant: &b, Metadata: meta, Targeting: json.RawMessage(targeting)}
	}
	steps := []struct {
		name      string
		change    func()
		wantDedup float64 // deduplicated so far
	}{
		{"first exposure", nil, 0},
		{"same run", nil, 1},
		{"another flag edited", func() {
			put("plain", &flags.Flag{State: flags.Enabled, Variants: map[string]any{"b": true, "c": false}, DefaultVariant: &b})
		}, 2},
		{"restarted: new salt in the targeting", func() {
			put("pricing", pricing(map[string]any{"experiment": "pricing-test", "team": "growth"}, `{"if": [{"in": ["r1", {"var": "targetingKey"}]}, "a", "b"]}`))
		}, 2},
		{"another experiment on the flag", func() {
			put("pricing", pricing(map[string]any{"experiment": "pricing-test-2"}, `{"if": [{"in": ["r1", {"var": "targetingKey"}]}, "a", "b"]}`))
		}, 2},
		{"same run again", nil, 3},
	}
	for _, st := range steps {
		if st.change != nil {
			st.change()
		}
		xh.evalOne("pricing", `{"targetingKey":"u1"}`)
		if got := testutil.ToFloat64(xh.rec.deduplicated); got != st.wantDedup {
			t.Errorf("%s: deduplicated %v, want %v", st.name, got, st.wantDedup)
		}
	}
	xh.stop()
	if got, want := exposures(xh.log.all("prod")), []string{"pricing/b/u1", "pricing/b/u1", "pricing/b/u1"}; !slices.Equal(got, want) {
		t.Errorf("exposures %q, want %q", got, want)
	}
}

// A full queue drops (and counts) exposures instead of blocking the
// evaluation; a dropped exposure is not remembered, so a later evaluation
// records it.
func TestExposureQueueFullDrops(t *testing.T) {
	xh := newExposureHarness(t, ExposureConfig{Queue: 2}, false)
	for i := range 5 {
		xh.evalOne("pricing", fmt.Sprintf(`{"targetingKey":"u%d"}`, i))
	}
	c := xh.counts()
	if c["dropped"] != 3 || len(xh.rec.queue) != 2 {
		t.Fatalf("counters %v, queue %d: want 3 dropped and 2 queued", c, len(xh.rec.queue))
	}
	<-xh.rec.queue
	xh.evalOne("pricing", `{"targetingKey":"u4"}`)
	if c := xh.counts(); c["dropped"] != 3 || c["deduplicated"] != 0 || len(xh.rec.queue) != 2 {
		t.Errorf("after room was made: counters %v, queue %d; want u4 queued", c, len(xh.rec.queue))
	}
}

func TestExposureDeduplicationWindowAndBound(t *testing.T) {
	rec, err := NewExposureRecorder(&fakeEvents{}, ExposureConfig{Window: time.Minute, MaxRemembered: exposureShards * 4, Queue: 100_000})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1e9, 0)
	rec.now = func() time.Time { return now }
	rec.expose("prod", "f", "on", "u1", 1)
	rec.expose("prod", "f", "on", "u1", 1)
	now = now.Add(59 * time.Second)
	rec.expose("prod", "f", "on", "u1", 1)
	rec.expose("prod", "f", "off", "u1", 1)   // another variant: a crossover the consumer must see
	rec.expose("staging", "f", "on", "u1", 1) // another environment
	if len(rec.queue) != 3 || testutil.ToFloat64(rec.deduplicated) != 2 {
		t.Fatalf("queued %d, deduplicated %v; want 3 and 2", len(rec.queue), testutil.ToFloat64(rec.deduplicated))
	}
	now = now.Add(time.Second)
	rec.expose("prod", "f", "on", "u1", 1)
	if len(rec.queue) != 4 {
		t.Errorf("after the window: queued %d, want 4", len(rec.queue))
	}
	for i := range 20_000 {
		rec.expose("prod", "f", "on", fmt.Sprint("user-", i), 1)
	}
	total := 0
	for i := range rec.shards {
		n := len(rec.shards[i].seen)
		total += n
		if n > rec.perShard {
			t.Fatalf("shard %d remembers %d exposures, more than its bound %d", i, n, rec.perShard)
		}
	}
	if total > exposureShards*4 {
		t.Errorf("%d exposures remembered, bound %d", total, exposureShards*4)
	}
}

// flakyEvents fails the first `fails` appends with err.
type flakyEvents struct {
	fakeEvents
	mu    sync.Mutex
	fails int
	calls int
	err   error
}

func (f *flakyEvents) Append(ctx context.Context, env string, evs []experiments.Event) error {
	f.mu.Lock()
	f.calls++
	fail := f.calls <= f.fails
	f.mu.Unlock()
	if fail {
		return f.err
	}
	return f.fakeEvents.Append(ctx, env, slices.Clone(evs))
}

// copyingEvents is a fakeEvents that keeps copies, as the recorder reuses
// the slices it appends.
type copyingEvents struct{ *fakeEvents }

func (c copyingEvents) Append(ctx context.Context, env string, evs []experiments.Event) error {
	return c.fakeEvents.Append(ctx, env, slices.Clone(evs))
}

func TestExposureStoreRetries(t *testing.T) {
	unavailable := fmt.Errorf("redis down: %w", experiments.ErrUnavailable)
	tests := []struct {
		name         string
		fails        int
		err          error
		wantCalls    int
		wantRecorded float64
		wantFailed   float64
	}{
		{name: "stored", wantCalls: 1, wantRecorded: 2},
		{name: "unavailable, then stored", fails: 2, err: unavailable, wantCalls: 3, wantRecorded: 2},
		{name: "unavailable too long", fails: 100, err: unavailable, wantCalls: 1 + exposureRetries, wantFailed: 2},
		{name: "refused", fails: 1, err: &experiments.InvalidEventError{}, wantCalls: 1, wantFailed: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				log := &flakyEvents{fails: tc.fails, err: tc.err}
				rec, err := NewExposureRecorder(log, ExposureConfig{})
				if err != nil {
					t.Fatal(err)
				}
				at := time.Now()
				batch := []experiments.Event{
					{Name: experiments.ExposureEvent, TargetingKey: "u1", FlagKey: "f", Variant: "on", Time: at},
					{Name: experiments.ExposureEvent, TargetingKey: "u2", FlagKey: "f", Variant: "on", Time: at},
					{Name: experiments.ExposureEvent, TargetingKey: "", FlagKey: "f", Variant: "on", Time: at}, // invalid: left out
				}
				rec.store(context.Background(), "prod", batch)
				if log.calls != tc.wantCalls {
					t.Errorf("%d appends, want %d", log.calls, tc.wantCalls)
				}
				if got := testutil.ToFloat64(rec.recorded); got != tc.wantRecorded {
					t.Errorf("recorded %v, want %v", got, tc.wantRecorded)
				}
				if got := testutil.ToFloat64(rec.failed); got != tc.wantFailed+1 {
					t.Errorf("failed %v, want %v (+1 invalid)", got, tc.wantFailed+1)
				}
			})
		})
	}
}

// Run batches by size and by time, and flushes what is queued when it
// stops; later exposures are dropped.
func TestExposureRunBatchesAndFlushes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := &fakeEvents{}
		rec, err := NewExposureRecorder(log, ExposureConfig{Batch: 3, FlushInterval: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); rec.Run(ctx) }()
		batches := func() []int {
			log.mu.Lock()
			defer log.mu.Unlock()
			var n []int
			for _, env := range []string{"prod", "dev"} {
				for _, b := range log.batches[env] {
					n = append(n, len(b))
				}
			}
			return n
		}
		for i := range 4 {
			rec.expose("prod", "f", "on", fmt.Sprint("u", i), 1)
		}
		synctest.Wait()
		if got := batches(); !slices.Equal(got, []int{3}) {
			t.Fatalf("after 4 exposures with Batch 3: batches %v, want [3]", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := batches(); !slices.Equal(got, []int{3, 1}) {
			t.Fatalf("after the flush interval: batches %v, want [3 1]", got)
		}
		rec.expose("prod", "f", "on", "late-1", 1)
		rec.expose("dev", "f", "on", "late-2", 1)
		cancel()
		<-done
		if got := batches(); !slices.Equal(got, []int{3, 1, 1, 1}) {
			t.Fatalf("after stopping: batches %v, want [3 1 1 1]", got)
		}
		rec.expose("prod", "f", "on", "after-stop", 1)
		if testutil.ToFloat64(rec.dropped) != 1 || len(rec.queue) != 0 {
			t.Errorf("an exposure after Run ended: dropped %v, queue %d", testutil.ToFloat64(rec.dropped), len(rec.queue))
		}
	})
}

func TestNewExposureRecorderErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := NewExposureRecorder(&fakeEvents{}, ExposureConfig{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		log  EventAppender
		cfg  ExposureConfig
		want string
	}{
		{name: "no log", cfg: ExposureConfig{}, want: "event log is required"},
		{name: "negative window", log: &fakeEvents{}, cfg: ExposureConfig{Window: -1}, want: "negative"},
		{name: "negative queue", log: &fakeEvents{}, cfg: ExposureConfig{Queue: -1}, want: "negative"},
		{name: "batch too large", log: &fakeEvents{}, cfg: ExposureConfig{Batch: 1001}, want: "over 1000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewExposureRecorder(tc.log, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// Two recorders on one registry share flagpole_exposures_total.
func TestExposureRecordersShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	first, err := NewExposureRecorder(&fakeEvents{}, ExposureConfig{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	second, err := NewExposureRecorder(&fakeEvents{}, ExposureConfig{Registerer: reg})
	if err != nil {
		t.Fatalf("second recorder on the registry: %v", err)
	}
	second.expose("prod", "f", "on", "u1", 1)
	second.expose("prod", "f", "on", "u1", 1)
	if got := testutil.ToFloat64(first.deduplicated); got != 1 {
		t.Errorf("the first recorder's series reads %v, want the shared 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "flagpole_exposures_total"); err != nil || n != 4 {
		t.Errorf("series on the registry: %d (%v), want 4", n, err)
	}
}

// Tracking events sent to the events endpoint pass through the recorder.
func TestExposureRecorderPassesTrackingEvents(t *testing.T) {
	xh := newExposureHarness(t, ExposureConfig{}, true)
	r := xh.do(req{method: "POST", path: eventsPath("prod"), key: xh.admin, body: `{"events":[{"name":"checkout","targetingKey":"u1","value":3}]}`})
	if r.status != 202 {
		t.Fatalf("events: %d %s", r.status, r.body)
	}
	evs := xh.log.all("prod")
	if len(evs) != 1 || evs[0].Name != "checkout" {
		t.Errorf("stored %+v", evs)
	}
	log := &flakyEvents{fails: 1, err: errors.New("boom")}
	rec, _ := NewExposureRecorder(log, ExposureConfig{})
	if err := rec.Append(context.Background(), "prod", nil); err == nil || err.Error() != "boom" {
		t.Errorf("Append error %v, want the log's", err)
	}
}
