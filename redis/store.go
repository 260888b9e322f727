package redis

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/logging"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/flags"
)

var (
	_ flags.Store = (*Store)(nil)
	_ auth.Store  = (*Store)(nil)
)

// Store keeps Flagpole's environments, flag sets, audit log and API keys in
// Redis. It is safe for concurrent use. Build one with Open or OpenEmbedded
// and release it with Close.
type Store struct {
	rdb        goredis.UniversalClient
	keys       keyspace
	auditLimit int
	log        *slog.Logger
	met        *metrics

	emb *embedded // nil unless OpenEmbedded

	up        atomic.Bool // last probe result
	stopProbe context.CancelFunc
	probeDone chan struct{}
	closeOnce sync.Once
	closed    atomic.Bool
	closeErr  error
}

// Open connects to the Redis named by o.URL. It fails only for bad options
// (a *flags.InputError naming the field, or a metrics registration
// conflict); a server that cannot be reached is not an error: every
// operation reports flags.ErrUnavailable, and Ping fails, until it is back.
func Open(ctx context.Context, o Options) (*Store, error) {
	kind, uo, err := parseURL(o.URL)
	if err != nil {
		return nil, err
	}
	var rdb goredis.UniversalClient
	tune(uo)
	switch kind {
	case kindSentinel:
		rdb = goredis.NewFailoverClient(uo.Failover())
	case kindCluster:
		rdb = goredis.NewClusterClient(uo.Cluster())
	default:
		rdb = goredis.NewClient(uo.Simple())
	}
	s, err := newStore(ctx, rdb, o)
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	return s, nil
}

// tune sets the timeouts every client uses: short enough that an outage is
// reported within a few seconds, long enough for a loaded server.
func tune(uo *goredis.UniversalOptions) {
	uo.DialTimeout = 2 * time.Second
	uo.ReadTimeout = 3 * time.Second
	uo.WriteTimeout = 3 * time.Second
	uo.PoolTimeout = 4 * time.Second
	uo.ContextTimeoutEnabled = true
	// Fail fast when the server is down (a write answers 503 within a few
	// hundred milliseconds) but ride over a single dropped connection. Retried
	// writes are safe: every write script is idempotent.
	uo.MaxRetries = 1
	uo.MaxRetryBackoff = 100 * time.Millisecond
	uo.DialerRetries = 1
	uo.DialerRetryTimeout = 50 * time.Millisecond
	// go-redis logs through a process-wide logger of its own; the store
	// reports connection state through its injected logger instead.
	quietOnce.Do(func() { goredis.SetLogger(&logging.VoidLogger{}) })
}

var quietOnce sync.Once

func newStore(ctx context.Context, rdb goredis.UniversalClient, o Options) (*Store, error) {
	prefix, err := checkPrefix(o.Prefix)
	if err != nil {
		return nil, err
	}
	if o.AuditLimit < 0 {
		return nil, &flags.InputError{Field: "auditLimit", Problem: "must not be negative"}
	}
	limit := o.AuditLimit
	if limit == 0 {
		limit = DefaultAuditLimit
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	met, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Store{rdb: rdb, keys: keyspace{prefix: prefix}, auditLimit: limit, log: logger, met: met}
	every := o.pingEvery
	if every <= 0 {
		every = 2 * time.Second
	}
	probeCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopProbe, s.probeDone = cancel, make(chan struct{})
	s.up.Store(true) // assume up until the first probe says otherwise, so the first failure is logged
	go s.probeLoop(probeCtx, every)
	return s, nil
}

// probeLoop pings the server every interval and keeps the connection-state
// gauge and log current.
func (s *Store) probeLoop(ctx context.Context, every time.Duration) {
	defer close(s.probeDone)
	s.probe(ctx) // at once, without holding up Open
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.probe(ctx)
		}
	}
}

func (s *Store) probe(ctx context.Context) {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err := s.rdb.Ping(pctx).Err()
	if ctx.Err() != nil {
		return
	}
	s.setUp(err == nil, err)
}

func (s *Store) setUp(up bool, err error) {
	s.met.setUp(up)
	if was := s.up.Swap(up); was != up {
		if up {
			s.log.Info("redis connection restored")
		} else {
			s.log.Warn("redis connection lost", "error", translate("ping", err))
		}
	}
}

// Close stops the probe, closes the connections and, for an embedded store,
// writes the data file a last time and stops the in-process server. Calling
// it again returns the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.stopProbe()
		<-s.probeDone
		err := s.rdb.Close()
		if s.emb != nil {
			err = errors.Join(err, s.emb.close())
		}
		if err != nil {
			s.closeErr = fmt.Errorf("closing the redis store: %v", err)
		}
	})
	return s.closeErr
}

// Ping checks that Redis answers. It returns a wrapped flags.ErrUnavailable
// when it does not.
func (s *Store) Ping(ctx context.Context) error {
	done := s.met.start("ping")
	err := s.rdb.Ping(ctx).Err()
	if ctx.Err() == nil {
		s.setUp(err == nil, err)
	}
	err = translate("ping", err)
	done(err)
	return err
}

// translate maps a go-redis error onto the store's error contract, once:
// connection trouble becomes a wrapped flags.ErrUnavailable, a caller's
// cancelled context stays a context error, and anything else becomes a plain
// error carrying only the message. go-redis types never escape. redis.Nil
// must be handled by the caller before this.
func translate(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("redis %s: %w", op, context.Canceled)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("redis %s: %w: %w", op, context.DeadlineExceeded, flags.ErrUnavailable)
	}
	var rerr goredis.Error
	if errors.As(err, &rerr) && !errors.Is(err, goredis.Nil) {
		switch {
		case goredis.IsLoadingError(err), goredis.IsReadOnlyError(err), goredis.IsClusterDownError(err),
			goredis.IsTryAgainError(err), goredis.IsMasterDownError(err), goredis.IsMaxClientsError(err),
			goredis.IsNoReplicasError(err), goredis.IsAuthError(err), goredis.IsPermissionError(err),
			goredis.IsOOMError(err), goredis.HasErrorPrefix(err, "BUSY"):
			return fmt.Errorf("redis %s: %v: %w", op, err.Error(), flags.ErrUnavailable)
		}
		return fmt.Errorf("redis %s: %s", op, err.Error())
	}
	// Dial and I/O failures, timeouts, a closed client or pool: unreachable.
	return fmt.Errorf("redis %s: %s: %w", op, err.Error(), flags.ErrUnavailable)
}

// errClosed is returned by operations on a closed store.
var errClosed = fmt.Errorf("redis store is closed: %w", flags.ErrUnavailable)
