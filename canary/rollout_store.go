package canary

import (
	"context"
	"slices"
	"time"
)

// RolloutStore keeps rollouts and the leases that make exactly one replica
// drive each. Implementations are safe for concurrent use by many
// replicas; every write is atomic. The conformance suite in
// canary/rollouttest defines the behaviour precisely.
//
// Every method may also return an error wrapping ErrUnavailable when the
// backing service cannot be reached, or a context error.
type RolloutStore interface {
	// CreateRollout stores a new rollout at version 1. Errors: ErrExists
	// (the ID is taken), ErrRolloutActive (an active rollout of the same
	// env and flag exists; its ID is in the message), a *ValidationError for
	// a rollout without a valid ID, env or flag.
	CreateRollout(ctx context.Context, r *Rollout) (StoredRollout, error)
	// Rollout returns a rollout. Errors: ErrNotFound.
	Rollout(ctx context.Context, id string) (StoredRollout, error)
	// ActiveRollout returns the active (scheduled, running or paused)
	// rollout of flag in env. Errors: ErrNotFound when there is none.
	ActiveRollout(ctx context.Context, env, flag string) (StoredRollout, error)
	// Rollouts lists rollouts newest first (by CreatedAt, then ID),
	// filtered by q. Errors: a *ValidationError for a bad limit.
	Rollouts(ctx context.Context, q RolloutQuery) ([]StoredRollout, error)
	// UpdateRollout replaces a rollout when its stored version is
	// u.IfVersion and returns it at its new version. A write with a Token
	// is fenced: it fails unless that token is the rollout's current,
	// unreleased lease. A rollout that leaves the active states frees its
	// env and flag for a new rollout in the same write. Errors:
	// ErrNotFound, ErrConflict, ErrLeaseLost, a *ValidationError for an
	// update without a rollout, or one that changes its env or flag.
	UpdateRollout(ctx context.Context, u RolloutUpdate) (StoredRollout, error)
	// DueRollouts returns the IDs of at most limit rollouts whose WakeAt is
	// set and at or before now, the earliest first.
	DueRollouts(ctx context.Context, now time.Time, limit int) ([]string, error)

	// AcquireRolloutLease gives owner the rollout's lease until now+ttl,
	// as Store.AcquireLease does for runs (Lease.RunID holds the rollout
	// ID): the same token while owner holds it, a higher one for a new
	// owner. Errors: ErrNotFound, ErrLeaseHeld, a *ValidationError for an
	// empty owner or a non-positive ttl.
	AcquireRolloutLease(ctx context.Context, id, owner string, now time.Time, ttl time.Duration) (Lease, error)
	// ReleaseRolloutLease gives l up so that any replica may acquire the
	// rollout at once; releasing a lease that is no longer current does
	// nothing and is not an error.
	ReleaseRolloutLease(ctx context.Context, l Lease) error
}

// StoredRollout is a rollout as stored, with its version for optimistic
// writes (the API's ETag).
type StoredRollout struct {
	Rollout
	Version int64 `json:"version"`
}

// RolloutQuery filters Store.Rollouts.
type RolloutQuery struct {
	// Env, Flag, when set, keep rollouts of that environment or flag only.
	Env  string
	Flag string
	// States, when set, keeps rollouts in one of these states only.
	States []RolloutState
	// Limit is the number of rollouts: 0 means 50; at most 500.
	Limit int
}

// Matches reports whether r passes the query's filters.
func (q RolloutQuery) Matches(r *Rollout) bool {
	return (q.Env == "" || r.Env == q.Env) && (q.Flag == "" || r.Flag == q.Flag) &&
		(len(q.States) == 0 || slices.Contains(q.States, r.State))
}

// RolloutUpdate is one write of a rollout.
type RolloutUpdate struct {
	// Rollout is the new state; Rollout.ID names it.
	Rollout *Rollout
	// IfVersion is the version the stored rollout must be at.
	IfVersion int64
	// Token is the writer's lease token; 0 for a write made without one
	// (an API action: the version check alone guards it).
	Token int64
}

// Rollout page limits.
const (
	DefaultRolloutPage = 50
	MaxRolloutPage     = 500
)

// CheckRollout checks what a store needs of a rollout before any I/O: a
// valid ID, an env and a flag. Stores call it first.
func CheckRollout(r *Rollout) error {
	switch {
	case r == nil:
		return fieldError("rollout", "required")
	case CheckRolloutID(r.ID) != nil:
		return CheckRolloutID(r.ID)
	case r.Env == "":
		return fieldError("env", "required")
	case r.Flag == "":
		return fieldError("flag", "required")
	}
	return nil
}

// CheckRolloutUpdate checks the shape of an update before any I/O.
func CheckRolloutUpdate(u RolloutUpdate) error {
	if err := CheckRollout(u.Rollout); err != nil {
		return err
	}
	switch {
	case u.IfVersion <= 0:
		return fieldError("ifVersion", "must be the version read, at least 1")
	case u.Token < 0:
		return fieldError("token", "must not be negative")
	}
	return nil
}
