package flags

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode"
)

// InputError is a request that is wrong before any flag set is looked at: a
// bad environment name, flag key or patch field.
type InputError struct {
	Field   string
	Problem string
}

func (e *InputError) Error() string { return e.Field + ": " + e.Problem }

// WriteOptions say who writes, why, and on which version.
type WriteOptions struct {
	Actor  string // API key name, or "system:<component>"
	Reason string // optional, recorded in the audit log
	// IfMatch, when not 0, is the version the writer saw; the write fails with
	// ErrConflict if the environment has moved on. When 0, a write that races
	// with another is retried on the new version.
	IfMatch int64
}

// FlagPatch changes parts of one flag. Nil fields are left as they are.
type FlagPatch struct {
	State *State
	// DefaultVariant: nil unchanged, JSON null clears it, a JSON string sets it.
	DefaultVariant json.RawMessage
	// Targeting: nil unchanged, JSON null or {} clears it, anything else replaces it.
	Targeting json.RawMessage
	Variants  map[string]any
	Metadata  map[string]any
}

// Service performs validated, audited writes of flag sets through a [Store].
// Every write re-reads the current flag set, applies the change, compiles the
// result (so nothing invalid is ever stored), records who changed what and
// why, and saves it only if nobody else wrote in between.
type Service struct {
	store Store
	now   func() time.Time
}

// maxAttempts bounds how often a write without If-Match is retried when other
// writers keep winning the race.
const maxAttempts = 64

// NewService returns a Service writing to store. now may be nil (time.Now).
func NewService(store Store, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{store: store, now: now}
}

// CheckEnvName reports whether name can name an environment: 1 to 63
// characters, lower-case letters, digits, '-' and '_', starting with a letter
// or digit. It returns an *InputError naming the field "name".
func CheckEnvName(name string) error {
	if name == "" || len(name) > 63 {
		return &InputError{Field: "name", Problem: "must be 1 to 63 characters"}
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || (i > 0 && (r == '-' || r == '_'))
		if !ok {
			return &InputError{Field: "name", Problem: fmt.Sprintf("%q: use lower-case letters, digits, '-' and '_', starting with a letter or digit", name)}
		}
	}
	return nil
}

// CheckFlagKey reports whether key can name a flag managed through the API: 1
// to 256 characters without spaces, control characters or '/'. It returns an
// *InputError naming the field "key".
func CheckFlagKey(key string) error {
	if key == "" || len(key) > 256 {
		return &InputError{Field: "key", Problem: "must be 1 to 256 characters"}
	}
	if i := strings.IndexFunc(key, func(r rune) bool { return r == '/' || unicode.IsSpace(r) || unicode.IsControl(r) }); i >= 0 {
		return &InputError{Field: "key", Problem: fmt.Sprintf("%q: no spaces, control characters or '/'", key)}
	}
	return nil
}

// CreateEnvironment creates env holding doc (an empty flag set when doc is
// nil). Errors: *InputError for a bad name, *ValidationError for an invalid
// doc, ErrExists, ErrUnavailable.
func (s *Service) CreateEnvironment(ctx context.Context, name string, doc *Document, o WriteOptions) (Snapshot, error) {
	if err := CheckEnvName(name); err != nil {
		return Snapshot{}, err
	}
	if doc == nil {
		doc = &Document{}
	}
	raw, _, err := canonical(doc)
	if err != nil {
		return Snapshot{}, err
	}
	entry := AuditEntry{
		Env: name, Time: s.now().UTC(), Actor: o.Actor, Action: "environment.create", Reason: o.Reason,
		Changes: diffDocuments(&Document{}, doc),
	}
	snap, err := s.store.CreateEnvironment(ctx, name, raw, entry)
	if err != nil {
		return Snapshot{}, fmt.Errorf("creating environment %q: %w", name, err)
	}
	return snap, nil
}

// CreateFlag adds flag key to env. Errors: *InputError, *ValidationError,
// ErrExists when the flag exists, ErrNotFound when env does not, ErrConflict,
// ErrUnavailable.
func (s *Service) CreateFlag(ctx context.Context, env, key string, f *Flag, o WriteOptions) (Snapshot, error) {
	if err := checkFlagArg(key, f); err != nil {
		return Snapshot{}, err
	}
	return s.Update(ctx, env, "flag.create", o, func(d *Document) error {
		if _, ok := d.Flags[key]; ok {
			return fmt.Errorf("flag %q in environment %q: %w", key, env, ErrExists)
		}
		d.Flags[key] = withoutKey(f)
		return nil
	})
}

// PutFlag creates flag key in env or replaces it. Errors as [Service.CreateFlag],
// without ErrExists.
func (s *Service) PutFlag(ctx context.Context, env, key string, f *Flag, o WriteOptions) (Snapshot, error) {
	if err := checkFlagArg(key, f); err != nil {
		return Snapshot{}, err
	}
	return s.Update(ctx, env, "flag.update", o, func(d *Document) error {
		d.Flags[key] = withoutKey(f)
		return nil
	})
}

// PatchFlag changes parts of an existing flag. Errors: *InputError for a bad
// patch field, *ValidationError, ErrNotFound (env or flag), ErrConflict,
// ErrUnavailable.
func (s *Service) PatchFlag(ctx context.Context, env, key string, p FlagPatch, o WriteOptions) (Snapshot, error) {
	var def *string
	clearDef := false
	if p.DefaultVariant != nil {
		switch t := bytes.TrimSpace(p.DefaultVariant); {
		case string(t) == "null":
			clearDef = true
		default:
			var v string
			if err := json.Unmarshal(t, &v); err != nil {
				return Snapshot{}, &InputError{Field: "defaultVariant", Problem: "must be a variant name or null"}
			}
			def = &v
		}
	}
	if p.State != nil && *p.State != Enabled && *p.State != Disabled {
		return Snapshot{}, &InputError{Field: "state", Problem: fmt.Sprintf("%q: must be ENABLED or DISABLED", *p.State)}
	}
	return s.Update(ctx, env, "flag.update", o, func(d *Document) error {
		f, ok := d.Flags[key]
		if !ok {
			return fmt.Errorf("flag %q in environment %q: %w", key, env, ErrNotFound)
		}
		if p.State != nil {
			f.State = *p.State
		}
		switch {
		case clearDef:
			f.DefaultVariant = nil
		case def != nil:
			f.DefaultVariant = def
		}
		if p.Targeting != nil {
			switch t := bytes.TrimSpace(p.Targeting); string(t) {
			case "null", "{}":
				f.Targeting = nil
			default:
				f.Targeting = append(json.RawMessage(nil), t...)
			}
		}
		if p.Variants != nil {
			f.Variants = p.Variants
		}
		if p.Metadata != nil {
			f.Metadata = p.Metadata
		}
		return nil
	})
}

// DeleteFlag removes flag key from env. Errors: ErrNotFound (env or flag),
// ErrConflict, ErrUnavailable.
func (s *Service) DeleteFlag(ctx context.Context, env, key string, o WriteOptions) (Snapshot, error) {
	return s.Update(ctx, env, "flag.delete", o, func(d *Document) error {
		if _, ok := d.Flags[key]; !ok {
			return fmt.Errorf("flag %q in environment %q: %w", key, env, ErrNotFound)
		}
		delete(d.Flags, key)
		return nil
	})
}

// Import replaces env's whole flag set with doc. Importing the set env
// already holds writes nothing and returns the current snapshot. Errors:
// *ValidationError, ErrNotFound, ErrConflict, ErrUnavailable.
func (s *Service) Import(ctx context.Context, env string, doc *Document, o WriteOptions) (Snapshot, error) {
	if doc == nil {
		return Snapshot{}, &InputError{Field: "flags", Problem: "a flag set is required"}
	}
	raw, _, err := canonical(doc)
	if err != nil {
		return Snapshot{}, err
	}
	return s.Update(ctx, env, "flagset.import", o, func(d *Document) error {
		next, err := Parse(raw)
		if err != nil {
			return err
		}
		*d = *next
		return nil
	})
}

// Update is the write path every change takes: read env's current flag set,
// let mutate change a private copy, compile the result, record the audit
// entry and save it if the version is unchanged. A mutate error is returned
// as is. When nothing changed, nothing is written and the current snapshot
// is returned. Errors: those of mutate, *ValidationError, ErrNotFound,
// ErrConflict (only with IfMatch, or after many lost races), ErrUnavailable.
func (s *Service) Update(ctx context.Context, env, action string, o WriteOptions, mutate func(*Document) error) (Snapshot, error) {
	for attempt := 1; ; attempt++ {
		snap, err := s.store.Snapshot(ctx, env)
		if err != nil {
			return Snapshot{}, fmt.Errorf("environment %q: %w", env, err)
		}
		if o.IfMatch != 0 && snap.Version != o.IfMatch {
			return Snapshot{}, fmt.Errorf("environment %q is at version %d, not %d: %w", env, snap.Version, o.IfMatch, ErrConflict)
		}
		before, err := Parse(snap.Document)
		if err != nil {
			return Snapshot{}, fmt.Errorf("environment %q holds an unreadable flag set: %w", env, err)
		}
		after, err := Parse(snap.Document)
		if err != nil {
			return Snapshot{}, err
		}
		if after.Flags == nil {
			after.Flags = map[string]*Flag{}
		}
		if err := mutate(after); err != nil {
			return Snapshot{}, err
		}
		raw, _, err := canonical(after)
		if err != nil {
			return Snapshot{}, err
		}
		if bytes.Equal(raw, snap.Document) {
			return snap, nil
		}
		entry := AuditEntry{
			Env: env, Time: s.now().UTC(), Actor: o.Actor, Action: action, Reason: o.Reason,
			Changes: diffDocuments(before, after),
		}
		saved, err := s.store.Save(ctx, env, snap.Version, raw, entry)
		if errors.Is(err, ErrConflict) && o.IfMatch == 0 && attempt < maxAttempts {
			// Another writer won; back off a little (jittered) and apply the change to its result.
			d := time.Duration(rand.IntN(1+min(attempt, 10))) * time.Millisecond
			select {
			case <-ctx.Done():
				return Snapshot{}, ctx.Err()
			case <-time.After(d):
			}
			continue
		}
		if err != nil {
			return Snapshot{}, fmt.Errorf("saving environment %q: %w", env, err)
		}
		return saved, nil
	}
}

func checkFlagArg(key string, f *Flag) error {
	if err := CheckFlagKey(key); err != nil {
		return err
	}
	if f == nil {
		return &InputError{Field: "flag", Problem: "a flag definition is required"}
	}
	if f.Key != "" && f.Key != key {
		return &InputError{Field: "key", Problem: fmt.Sprintf("%q does not match the flag's key %q", f.Key, key)}
	}
	return nil
}

func withoutKey(f *Flag) *Flag {
	c := *f
	c.Key = ""
	return &c
}

// canonical validates doc by compiling it and returns its canonical JSON.
func canonical(doc *Document) ([]byte, *Set, error) {
	set, err := Compile(doc)
	if err != nil {
		return nil, nil, err
	}
	raw, err := json.Marshal(normalise(doc))
	if err != nil {
		return nil, nil, fmt.Errorf("encoding flag set: %w", err)
	}
	return raw, set, nil
}

// normalise returns doc in map form with no per-flag keys and a non-nil flag map.
func normalise(doc *Document) *Document {
	c := *doc
	c.Flags = make(map[string]*Flag, len(doc.Flags))
	for k, f := range doc.Flags {
		c.Flags[k] = withoutKey(f)
	}
	return &c
}

// diffDocuments lists what changed between two flag sets, flag by flag.
// Changes to "$evaluators" and the set's "metadata" are reported under those
// pseudo-keys.
func diffDocuments(before, after *Document) []FlagChange {
	parts := func(d *Document) map[string]any {
		m := map[string]any{}
		for k, f := range d.Flags {
			m[k] = withoutKey(f)
		}
		if len(d.Evaluators) > 0 {
			m["$evaluators"] = d.Evaluators
		}
		if len(d.Metadata) > 0 {
			m["metadata"] = d.Metadata
		}
		return m
	}
	b, a := parts(before), parts(after)
	keys := make([]string, 0, len(a)+len(b))
	for k := range b {
		keys = append(keys, k)
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var out []FlagChange
	for _, k := range keys {
		bj, aj := toJSON(b[k]), toJSON(a[k])
		if bytes.Equal(bj, aj) {
			continue
		}
		out = append(out, FlagChange{Key: k, Before: bj, After: aj, Diff: diffJSON(bj, aj)})
	}
	return out
}

func toJSON(v any) json.RawMessage {
	if v == nil || (reflect.ValueOf(v).Kind() == reflect.Pointer && reflect.ValueOf(v).IsNil()) {
		return json.RawMessage("null")
	}
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

// diffJSON compares two JSON documents and returns JSON-Patch-style
// operations that turn before into after. Objects are compared member by
// member; arrays and scalars are replaced whole.
func diffJSON(before, after json.RawMessage) []DiffOp {
	var b, a any
	_ = json.Unmarshal(before, &b)
	_ = json.Unmarshal(after, &a)
	var ops []DiffOp
	diffValue("", b, a, &ops)
	return ops
}

func diffValue(path string, b, a any, ops *[]DiffOp) {
	bm, bok := b.(map[string]any)
	am, aok := a.(map[string]any)
	if bok && aok {
		keys := make([]string, 0, len(bm)+len(am))
		for k := range bm {
			keys = append(keys, k)
		}
		for k := range am {
			if _, ok := bm[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := path + "/" + strings.NewReplacer("~", "~0", "/", "~1").Replace(k)
			bv, inB := bm[k]
			av, inA := am[k]
			switch {
			case !inA:
				*ops = append(*ops, DiffOp{Op: "remove", Path: p, From: toJSON(bv)})
			case !inB:
				*ops = append(*ops, DiffOp{Op: "add", Path: p, Value: toJSON(av)})
			default:
				diffValue(p, bv, av, ops)
			}
		}
		return
	}
	if reflect.DeepEqual(a, b) {
		return
	}
	switch {
	case b == nil && path == "":
		*ops = append(*ops, DiffOp{Op: "add", Path: "", Value: toJSON(a)})
	case a == nil && path == "":
		*ops = append(*ops, DiffOp{Op: "remove", Path: "", From: toJSON(b)})
	default:
		*ops = append(*ops, DiffOp{Op: "replace", Path: path, From: toJSON(b), Value: toJSON(a)})
	}
}
