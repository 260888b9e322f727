package canary

import (
	"context"
	"errors"
	"regexp"
	"time"
)

// Errors a Store returns, wrapped with context; test with errors.Is.
var (
	// ErrNotFound: no template or run of that name or ID.
	ErrNotFound = errors.New("canary: not found")
	// ErrExists: a template of that name, or a run of that ID, exists.
	ErrExists = errors.New("canary: already exists")
	// ErrConflict: the stored version is not the one the write expected
	// (someone else wrote first); re-read and retry.
	ErrConflict = errors.New("canary: version conflict")
	// ErrLeaseHeld: another owner holds the run's lease and it has not
	// expired.
	ErrLeaseHeld = errors.New("canary: the run's lease is held by another owner")
	// ErrLeaseLost: the lease token presented is stale: the lease was
	// released, or another owner has acquired it since. A write fenced by it
	// changed nothing.
	ErrLeaseLost = errors.New("canary: the lease token is stale")
	// ErrStepRecorded: a measurement with that step number is already
	// stored for the run; nothing was changed.
	ErrStepRecorded = errors.New("canary: the step is already recorded")
	// ErrUnavailable: the store cannot be reached; nothing was changed.
	ErrUnavailable = errors.New("canary: the store is unavailable")
)

// Store keeps analysis templates, runs, their measurements and the leases
// that make exactly one replica execute each run. Implementations are safe
// for concurrent use by many replicas; every write is atomic. The
// conformance suite in canary/canarytest defines the behaviour precisely.
//
// Every method may also return an error wrapping ErrUnavailable when the
// backing service cannot be reached, or a context error.
type Store interface {
	// PutTemplate stores t under t.Name, as a new version one above the
	// latest the name ever had (versions keep rising across a delete and
	// re-create), and returns it as stored. t must have passed Validate;
	// its own Version is ignored. Errors: ErrExists (o.Create and the name
	// exists), ErrNotFound (o.IfVersion set and the name does not exist),
	// ErrConflict (o.IfVersion is not the current version), a
	// *ValidationError for a template without a name.
	PutTemplate(ctx context.Context, t *Template, o TemplateWrite) (StoredTemplate, error)
	// Template returns the current version of a template. Errors:
	// ErrNotFound.
	Template(ctx context.Context, name string) (StoredTemplate, error)
	// Templates lists every template's current version, sorted by name.
	Templates(ctx context.Context) ([]StoredTemplate, error)
	// DeleteTemplate removes a template; runs already started keep their
	// snapshot of it. ifVersion 0 deletes whatever version is current.
	// Errors: ErrNotFound, ErrConflict.
	DeleteTemplate(ctx context.Context, name string, ifVersion int) error

	// CreateRun stores a new run at version 1. Errors: ErrExists, a
	// *ValidationError for a run without an ID.
	CreateRun(ctx context.Context, r *Run) (StoredRun, error)
	// Run returns a run. Errors: ErrNotFound.
	Run(ctx context.Context, id string) (StoredRun, error)
	// Runs lists runs newest first (by CreatedAt, then ID), filtered and
	// paged by q. Errors: a *ValidationError for a bad limit or cursor.
	Runs(ctx context.Context, q RunQuery) (RunPage, error)
	// UpdateRun replaces a run when its stored version is u.IfVersion,
	// appending u.Step to its measurements in the same atomic write, and
	// returns it at its new version. A write with a Token is fenced: it
	// fails unless that token is the run's current, unreleased lease.
	// Errors: ErrNotFound, ErrConflict, ErrLeaseLost, ErrStepRecorded, a
	// *ValidationError for an update without a run, or with a step but no
	// token.
	UpdateRun(ctx context.Context, u RunUpdate) (StoredRun, error)
	// DueRuns returns the IDs of at most limit runs that have not ended and
	// whose WakeAt is at or before now, the earliest first.
	DueRuns(ctx context.Context, now time.Time, limit int) ([]string, error)
	// Measurements lists a run's stored measurements in step order,
	// starting after step number after, at most limit (0: 100; at most
	// 1000). Errors: ErrNotFound for an unknown run, a *ValidationError
	// for a bad limit.
	Measurements(ctx context.Context, runID string, after, limit int) ([]Step, error)

	// AcquireLease gives owner the run's lease until now+ttl. If owner
	// already holds it (unexpired), it is extended and keeps its token;
	// otherwise the lease gets a token one above any the run's lease ever
	// had. Errors: ErrNotFound (no such run), ErrLeaseHeld (another owner
	// holds it unexpired), a *ValidationError for an empty owner or a
	// non-positive ttl.
	AcquireLease(ctx context.Context, runID, owner string, now time.Time, ttl time.Duration) (Lease, error)
	// RenewLease extends l until now+ttl when its token is still the run's
	// current, unreleased lease (even past its expiry, as long as nobody
	// took it over). Errors: ErrLeaseLost, ErrNotFound.
	RenewLease(ctx context.Context, l Lease, now time.Time, ttl time.Duration) (Lease, error)
	// ReleaseLease gives l up so that any replica may acquire the run at
	// once. Releasing a lease that is no longer current does nothing and
	// is not an error.
	ReleaseLease(ctx context.Context, l Lease) error
}

// TemplateWrite are the preconditions of PutTemplate.
type TemplateWrite struct {
	// Create refuses to replace an existing template (ErrExists).
	Create bool
	// IfVersion, when not 0, is the version the template must be at.
	IfVersion int
	// At is the time recorded as UpdatedAt.
	At time.Time
}

// StoredTemplate is a template as stored: Version is set by the store.
type StoredTemplate struct {
	Template
	UpdatedAt time.Time `json:"updatedAt"`
}

// StoredRun is a run as stored, with its version for optimistic writes.
type StoredRun struct {
	Run
	Version int64 `json:"version"`
}

// RunQuery filters and pages Store.Runs.
type RunQuery struct {
	// Template, when set, keeps runs of that template only.
	Template string
	// Phases, when set, keeps runs in one of these phases only.
	Phases []Phase
	// Limit is the page size: 0 means 50; at most 500.
	Limit int
	// Cursor is RunPage.Next of the previous page.
	Cursor string
}

// RunPage is one page of runs; Next is the cursor of the following page,
// "" on the last.
type RunPage struct {
	Runs []StoredRun `json:"runs"`
	Next string      `json:"next,omitempty"`
}

// RunUpdate is one write of a run.
type RunUpdate struct {
	// Run is the new state; Run.ID names the run.
	Run *Run
	// IfVersion is the version the stored run must be at.
	IfVersion int64
	// Token is the fencing token of the writer's lease; 0 for a write made
	// without a lease, such as a cancellation (the version check alone then
	// guards it).
	Token int64
	// Step, when set, is appended to the run's measurements; it needs a
	// Token, and its Number must not be stored yet.
	Step *Step
}

// Lease is a run's execution lease. Token is its fencing token: it rises
// with every new owner, and writes presenting an older one are refused.
type Lease struct {
	RunID     string    `json:"runId"`
	Owner     string    `json:"owner"`
	Token     int64     `json:"token"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// Store limits on paging.
const (
	DefaultRunPage         = 50
	MaxRunPage             = 500
	DefaultMeasurementPage = 100
	MaxMeasurementPage     = 1000
)

// WakeAt is when a runner should next look at the run: its next
// measurement (for a pending run, the end of warm-up) or its deadline,
// whichever is earlier; the zero time once it has ended. Stores index runs
// by it (see Store.DueRuns).
func (r *Run) WakeAt() time.Time {
	if r.Phase.Terminal() {
		return time.Time{}
	}
	w := r.NextAt
	if dl := r.Deadline(); !dl.IsZero() && (w.IsZero() || dl.Before(w)) {
		w = dl
	}
	return w
}

// PageLimit checks a page size against its default and maximum: 0 gives
// def; a negative value or one above max is a *ValidationError naming field.
// Stores use it so that every backend answers the same.
func PageLimit(field string, n, def, most int) (int, error) {
	switch {
	case n == 0:
		return def, nil
	case n < 0 || n > most:
		return 0, fieldError(field, "must be between 1 and %d", most)
	}
	return n, nil
}

var runIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// CheckRunID reports whether id can name a run: letters, digits, '.', '_'
// and '-', starting with a letter or digit, at most 128 characters. It
// returns a *ValidationError naming field "id", or nil. An ID that fails it
// can never be found.
func CheckRunID(id string) error {
	if !runIDRE.MatchString(id) {
		return fieldError("id", "%q is not a run ID (letters, digits, '.', '_' and '-', at most 128)", id)
	}
	return nil
}

// fieldError returns a *ValidationError with one problem.
func fieldError(field, format string, args ...any) error {
	var p problems
	p.add(field, format, args...)
	return p.err()
}

// CheckRunUpdate checks the shape of an update before any I/O: a run with
// an ID, and a token with any step. Stores call it first.
func CheckRunUpdate(u RunUpdate) error {
	switch {
	case u.Run == nil:
		return fieldError("run", "required")
	case CheckRunID(u.Run.ID) != nil:
		return fieldError("run.id", "%q is not a run ID", u.Run.ID)
	case u.IfVersion <= 0:
		return fieldError("ifVersion", "must be the version read, at least 1")
	case u.Token < 0:
		return fieldError("token", "must not be negative")
	case u.Step != nil && u.Token == 0:
		return fieldError("token", "a measurement is recorded only under the run's lease")
	case u.Step != nil && u.Step.Number < 1:
		return fieldError("step.number", "must be at least 1")
	}
	return nil
}

// CheckLeaseRequest checks AcquireLease's arguments before any I/O.
func CheckLeaseRequest(runID, owner string, ttl time.Duration) error {
	var p problems
	if runID == "" {
		p.add("runId", "required")
	}
	if owner == "" {
		p.add("owner", "required")
	}
	if ttl <= 0 {
		p.add("ttl", "must be positive")
	}
	return p.err()
}
