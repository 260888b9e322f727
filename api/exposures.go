package api

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/internal/promreg"
)

// Server-side exposures. While an experiment runs, its flag's metadata
// carries "experiment": "<key>" (docs/experiments.md). When an OFREP
// evaluation, single or bulk, resolves such a flag to a variant for a
// context with a targeting key, the server records a $exposure event —
// without slowing the evaluation: the handler checks a per-version index
// of the environment's experiment flags, de-duplicates in memory and hands
// the exposure to a bounded queue without blocking (dropping and counting
// when it is full); a background batcher appends the queue to the event
// log. The experiments consumer decides whether the user is in the
// experiment (Experiment.Assign) and counts crossovers.

// Exposure recording defaults.
const (
	DefaultExposureWindow        = 5 * time.Minute
	DefaultExposureMaxRemembered = 200_000
	DefaultExposureQueue         = 16_384
	DefaultExposureBatch         = 500
	DefaultExposureFlush         = time.Second
	// exposureShards spreads the de-duplication memory over independent
	// locks (a power of two).
	exposureShards = 64
	// exposureRetries is how often a batch is retried while the event log
	// is unavailable before it is given up.
	exposureRetries = 3
	// exposureShutdown bounds the final flush.
	exposureShutdown = 5 * time.Second
)

// ExposureConfig configures an [ExposureRecorder]. Zero fields take the
// defaults above.
type ExposureConfig struct {
	// Registerer receives flagpole_exposures_total; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger receives failures to store exposures; nil discards them.
	Logger *slog.Logger
	// Window is how long an exposure of one (environment, flag, variant,
	// targeting key, experiment run) suppresses the same exposure.
	Window time.Duration
	// MaxRemembered bounds the exposures remembered for de-duplication;
	// beyond it the oldest are forgotten (de-duplication is best effort,
	// the consumer de-duplicates exactly).
	MaxRemembered int
	// Queue is how many exposures may wait for the batcher; beyond it new
	// ones are dropped and counted.
	Queue int
	// Batch is the most exposures appended to the event log at once (at
	// most 1000).
	Batch int
	// FlushInterval is how long an exposure may wait for a fuller batch.
	FlushInterval time.Duration
}

// ExposureRecorder is the event log of a [Server] (Config.Events) that
// also records server-side exposures for OFREP evaluations of flags whose
// metadata has "experiment". Append passes tracking events straight to the
// wrapped log; exposures are queued by the evaluation handlers and stored
// by [ExposureRecorder.Run]. It is safe for concurrent use.
type ExposureRecorder struct {
	log    EventAppender
	logger *slog.Logger
	cfg    ExposureConfig
	now    func() time.Time

	queue  chan exposureItem
	kick   chan struct{} // wakes Run when a batch is full
	closed atomic.Bool

	seed     maphash.Seed
	shards   [exposureShards]dedupShard
	perShard int

	idxMu   sync.Mutex
	indexes atomic.Pointer[map[string]*exposureIndex]

	recorded, deduplicated, dropped, failed prometheus.Counter
}

type exposureItem struct {
	env, flag, variant, targetingKey string
	at                               time.Time
}

// dedupShard remembers recent exposures by a 64-bit hash of (environment,
// flag, variant, targeting key) and the Unix nanoseconds when they were
// recorded: a map without pointers, which the garbage collector does not
// scan however many users it holds. A hash collision suppresses one
// exposure at worst; the consumer does not depend on the recorder's
// de-duplication.
type dedupShard struct {
	mu   sync.Mutex
	seen map[uint64]int64
	_    [48]byte // keep shards on separate cache lines
}

// exposureIndex lists the experiment flags of one version of an
// environment.
type exposureIndex struct {
	st  *envState
	any bool
	// byKey and byPos hold, for each experiment flag, a hash of its run:
	// its "experiment" marker and its targeting (which carries the
	// experiment's salt), so that a restart, or another experiment on the
	// flag, exposes users again. 0 = not an experiment flag.
	byKey map[string]uint64
	byPos []uint64 // by position in st.ordered
}

var _ EventAppender = (*ExposureRecorder)(nil)

// NewExposureRecorder returns a recorder that stores exposures, and passes
// tracking events, to log, which must not keep the slice it is given after
// Append returns (the recorder reuses it). Call [ExposureRecorder.Run] to store the
// exposures. Errors: a nil log, a negative setting, a Batch over 1000 or
// metrics that cannot be registered.
func NewExposureRecorder(log EventAppender, cfg ExposureConfig) (*ExposureRecorder, error) {
	if log == nil {
		return nil, errors.New("api: NewExposureRecorder: the event log is required")
	}
	if cfg.Window < 0 || cfg.MaxRemembered < 0 || cfg.Queue < 0 || cfg.Batch < 0 || cfg.FlushInterval < 0 {
		return nil, errors.New("api: NewExposureRecorder: settings must not be negative")
	}
	if cfg.Batch > maxEventBatch {
		return nil, fmt.Errorf("api: NewExposureRecorder: Batch %d is over %d", cfg.Batch, maxEventBatch)
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.MaxRemembered, DefaultExposureMaxRemembered)
	def(&cfg.Queue, DefaultExposureQueue)
	def(&cfg.Batch, DefaultExposureBatch)
	if cfg.Window == 0 {
		cfg.Window = DefaultExposureWindow
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = DefaultExposureFlush
	}
	r := &ExposureRecorder{
		log: log, logger: cfg.Logger, cfg: cfg, now: time.Now,
		queue:    make(chan exposureItem, cfg.Queue),
		kick:     make(chan struct{}, 1),
		seed:     maphash.MakeSeed(),
		perShard: max(cfg.MaxRemembered/exposureShards, 1),
	}
	if r.logger == nil {
		r.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for i := range r.shards {
		r.shards[i].seen = map[uint64]int64{}
	}
	r.indexes.Store(&map[string]*exposureIndex{})
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flagpole_exposures_total",
		Help: "Server-side exposures of OFREP evaluations of experiment flags, by result (recorded: stored in the event log; deduplicated: seen within the window; dropped: the queue was full or the server was stopping; failed: the event log refused them or stayed unavailable).",
	}, []string{"result"})
	if cfg.Registerer != nil {
		var err error
		if vec, err = promreg.Register(cfg.Registerer, vec); err != nil {
			return nil, fmt.Errorf("api: NewExposureRecorder: %w", err)
		}
	}
	r.recorded, r.deduplicated = vec.WithLabelValues("recorded"), vec.WithLabelValues("deduplicated")
	r.dropped, r.failed = vec.WithLabelValues("dropped"), vec.WithLabelValues("failed")
	return r, nil
}

// Append stores tracking events in the wrapped log; its errors are the
// log's (see experiments.EventLog).
func (r *ExposureRecorder) Append(ctx context.Context, env string, events []experiments.Event) error {
	return r.log.Append(ctx, env, events)
}

// exposureScope is what one OFREP request may expose: the environment's
// experiment flags and the subject. The zero value records nothing.
type exposureScope struct {
	r            *ExposureRecorder
	idx          *exposureIndex
	targetingKey string
}

// exposureScope returns the scope of an evaluation of st with evalCtx.
// It costs a type check when the server records no exposures and a map
// read when the environment has no experiment flag.
func (s *Server) exposureScope(st *envState, evalCtx map[string]any) exposureScope {
	r, ok := s.events.(*ExposureRecorder)
	if !ok || r == nil || st == nil {
		return exposureScope{}
	}
	idx := r.index(st)
	if !idx.any {
		return exposureScope{}
	}
	tk, _ := evalCtx["targetingKey"].(string)
	if tk == "" {
		return exposureScope{}
	}
	return exposureScope{r: r, idx: idx, targetingKey: tk}
}

// flag records the exposure of single-flag evaluation res, if fe serves
// an experiment.
func (x exposureScope) flag(fe *flagEntry, res flags.Resolution) {
	if x.idx == nil {
		return
	}
	if run := x.idx.byKey[fe.key]; run != 0 {
		x.record(fe, res, run)
	}
}

// bulk records the exposure of the i-th flag of a bulk evaluation.
func (x exposureScope) bulk(i int, fe *flagEntry, res flags.Resolution) {
	if x.idx == nil || i >= len(x.idx.byPos) || x.idx.byPos[i] == 0 {
		return
	}
	x.record(fe, res, x.idx.byPos[i])
}

func (x exposureScope) record(fe *flagEntry, res flags.Resolution, run uint64) {
	if res.Variant == "" || res.Reason == flags.ReasonError || res.ErrorCode != "" {
		return
	}
	x.r.expose(x.idx.st.name, fe.key, res.Variant, x.targetingKey, run)
}

// index returns the experiment flags of st, built once per version.
func (r *ExposureRecorder) index(st *envState) *exposureIndex {
	if idx := (*r.indexes.Load())[st.name]; idx != nil && idx.st == st {
		return idx
	}
	idx := r.buildExposureIndex(st)
	select {
	case <-st.superseded: // an old version still being served: do not cache
		return idx
	default:
	}
	r.idxMu.Lock()
	defer r.idxMu.Unlock()
	old := *r.indexes.Load()
	next := make(map[string]*exposureIndex, len(old)+1)
	for env, e := range old {
		select {
		case <-e.st.superseded: // replaced or removed: forget it
		default:
			next[env] = e
		}
	}
	next[st.name] = idx
	r.indexes.Store(&next)
	return idx
}

func (r *ExposureRecorder) buildExposureIndex(st *envState) *exposureIndex {
	idx := &exposureIndex{st: st}
	setMarker := st.set.Metadata()[experiments.FlagMetadataKey]
	setExp := isExperimentValue(setMarker)
	var doc *flags.Document // parsed once, for the targeting of experiment flags
	for i, fe := range st.ordered {
		info, ok := st.set.Info(fe.key)
		marker, exp := setMarker, setExp
		if ok {
			if v, has := info.Metadata[experiments.FlagMetadataKey]; has {
				marker, exp = v, isExperimentValue(v)
			}
		}
		if !exp {
			continue
		}
		if !idx.any {
			idx.any, idx.byKey, idx.byPos = true, map[string]uint64{}, make([]uint64, len(st.ordered))
			doc, _ = flags.Parse(st.doc)
		}
		var targeting []byte
		if doc != nil && doc.Flags[fe.key] != nil {
			targeting = doc.Flags[fe.key].Targeting
		}
		run := r.runHash(marker.(string), targeting)
		idx.byKey[fe.key], idx.byPos[i] = run, run
	}
	return idx
}

// runHash identifies an experiment run on a flag: its marker and its
// targeting (never 0).
func (r *ExposureRecorder) runHash(marker string, targeting []byte) uint64 {
	var h maphash.Hash
	h.SetSeed(r.seed)
	_, _ = h.WriteString(marker)
	_ = h.WriteByte(0)
	_, _ = h.Write(targeting)
	return max(h.Sum64(), 1)
}

// isExperimentValue: the convention's value is an experiment key, a
// non-empty string.
func isExperimentValue(v any) bool {
	s, ok := v.(string)
	return ok && s != ""
}

// expose de-duplicates one exposure and queues it without blocking.
func (r *ExposureRecorder) expose(env, flag, variant, targetingKey string, run uint64) {
	if r.closed.Load() {
		r.dropped.Inc()
		return
	}
	now := r.now()
	at, window := now.UnixNano(), r.cfg.Window.Nanoseconds()
	k := r.dedupHash(env, flag, variant, targetingKey, run)
	sh := &r.shards[k&(exposureShards-1)]
	sh.mu.Lock()
	if last, ok := sh.seen[k]; ok && at-last < window {
		sh.mu.Unlock()
		r.deduplicated.Inc()
		return
	}
	if len(sh.seen) >= r.perShard {
		sh.pruneLocked(at, window, r.perShard)
	}
	sh.seen[k] = at
	sh.mu.Unlock()
	select {
	case r.queue <- exposureItem{env: env, flag: flag, variant: variant, targetingKey: targetingKey, at: now}:
		if len(r.queue) >= r.cfg.Batch {
			select {
			case r.kick <- struct{}{}:
			default:
			}
		}
	default:
		r.dropped.Inc()
		sh.mu.Lock() // not recorded: let a later evaluation try again
		if last, ok := sh.seen[k]; ok && last == at {
			delete(sh.seen, k)
		}
		sh.mu.Unlock()
	}
}

// dedupHash identifies an exposure for de-duplication: the user's variant
// of the flag in one experiment run.
func (r *ExposureRecorder) dedupHash(env, flag, variant, targetingKey string, run uint64) uint64 {
	var h maphash.Hash
	h.SetSeed(r.seed)
	for _, s := range [4]string{env, flag, variant, targetingKey} {
		_, _ = h.WriteString(s)
		_ = h.WriteByte(0)
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], run)
	_, _ = h.Write(b[:])
	return h.Sum64()
}

// pruneLocked forgets exposures older than the window; if that frees too
// little, it forgets them all.
func (sh *dedupShard) pruneLocked(now, window int64, limit int) {
	for k, at := range sh.seen {
		if now-at >= window {
			delete(sh.seen, k)
		}
	}
	if len(sh.seen) >= limit*3/4 {
		clear(sh.seen)
	}
}

// Run stores queued exposures in the event log, a batch per environment
// whenever Batch exposures are waiting or FlushInterval has passed, until
// ctx ends; then it stores what is queued (within 5 s), stops accepting
// exposures and returns. A batch the log cannot take is retried a few
// times, then counted as failed and logged. Run must be called once.
//
// Run sleeps between batches rather than waiting on every exposure: the
// evaluation handlers wake it only when a batch is full, which keeps the
// cost of waking a goroutine off the evaluation path.
func (r *ExposureRecorder) Run(ctx context.Context) {
	// Stores are not cut short by ctx (their retries are bounded), so that
	// a batch taken from the queue is not lost to the shutdown.
	bg := context.WithoutCancel(ctx)
	tick := time.NewTicker(r.cfg.FlushInterval)
	defer tick.Stop()
	pending := map[string][]experiments.Event{}
	n := 0
	drain := func(store context.Context) {
		for {
			select {
			case it := <-r.queue:
				if pending[it.env] == nil { // sized once, then truncated by flush
					pending[it.env] = make([]experiments.Event, 0, r.cfg.Batch)
				}
				pending[it.env] = append(pending[it.env], experiments.Event{
					Name: experiments.ExposureEvent, TargetingKey: it.targetingKey,
					FlagKey: it.flag, Variant: it.variant, Time: it.at.UTC(),
				})
				if n++; n >= r.cfg.Batch {
					r.flush(store, pending)
					n = 0
				}
			default:
				return
			}
		}
	}
	for {
		select {
		case <-r.kick:
			drain(bg) // full batches now, the rest at the next tick
		case <-tick.C:
			drain(bg)
			r.flush(bg, pending)
			n = 0
		case <-ctx.Done():
			r.closed.Store(true)
			fctx, cancel := context.WithTimeout(bg, exposureShutdown)
			drain(fctx)
			r.flush(fctx, pending)
			cancel()
			return
		}
	}
}

// flush appends every environment's pending exposures and truncates the
// slices for reuse, so that batches do not allocate. The log must not keep
// a slice after Append returns (redis.EventLog does not), as with io.Writer.
func (r *ExposureRecorder) flush(ctx context.Context, pending map[string][]experiments.Event) {
	for env, evs := range pending {
		for rest := evs; len(rest) > 0; {
			k := min(len(rest), r.cfg.Batch)
			r.store(ctx, env, rest[:k])
			rest = rest[k:]
		}
		clear(evs) // drop the strings the events hold
		pending[env] = evs[:0]
	}
}

// store appends one batch, retrying while the log is unavailable.
func (r *ExposureRecorder) store(ctx context.Context, env string, batch []experiments.Event) {
	valid := batch
	for i := range batch {
		if len(batch[i].Validate()) > 0 { // rare: copy the valid ones
			valid = make([]experiments.Event, 0, len(batch))
			for j := range batch {
				if len(batch[j].Validate()) == 0 {
					valid = append(valid, batch[j])
				}
			}
			break
		}
	}
	if bad := len(batch) - len(valid); bad > 0 {
		r.failed.Add(float64(bad))
		r.logger.Warn("invalid exposures not stored", "env", env, "count", bad)
	}
	if len(valid) == 0 {
		return
	}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := r.log.Append(ctx, env, valid)
		if err == nil {
			r.recorded.Add(float64(len(valid)))
			return
		}
		if !errors.Is(err, experiments.ErrUnavailable) || attempt > exposureRetries || ctx.Err() != nil {
			r.failed.Add(float64(len(valid)))
			r.logger.Warn("exposures not stored", "env", env, "count", len(valid), "error", err)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}
