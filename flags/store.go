package flags

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"
)

// Errors a [Store] returns (possibly wrapped; test with errors.Is).
var (
	// ErrNotFound: the environment (or entry) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the environment already exists.
	ErrExists = errors.New("already exists")
	// ErrConflict: the environment's version is not the one the write expected.
	ErrConflict = errors.New("version conflict")
	// ErrUnavailable: the backing store cannot be reached; nothing was written.
	ErrUnavailable = errors.New("store unavailable")
)

// Snapshot is one stored version of an environment's flag set.
type Snapshot struct {
	Env       string
	Version   int64
	Document  []byte // canonical JSON of the flag set (a marshalled Document)
	UpdatedAt time.Time
}

// ETag is the snapshot's strong entity tag, quoted as HTTP requires.
func (s Snapshot) ETag() string { return `"` + strconv.FormatInt(s.Version, 10) + `"` }

// Environment is a named place (production, staging, …) holding one flag set.
type Environment struct {
	Name      string    `json:"name"`
	Version   int64     `json:"version"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// AuditEntry records one change to an environment.
type AuditEntry struct {
	ID      string       `json:"id"` // assigned by the store; sorts by time
	Env     string       `json:"environment"`
	Version int64        `json:"version"` // the environment's version after the change
	Time    time.Time    `json:"time"`
	Actor   string       `json:"actor"`  // API key name, or "system:<component>"
	Action  string       `json:"action"` // e.g. "flag.create", "flag.update", "flag.delete", "flagset.import", "environment.create"
	Reason  string       `json:"reason,omitempty"`
	Changes []FlagChange `json:"changes,omitempty"`
}

// FlagChange is what one change did to one flag: the definitions before and
// after (null when absent) and a JSON-Patch-style diff between them.
type FlagChange struct {
	Key    string          `json:"key"`
	Before json.RawMessage `json:"before"`
	After  json.RawMessage `json:"after"`
	Diff   []DiffOp        `json:"diff"`
}

// DiffOp is one difference: Op is "add", "remove" or "replace"; Path is a JSON
// Pointer into the flag definition.
type DiffOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	From  json.RawMessage `json:"from,omitempty"`
	Value json.RawMessage `json:"value,omitempty"`
}

// AuditQuery selects audit entries, newest first. Flag, when set, keeps only
// entries that changed that flag. Cursor is the Next of a previous page.
type AuditQuery struct {
	Flag   string
	Limit  int // 1..500; 0 means 50
	Cursor string
}

// AuditPage is one page of audit entries; Next is "" on the last page.
type AuditPage struct {
	Entries []AuditEntry `json:"entries"`
	Next    string       `json:"next,omitempty"`
}

// Change announces that an environment now has a new version. Resync is true
// when the subscriber may have missed changes (first subscription or a
// reconnect) and should re-read every environment.
type Change struct {
	Env     string
	Version int64
	Resync  bool
}

// Store persists environments, their flag sets and the audit log. Every method
// returns ErrUnavailable (wrapped) when the backend cannot be reached.
type Store interface {
	// CreateEnvironment stores a new environment at version 1 holding doc and
	// records entry. ErrExists if it exists.
	CreateEnvironment(ctx context.Context, name string, doc []byte, entry AuditEntry) (Snapshot, error)
	// DeleteEnvironment removes an environment, its flag set and its audit log
	// and publishes the deletion (a Change with Version 0). With ifVersion 0
	// the delete is unconditional; otherwise it happens only if the current
	// version is ifVersion, checked and deleted atomically, and ErrConflict
	// (nothing deleted) if it is not. ErrNotFound if absent.
	DeleteEnvironment(ctx context.Context, name string, ifVersion int64) error
	// Environments lists every environment, sorted by name.
	Environments(ctx context.Context) ([]Environment, error)
	// Snapshot reads an environment's current flag set. ErrNotFound if absent.
	Snapshot(ctx context.Context, env string) (Snapshot, error)
	// Snapshots reads every environment's current flag set.
	Snapshots(ctx context.Context) ([]Snapshot, error)
	// Save atomically replaces env's flag set with doc and appends entry, but
	// only if the current version is expected; the new version is expected+1.
	// ErrConflict if the version moved on, ErrNotFound if env is absent. On
	// success the change is published to subscribers.
	Save(ctx context.Context, env string, expected int64, doc []byte, entry AuditEntry) (Snapshot, error)
	// Audit lists env's audit entries newest first. ErrNotFound if env is absent.
	Audit(ctx context.Context, env string, q AuditQuery) (AuditPage, error)
	// Subscribe calls fn for every published change until ctx ends, reconnecting
	// by itself; after each (re)connect it calls fn with Resync set. It returns
	// ctx.Err() when ctx ends.
	Subscribe(ctx context.Context, fn func(Change)) error
	// Ping checks that the backend answers.
	Ping(ctx context.Context) error
}
