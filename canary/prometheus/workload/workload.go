// Package workload is a synthetic service for canary tests. It serves
// Prometheus metrics for several arms (by default "baseline" and "canary",
// told apart by the label arm) from its own registry, and generates each
// arm's traffic itself on a ticker: a request counter, an error counter, a
// latency histogram and a gauge. Traffic rate, error rate, latency
// distribution and gauge value are set per arm at run time.
//
// Requests are simulated: nothing sleeps, latencies are drawn and observed.
// Randomness comes from Options.Seed, so a run is reproducible up to ticker
// timing; Snapshot reports exactly what was generated, to compare with what
// Prometheus scraped.
package workload

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// The default arms.
const (
	Baseline = "baseline"
	Canary   = "canary"
)

// ArmLabel is the label that tells the arms apart on every metric.
const ArmLabel = "arm"

// Metric names served on /metrics, each labelled with ArmLabel.
const (
	RequestsMetric = "workload_requests_total"           // counter: requests
	ErrorsMetric   = "workload_errors_total"             // counter: failed requests
	LatencyMetric  = "workload_request_duration_seconds" // histogram: latency of every request
	GaugeMetric    = "workload_gauge"                    // gauge: e.g. CPU or memory use
)

// Limits on run-time settings, so a test cannot make the workload spin.
const (
	MaxRPS      = 100_000
	MaxGenerate = 1_000_000
	MaxSpread   = 5
)

// DefaultBuckets are the latency histogram's upper bounds, in seconds.
var DefaultBuckets = []float64{.005, .01, .025, .05, .075, .1, .125, .15, .2, .25, .3, .4, .5, .75, 1, 2.5, 5}

// Latency is a log-normal latency distribution.
type Latency struct {
	// Median is the median latency.
	Median time.Duration
	// Spread is the standard deviation of the latency's natural log; 0 makes
	// every request take exactly Median. 0.3 is a typical service.
	Spread float64
}

// Behavior is what one arm does.
type Behavior struct {
	// RPS is the generated traffic, in requests per second (0: none).
	RPS float64
	// ErrorRate is the probability that a request fails, in [0, 1].
	ErrorRate float64
	// Latency is the distribution every request's latency is drawn from.
	Latency Latency
	// Gauge is the gauge's value; NaN and ±Inf are allowed (they are served).
	Gauge float64
}

// validate names the first bad field.
func (b Behavior) validate() error {
	switch {
	case math.IsNaN(b.RPS) || b.RPS < 0 || b.RPS > MaxRPS:
		return fmt.Errorf("workload: Behavior.RPS %v must be in [0, %d]", b.RPS, MaxRPS)
	case math.IsNaN(b.ErrorRate) || b.ErrorRate < 0 || b.ErrorRate > 1:
		return fmt.Errorf("workload: Behavior.ErrorRate %v must be in [0, 1]", b.ErrorRate)
	case b.Latency.Median < 0:
		return fmt.Errorf("workload: Behavior.Latency.Median %s is negative", b.Latency.Median)
	case math.IsNaN(b.Latency.Spread) || b.Latency.Spread < 0 || b.Latency.Spread > MaxSpread:
		return fmt.Errorf("workload: Behavior.Latency.Spread %v must be in [0, %d]", b.Latency.Spread, MaxSpread)
	}
	return nil
}

// Options configures a Workload. The zero value is usable.
type Options struct {
	// Arms are the values of ArmLabel served; default {Baseline, Canary}.
	Arms []string
	// Tick is how often traffic is generated; default 100ms.
	Tick time.Duration
	// Seed seeds the random draws (errors, latencies); default 1.
	Seed uint64
	// Buckets are the histogram's upper bounds in seconds; default DefaultBuckets.
	Buckets []float64
}

// Snapshot is exactly what one arm has generated so far.
type Snapshot struct {
	Requests uint64
	Errors   uint64
	// Buckets maps each upper bound (seconds, +Inf included) to the
	// cumulative count of requests at most that slow, as Prometheus's le.
	Buckets    map[float64]uint64
	LatencySum float64
	Gauge      float64
	Behavior   Behavior
}

type arm struct {
	name     string
	behavior Behavior
	carry    float64 // fractional requests owed by the ticker
	requests uint64
	errors   uint64
	buckets  []uint64 // per bound, not cumulative; last is +Inf
	sum      float64
}

// Workload is a running synthetic service. Its methods are safe for
// concurrent use.
type Workload struct {
	mu      sync.Mutex
	arms    map[string]*arm
	order   []string
	bounds  []float64
	rng     *rand.Rand
	paused  bool
	last    time.Time
	reg     *prometheus.Registry
	reqs    *prometheus.CounterVec
	errs    *prometheus.CounterVec
	latency *prometheus.HistogramVec
	gauge   *prometheus.GaugeVec

	ln     net.Listener
	srv    *http.Server
	tick   time.Duration
	stop   chan struct{}
	done   sync.WaitGroup
	closed sync.Once
}

// New starts a Workload serving /metrics on a free 127.0.0.1 port, every
// arm idle (RPS 0, gauge 0). Call Close when done. Errors name the bad
// Options field, or say the port could not be opened.
func New(opts Options) (*Workload, error) {
	w, err := build(opts)
	if err != nil {
		return nil, err
	}
	return listen(w)
}

// build validates opts and makes an idle Workload with no listener and no
// traffic goroutine.
func build(opts Options) (*Workload, error) {
	arms := opts.Arms
	if len(arms) == 0 {
		arms = []string{Baseline, Canary}
	}
	for i, a := range arms {
		if a == "" {
			return nil, fmt.Errorf("workload: Options.Arms[%d] is empty", i)
		}
		if slices.Contains(arms[:i], a) {
			return nil, fmt.Errorf("workload: Options.Arms[%d] %q is a duplicate", i, a)
		}
	}
	if opts.Tick < 0 {
		return nil, fmt.Errorf("workload: Options.Tick %s is negative", opts.Tick)
	}
	bounds := opts.Buckets
	if len(bounds) == 0 {
		bounds = DefaultBuckets
	}
	for i, b := range bounds {
		if math.IsNaN(b) || math.IsInf(b, 0) || (i > 0 && b <= bounds[i-1]) {
			return nil, fmt.Errorf("workload: Options.Buckets[%d] %v: bounds must be finite and increasing", i, b)
		}
	}
	seed := opts.Seed
	if seed == 0 {
		seed = 1
	}
	w := &Workload{
		arms:   make(map[string]*arm, len(arms)),
		order:  slices.Clone(arms),
		bounds: slices.Clone(bounds),
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		reg:    prometheus.NewRegistry(),
		tick:   opts.Tick,
		stop:   make(chan struct{}),
	}
	if w.tick == 0 {
		w.tick = 100 * time.Millisecond
	}
	w.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: RequestsMetric, Help: "Requests served."}, []string{ArmLabel})
	w.errs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: ErrorsMetric, Help: "Requests that failed."}, []string{ArmLabel})
	w.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: LatencyMetric, Help: "Request latency.", Buckets: w.bounds}, []string{ArmLabel})
	w.gauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: GaugeMetric, Help: "A resource gauge such as CPU or memory use."}, []string{ArmLabel})
	w.reg.MustRegister(w.reqs, w.errs, w.latency, w.gauge)
	for _, name := range arms {
		w.arms[name] = &arm{name: name, buckets: make([]uint64, len(w.bounds)+1)}
		// Every series exists from the start, at zero.
		w.reqs.WithLabelValues(name)
		w.errs.WithLabelValues(name)
		w.latency.WithLabelValues(name)
		w.gauge.WithLabelValues(name).Set(0)
	}
	return w, nil
}

// listen serves /metrics on a free loopback port and starts the traffic.
func listen(w *Workload) (*Workload, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("workload: listening on 127.0.0.1: %w", err)
	}
	w.ln = ln
	mux := http.NewServeMux()
	mux.Handle("/metrics", w.Handler())
	w.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	w.done.Add(1)
	go func() {
		defer w.done.Done()
		_ = w.srv.Serve(ln) // returns http.ErrServerClosed on Close
	}()
	w.startTraffic()
	return w, nil
}

// startTraffic starts the ticker goroutine.
func (w *Workload) startTraffic() {
	w.last = time.Now()
	w.done.Add(1)
	go w.run()
}

// Start is New for tests: it fails tb on error and closes the Workload in
// tb.Cleanup.
func Start(tb testing.TB, opts Options) *Workload {
	tb.Helper()
	w, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = w.Close() })
	return w
}

// Addr is the host:port serving /metrics, the scrape target.
func (w *Workload) Addr() string { return w.ln.Addr().String() }

// URL is the full URL of the metrics endpoint.
func (w *Workload) URL() string { return "http://" + w.Addr() + "/metrics" }

// Arms lists the arms in Options order.
func (w *Workload) Arms() []string { return slices.Clone(w.order) }

// Handler serves the metrics in the Prometheus text format. A scrape sees
// all arms at one consistent instant.
func (w *Workload) Handler() http.Handler {
	return promhttp.HandlerFor(w.Gatherer(), promhttp.HandlerOpts{})
}

// Gatherer gathers the workload's own registry, consistently.
func (w *Workload) Gatherer() prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.reg.Gather()
	})
}

// Set replaces arm's behaviour. It errors on an unknown arm or a bad field.
func (w *Workload) Set(armName string, b Behavior) error {
	return w.Update(armName, func(cur *Behavior) { *cur = b })
}

// Update changes arm's behaviour in place, e.g.
// w.Update("canary", func(b *Behavior) { b.ErrorRate = 0.3 }).
// Nothing changes if the result is invalid; the error names the field.
func (w *Workload) Update(armName string, change func(*Behavior)) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	a, err := w.arm(armName)
	if err != nil {
		return err
	}
	b := a.behavior
	change(&b)
	if err := b.validate(); err != nil {
		return fmt.Errorf("arm %q: %w", armName, err)
	}
	a.behavior = b
	w.gauge.WithLabelValues(armName).Set(b.Gauge)
	return nil
}

// Behavior returns arm's current behaviour.
func (w *Workload) Behavior(armName string) (Behavior, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	a, err := w.arm(armName)
	if err != nil {
		return Behavior{}, err
	}
	return a.behavior, nil
}

// Generate simulates n requests on arm now, with its current error rate and
// latency, whatever its RPS or a Pause. n must be in [0, MaxGenerate].
func (w *Workload) Generate(armName string, n int) error {
	if n < 0 || n > MaxGenerate {
		return fmt.Errorf("workload: n %d must be in [0, %d]", n, MaxGenerate)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	a, err := w.arm(armName)
	if err != nil {
		return err
	}
	w.generate(a, n)
	return nil
}

// Pause stops the ticker's traffic (Generate still works); Resume restarts
// it without a burst for the paused time.
func (w *Workload) Pause() {
	w.mu.Lock()
	w.paused = true
	w.mu.Unlock()
}

// Resume undoes Pause.
func (w *Workload) Resume() {
	w.mu.Lock()
	w.paused = false
	w.last = time.Now()
	for _, a := range w.arms {
		a.carry = 0
	}
	w.mu.Unlock()
}

// Snapshot reports exactly what arm has generated so far.
func (w *Workload) Snapshot(armName string) (Snapshot, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	a, err := w.arm(armName)
	if err != nil {
		return Snapshot{}, err
	}
	s := Snapshot{
		Requests:   a.requests,
		Errors:     a.errors,
		Buckets:    make(map[float64]uint64, len(a.buckets)),
		LatencySum: a.sum,
		Gauge:      a.behavior.Gauge,
		Behavior:   a.behavior,
	}
	var cum uint64
	for i, c := range a.buckets {
		cum += c
		le := math.Inf(1)
		if i < len(w.bounds) {
			le = w.bounds[i]
		}
		s.Buckets[le] = cum
	}
	return s, nil
}

// Close stops the traffic and the HTTP server. It is idempotent.
func (w *Workload) Close() error {
	var err error
	w.closed.Do(func() {
		close(w.stop)
		if w.srv != nil {
			err = w.srv.Close()
		}
		w.done.Wait()
	})
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// ErrUnknownArm is wrapped by every method given an arm the Workload does not serve.
var ErrUnknownArm = errors.New("unknown arm")

func (w *Workload) arm(name string) (*arm, error) {
	a, ok := w.arms[name]
	if !ok {
		return nil, fmt.Errorf("workload: %w %q (arms: %q)", ErrUnknownArm, name, w.order)
	}
	return a, nil
}

// run generates traffic every tick until Close.
func (w *Workload) run() {
	defer w.done.Done()
	t := time.NewTicker(w.tick)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case now := <-t.C:
			w.step(now)
		}
	}
}

// step generates the traffic owed since the last tick; a late tick catches
// up at most four ticks' worth.
func (w *Workload) step(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	elapsed := min(now.Sub(w.last), 4*w.tick)
	w.last = now
	if w.paused || elapsed <= 0 {
		return
	}
	for _, name := range w.order {
		a := w.arms[name]
		a.carry += a.behavior.RPS * elapsed.Seconds()
		n := math.Floor(a.carry)
		a.carry -= n
		w.generate(a, int(n))
	}
}

// generate records n requests; w.mu is held.
func (w *Workload) generate(a *arm, n int) {
	if n == 0 {
		return
	}
	b := a.behavior
	var failed int
	hist := w.latency.WithLabelValues(a.name)
	median := b.Latency.Median.Seconds()
	for range n {
		if b.ErrorRate > 0 && w.rng.Float64() < b.ErrorRate {
			failed++
		}
		lat := median
		if b.Latency.Spread > 0 {
			lat = median * math.Exp(b.Latency.Spread*w.rng.NormFloat64())
		}
		hist.Observe(lat)
		a.sum += lat
		i, _ := slices.BinarySearch(w.bounds, lat) // first bound >= lat, as le
		a.buckets[i]++
	}
	a.requests += uint64(n)
	a.errors += uint64(failed)
	w.reqs.WithLabelValues(a.name).Add(float64(n))
	w.errs.WithLabelValues(a.name).Add(float64(failed))
}
