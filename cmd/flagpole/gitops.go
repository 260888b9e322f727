package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/flags"
)

// gitopsActor is the audit log's actor for changes made from --flags.
const gitopsActor = "system:gitops"

// importer is the part of flags.Service the seeder writes through.
type importer interface {
	CreateEnvironment(ctx context.Context, name string, doc *flags.Document, o flags.WriteOptions) (flags.Snapshot, error)
	Import(ctx context.Context, env string, doc *flags.Document, o flags.WriteOptions) (flags.Snapshot, error)
}

// syncResult is what one look at the flag file did.
type syncResult int

const (
	syncUnchanged syncResult = iota // the file is as last handled
	syncApplied                     // the file's flag set is now the environment's
	syncRejected                    // the file is unreadable or invalid; the last good flags stay
	syncRetry                       // the store failed; try again later
)

// fileStamp is what a cheap stat says about the file.
type fileStamp struct {
	mtime time.Time
	size  int64
}

// seeder loads a flag file into an environment ("GitOps seeding") and, when
// watching, again whenever the file changes. A file that cannot be read or
// parsed, or that the service refuses, is not applied: the environment
// keeps its last good flag set and every problem is logged once per version
// of the file.
type seeder struct {
	path    string
	env     string
	svc     importer
	log     *slog.Logger
	metrics *gitopsMetrics // may be nil

	mu      sync.Mutex
	stamp   fileStamp
	hash    [sha256.Size]byte
	handled bool   // hash and stamp describe content that was applied or rejected
	lastErr string // the last read error logged, to log each only once
}

func newSeeder(path, env string, svc importer, log *slog.Logger, m *gitopsMetrics) *seeder {
	return &seeder{path: path, env: env, svc: svc, log: log.With("file", path, "env", env), metrics: m}
}

// watch checks the file every interval until ctx ends.
func (s *seeder) watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sync(ctx)
		}
	}
}

// sync looks at the file and applies it if it changed since it was last
// handled. The error, when not nil, is the reason for syncRejected or
// syncRetry (it has been logged already).
func (s *seeder) sync(ctx context.Context) (syncResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	st, err := os.Stat(s.path)
	if err == nil && st.IsDir() {
		err = errors.New("is a directory")
	}
	if err != nil {
		return s.unreadable(err)
	}
	stamp := fileStamp{mtime: st.ModTime(), size: st.Size()}
	if s.handled && stamp == s.stamp {
		return syncUnchanged, nil
	}
	data, err := os.ReadFile(s.path)
	if err != nil {
		return s.unreadable(err)
	}
	s.lastErr = ""
	sum := sha256.Sum256(data)
	if s.handled && sum == s.hash {
		s.stamp = stamp
		return syncUnchanged, nil
	}
	short := hex.EncodeToString(sum[:])[:12]

	doc, err := flags.Parse(data)
	if err == nil {
		_, err = flags.Compile(doc) // every problem at once, before touching the store
	}
	if err != nil {
		s.reject(stamp, sum, short, err)
		return syncRejected, err
	}
	snap, err := s.apply(ctx, doc, short)
	switch {
	case err == nil:
		s.stamp, s.hash, s.handled = stamp, sum, true
		s.log.Info("flag file applied", "sha256", short, "version", snap.Version)
		s.metrics.observe("applied")
		return syncApplied, nil
	case refused(err):
		s.reject(stamp, sum, short, err)
		return syncRejected, err
	default:
		s.handled = false
		s.log.Warn("cannot apply the flag file now; will retry", "sha256", short, "err", err)
		s.metrics.observe("failed")
		return syncRetry, err
	}
}

// apply imports doc into the environment, creating it when it is missing.
func (s *seeder) apply(ctx context.Context, doc *flags.Document, sum string) (flags.Snapshot, error) {
	o := flags.WriteOptions{Actor: gitopsActor, Reason: fmt.Sprintf("flag file %s (sha256 %s)", s.path, sum)}
	snap, err := s.svc.Import(ctx, s.env, doc, o)
	if !errors.Is(err, flags.ErrNotFound) {
		return snap, err
	}
	snap, err = s.svc.CreateEnvironment(ctx, s.env, doc, o)
	if errors.Is(err, flags.ErrExists) { // created meanwhile by another replica
		return s.svc.Import(ctx, s.env, doc, o)
	}
	return snap, err
}

// refused reports whether err is the content's fault (retrying the same
// file cannot help) rather than the store's.
func refused(err error) bool {
	var ve *flags.ValidationError
	var ie *flags.InputError
	return errors.As(err, &ve) || errors.As(err, &ie)
}

// reject logs every problem of a refused file and remembers it so that the
// same content is not reported again.
func (s *seeder) reject(stamp fileStamp, sum [sha256.Size]byte, short string, err error) {
	s.stamp, s.hash, s.handled = stamp, sum, true
	var ve *flags.ValidationError
	if errors.As(err, &ve) {
		for _, p := range ve.Problems {
			s.log.Error("flag file problem", "sha256", short, "field", p.Path, "problem", p.Message)
		}
		s.log.Error("flag file refused; keeping the last good flags", "sha256", short, "problems", len(ve.Problems))
	} else {
		s.log.Error("flag file refused; keeping the last good flags", "sha256", short, "err", err)
	}
	s.metrics.observe("invalid")
}

// unreadable handles a file that cannot be read: logged once per distinct
// error, and looked at again next time.
func (s *seeder) unreadable(err error) (syncResult, error) {
	s.handled = false
	if msg := err.Error(); msg != s.lastErr {
		s.lastErr = msg
		s.log.Error("cannot read the flag file; keeping the last good flags", "err", err)
		s.metrics.observe("invalid")
	}
	return syncRejected, err
}

// gitopsMetrics count flag-file reloads.
type gitopsMetrics struct {
	reloads     *prometheus.CounterVec
	lastApplied prometheus.Gauge
}

// newGitopsMetrics registers the flag-file metrics on reg. Errors: a
// registration conflict.
func newGitopsMetrics(reg prometheus.Registerer) (*gitopsMetrics, error) {
	m := &gitopsMetrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flagpole_gitops_reloads_total",
			Help: "Flag-file (--flags) loads by result: applied, invalid (refused or unreadable), failed (store error, retried).",
		}, []string{"result"}),
		lastApplied: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flagpole_gitops_last_applied_timestamp_seconds",
			Help: "When the flag file (--flags) was last applied, in Unix seconds.",
		}),
	}
	for _, c := range []prometheus.Collector{m.reloads, m.lastApplied} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering flag-file metrics: %w", err)
		}
	}
	for _, r := range []string{"applied", "invalid", "failed"} {
		m.reloads.WithLabelValues(r)
	}
	return m, nil
}

func (m *gitopsMetrics) observe(result string) {
	if m == nil {
		return
	}
	m.reloads.WithLabelValues(result).Inc()
	if result == "applied" {
		m.lastApplied.SetToCurrentTime()
	}
}
