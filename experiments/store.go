package experiments

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Errors a [Store] and the [Service] return, wrapped with context; test
// with errors.Is. A store outage is a wrapped [ErrUnavailable].
var (
	// ErrNotFound: no experiment of that key in the environment.
	ErrNotFound = errors.New("experiments: not found")
	// ErrExists: an experiment of that key exists in the environment.
	ErrExists = errors.New("experiments: already exists")
	// ErrConflict: the stored version is not the one the write expected
	// (someone else wrote first); re-read and retry.
	ErrConflict = errors.New("experiments: version conflict")
	// ErrFlagInUse: another experiment runs on the flag (a *FlagInUseError
	// names it).
	ErrFlagInUse = errors.New("experiments: the flag is in use by another experiment")
)

// FlagInUseError is a start refused because another experiment runs on the flag.
type FlagInUseError struct {
	Flag, Experiment string
}

// Error names the flag and the experiment running on it.
func (e *FlagInUseError) Error() string {
	return fmt.Sprintf("flag %q is already in experiment %q; stop that experiment first", e.Flag, e.Experiment)
}

// Unwrap makes errors.Is(err, ErrFlagInUse) true.
func (e *FlagInUseError) Unwrap() error { return ErrFlagInUse }

// Stored is an experiment as a [Store] keeps it: the experiment, the version
// for compare-and-set writes and when it was created and last written.
type Stored struct {
	Experiment
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// ETag is the stored version as an HTTP entity tag: `"<version>"`.
func (s Stored) ETag() string { return fmt.Sprintf("%q", fmt.Sprint(s.Version)) }

// Write are the preconditions and time of [Store.UpdateExperiment].
type Write struct {
	// IfVersion, when not 0, is the version the experiment must be at.
	IfVersion int64
	// At is the time recorded as UpdatedAt.
	At time.Time
}

// Store keeps experiments per environment together with the statistics a
// consumer folds from the environment's events. Implementations are safe for
// concurrent use by many replicas and every write is atomic. The conformance
// suite in experiments/storetest defines the behaviour precisely.
//
// Statistics belong to one run of an experiment, identified by its
// Restarts count: a write that raises Restarts (a restart) starts the
// statistics over, and deleting an experiment deletes them. Every method
// may also return an error wrapping [ErrUnavailable] when the backing service
// cannot be reached, or a context error.
type Store interface {
	// CreateExperiment stores e (which must have passed Validate) under
	// e.Key in env at version 1, created and updated at at. Errors:
	// ErrExists, a *ValidationError naming "key" for an empty key.
	CreateExperiment(ctx context.Context, env string, e *Experiment, at time.Time) (Stored, error)
	// Experiment returns env's experiment key. Errors: ErrNotFound.
	Experiment(ctx context.Context, env, key string) (Stored, error)
	// Experiments lists env's experiments sorted by key (none: an empty
	// list, also for an environment that has none or does not exist).
	Experiments(ctx context.Context, env string) ([]Stored, error)
	// UpdateExperiment replaces env's experiment e.Key with e when its
	// version is w.IfVersion (any version when 0) and returns it at the next
	// version. When e.Restarts differs from the stored one, the statistics
	// of the earlier run are discarded in the same write. Errors:
	// ErrNotFound, ErrConflict.
	UpdateExperiment(ctx context.Context, env string, e *Experiment, w Write) (Stored, error)
	// DeleteExperiment removes env's experiment key and its statistics
	// when its version is ifVersion (any when 0). Errors: ErrNotFound,
	// ErrConflict.
	DeleteExperiment(ctx context.Context, env, key string, ifVersion int64) error
	// Observations returns the statistics folded so far for e's current run
	// (e.Key, e.Restarts) in env: users per arm, crossovers and every metric
	// of e by arm. It never scans raw events. An experiment with no folded
	// data yields zero users, not an error.
	Observations(ctx context.Context, env string, e *Experiment) (Observations, error)
}
