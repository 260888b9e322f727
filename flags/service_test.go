package flags_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flagpole/flagpole/flags"
)

// memStore is an in-memory flags.Store double with the real version semantics,
// for testing the Service alone. The Redis store runs the full conformance suite.
type memStore struct {
	mu    sync.Mutex
	snaps map[string]flags.Snapshot
	audit map[string][]flags.AuditEntry
	saves int
}

func newMemStore() *memStore {
	return &memStore{snaps: map[string]flags.Snapshot{}, audit: map[string][]flags.AuditEntry{}}
}

func (m *memStore) CreateEnvironment(_ context.Context, name string, doc []byte, e flags.AuditEntry) (flags.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.snaps[name]; ok {
		return flags.Snapshot{}, flags.ErrExists
	}
	s := flags.Snapshot{Env: name, Version: 1, Document: doc, UpdatedAt: e.Time}
	m.snaps[name] = s
	e.Version = 1
	m.audit[name] = append(m.audit[name], e)
	return s, nil
}

func (m *memStore) DeleteEnvironment(_ context.Context, name string, ifVersion int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.snaps[name]
	if !ok {
		return flags.ErrNotFound
	}
	if ifVersion != 0 && s.Version != ifVersion {
		return flags.ErrConflict
	}
	delete(m.snaps, name)
	return nil
}

func (m *memStore) Environments(context.Context) ([]flags.Environment, error) { return nil, nil }

func (m *memStore) Snapshot(_ context.Context, env string) (flags.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.snaps[env]
	if !ok {
		return flags.Snapshot{}, flags.ErrNotFound
	}
	return s, nil
}

func (m *memStore) Snapshots(context.Context) ([]flags.Snapshot, error) { return nil, nil }

func (m *memStore) Save(_ context.Context, env string, expected int64, doc []byte, e flags.AuditEntry) (flags.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.snaps[env]
	if !ok {
		return flags.Snapshot{}, flags.ErrNotFound
	}
	if s.Version != expected {
		return flags.Snapshot{}, flags.ErrConflict
	}
	s = flags.Snapshot{Env: env, Version: expected + 1, Document: doc, UpdatedAt: e.Time}
	m.snaps[env] = s
	e.Version = s.Version
	m.audit[env] = append(m.audit[env], e)
	m.saves++
	return s, nil
}

func (m *memStore) Audit(context.Context, string, flags.AuditQuery) (flags.AuditPage, error) {
	return flags.AuditPage{}, nil
}
func (m *memStore) Subscribe(ctx context.Context, _ func(flags.Change)) error {
	<-ctx.Done()
	return ctx.Err()
}
func (m *memStore) Ping(context.Context) error { return nil }

func (m *memStore) lastEntry(env string) flags.AuditEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	a := m.audit[env]
	return a[len(a)-1]
}

var _ flags.Store = (*memStore)(nil)

func boolFlag(state flags.State, def string) *flags.Flag {
	return &flags.Flag{State: state, Variants: map[string]any{"on": true, "off": false}, DefaultVariant: &def}
}

func newService(t *testing.T) (*flags.Service, *memStore) {
	t.Helper()
	st := newMemStore()
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	svc := flags.NewService(st, func() time.Time { return at })
	if _, err := svc.CreateEnvironment(context.Background(), "production", nil, flags.WriteOptions{Actor: "admin"}); err != nil {
		t.Fatalf("CreateEnvironment: %v", err)
	}
	return svc, st
}

func evaluate(t *testing.T, st *memStore, env, key string) flags.Resolution {
	t.Helper()
	snap, err := st.Snapshot(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	set, err := flags.Load(snap.Document)
	if err != nil {
		t.Fatalf("stored flag set does not load: %v", err)
	}
	return set.Evaluate(key, nil)
}

func TestServiceWritesAreValidatedAndAudited(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t)
	o := flags.WriteOptions{Actor: "alice", Reason: "launch"}

	snap, err := svc.CreateFlag(ctx, "production", "checkout", boolFlag(flags.Enabled, "off"), o)
	if err != nil {
		t.Fatalf("CreateFlag: %v", err)
	}
	if snap.Version != 2 {
		t.Errorf("version after create = %d, want 2", snap.Version)
	}
	e := st.lastEntry("production")
	if e.Actor != "alice" || e.Reason != "launch" || e.Action != "flag.create" || len(e.Changes) != 1 || e.Changes[0].Key != "checkout" {
		t.Errorf("audit entry = %+v", e)
	}
	if string(e.Changes[0].Before) != "null" || len(e.Changes[0].Diff) != 1 || e.Changes[0].Diff[0].Op != "add" {
		t.Errorf("create change = before %s diff %+v", e.Changes[0].Before, e.Changes[0].Diff)
	}

	on := json.RawMessage(`"on"`)
	if _, err := svc.PatchFlag(ctx, "production", "checkout", flags.FlagPatch{DefaultVariant: on}, o); err != nil {
		t.Fatalf("PatchFlag: %v", err)
	}
	if r := evaluate(t, st, "production", "checkout"); r.Value != true || r.Variant != "on" {
		t.Errorf("after patch: %+v", r)
	}
	diff := st.lastEntry("production").Changes[0].Diff
	if len(diff) != 1 || diff[0].Op != "replace" || diff[0].Path != "/defaultVariant" || string(diff[0].From) != `"off"` || string(diff[0].Value) != `"on"` {
		t.Errorf("patch diff = %+v", diff)
	}

	disabled := flags.Disabled
	if _, err := svc.PatchFlag(ctx, "production", "checkout", flags.FlagPatch{State: &disabled}, o); err != nil {
		t.Fatalf("disable: %v", err)
	}
	if r := evaluate(t, st, "production", "checkout"); r.Reason != flags.ReasonDisabled {
		t.Errorf("after disable: reason %s", r.Reason)
	}
	if _, err := svc.DeleteFlag(ctx, "production", "checkout", o); err != nil {
		t.Fatalf("DeleteFlag: %v", err)
	}
	if r := evaluate(t, st, "production", "checkout"); r.ErrorCode != flags.ErrorFlagNotFound {
		t.Errorf("after delete: %+v", r)
	}
	if got := st.lastEntry("production"); string(got.Changes[0].After) != "null" || got.Action != "flag.delete" {
		t.Errorf("delete entry = %+v", got)
	}
}

func TestServiceRefusesBadWritesAndStoresNothing(t *testing.T) {
	ctx := context.Background()
	blue := json.RawMessage(`"blue"`)
	bogus := flags.State("MAYBE")
	tests := []struct {
		name    string
		write   func(*flags.Service) error
		wantErr func(error) bool
		want    string
	}{
		{
			name: "default variant that is not a variant",
			write: func(s *flags.Service) error {
				_, err := s.PatchFlag(ctx, "production", "existing", flags.FlagPatch{DefaultVariant: blue}, flags.WriteOptions{})
				return err
			},
			wantErr: isValidation, want: "defaultVariant",
		},
		{
			name: "default variant that is not a string",
			write: func(s *flags.Service) error {
				_, err := s.PatchFlag(ctx, "production", "existing", flags.FlagPatch{DefaultVariant: json.RawMessage(`3`)}, flags.WriteOptions{})
				return err
			},
			wantErr: isInput, want: "defaultVariant",
		},
		{
			name: "unknown state",
			write: func(s *flags.Service) error {
				_, err := s.PatchFlag(ctx, "production", "existing", flags.FlagPatch{State: &bogus}, flags.WriteOptions{})
				return err
			},
			wantErr: isInput, want: "state",
		},
		{
			name: "create a flag that exists",
			write: func(s *flags.Service) error {
				_, err := s.CreateFlag(ctx, "production", "existing", boolFlag(flags.Enabled, "on"), flags.WriteOptions{})
				return err
			},
			wantErr: func(err error) bool { return errors.Is(err, flags.ErrExists) }, want: "existing",
		},
		{
			name: "patch a missing flag",
			write: func(s *flags.Service) error {
				_, err := s.PatchFlag(ctx, "production", "nope", flags.FlagPatch{}, flags.WriteOptions{})
				return err
			},
			wantErr: func(err error) bool { return errors.Is(err, flags.ErrNotFound) }, want: "nope",
		},
		{
			name: "write to a missing environment",
			write: func(s *flags.Service) error {
				_, err := s.PutFlag(ctx, "staging", "x", boolFlag(flags.Enabled, "on"), flags.WriteOptions{})
				return err
			},
			wantErr: func(err error) bool { return errors.Is(err, flags.ErrNotFound) }, want: "staging",
		},
		{
			name: "flag key with a slash",
			write: func(s *flags.Service) error {
				_, err := s.PutFlag(ctx, "production", "a/b", boolFlag(flags.Enabled, "on"), flags.WriteOptions{})
				return err
			},
			wantErr: isInput, want: "key",
		},
		{
			name: "body key differs from path key",
			write: func(s *flags.Service) error {
				f := boolFlag(flags.Enabled, "on")
				f.Key = "other"
				_, err := s.PutFlag(ctx, "production", "x", f, flags.WriteOptions{})
				return err
			},
			wantErr: isInput, want: "other",
		},
		{
			name: "stale If-Match",
			write: func(s *flags.Service) error {
				_, err := s.PutFlag(ctx, "production", "x", boolFlag(flags.Enabled, "on"), flags.WriteOptions{IfMatch: 1})
				return err
			},
			wantErr: func(err error) bool { return errors.Is(err, flags.ErrConflict) }, want: "version 2, not 1",
		},
		{
			name: "environment name with upper case",
			write: func(s *flags.Service) error {
				_, err := s.CreateEnvironment(ctx, "Prod", nil, flags.WriteOptions{})
				return err
			},
			wantErr: isInput, want: "name",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			svc, st := newService(t)
			if _, err := svc.CreateFlag(ctx, "production", "existing", boolFlag(flags.Enabled, "on"), flags.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			before, _ := st.Snapshot(ctx, "production")
			err := tc.write(svc)
			if err == nil || !tc.wantErr(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a matching error mentioning %q", err, tc.want)
			}
			after, _ := st.Snapshot(ctx, "production")
			if after.Version != before.Version || string(after.Document) != string(before.Document) {
				t.Errorf("a refused write changed the store: version %d → %d", before.Version, after.Version)
			}
		})
	}
}

func isValidation(err error) bool {
	var v *flags.ValidationError
	return errors.As(err, &v)
}

func isInput(err error) bool {
	var v *flags.InputError
	return errors.As(err, &v)
}

func TestServiceSkipsWritesThatChangeNothing(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t)
	f := boolFlag(flags.Enabled, "on")
	first, err := svc.PutFlag(ctx, "production", "x", f, flags.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := svc.PutFlag(ctx, "production", "x", f, flags.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Version != first.Version || st.saves != 1 {
		t.Errorf("identical write: version %d → %d, saves %d; want no new version", first.Version, again.Version, st.saves)
	}
}

// TestServiceConcurrentWritersLoseNothing races 50 writers without If-Match on
// one environment: every acknowledged write must be in the final flag set.
func TestServiceConcurrentWritersLoseNothing(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t)
	const writers = 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			_, err := svc.CreateFlag(ctx, "production", fmt.Sprintf("flag-%02d", i), boolFlag(flags.Enabled, "on"), flags.WriteOptions{Actor: "w"})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("write failed: %v", err)
		}
	}
	snap, _ := st.Snapshot(ctx, "production")
	set, err := flags.Load(snap.Document)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(set.Keys()); got != writers {
		t.Errorf("flags stored = %d, want %d", got, writers)
	}
	if snap.Version != writers+1 {
		t.Errorf("version = %d, want %d", snap.Version, writers+1)
	}
}

func TestServiceImportReportsEveryChangedFlag(t *testing.T) {
	ctx := context.Background()
	svc, st := newService(t)
	if _, err := svc.PutFlag(ctx, "production", "a", boolFlag(flags.Enabled, "on"), flags.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	doc, err := flags.Parse([]byte(`{"flags":{
		"a":{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on"},
		"b":{"state":"ENABLED","variants":{"x":"1","y":"2"},"defaultVariant":"x"}},
		"metadata":{"team":"checkout"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Import(ctx, "production", doc, flags.WriteOptions{Actor: "gitops"}); err != nil {
		t.Fatal(err)
	}
	e := st.lastEntry("production")
	var keys []string
	for _, c := range e.Changes {
		keys = append(keys, c.Key)
	}
	if got := strings.Join(keys, ","); got != "a,b,metadata" || e.Action != "flagset.import" {
		t.Errorf("import changes = %s (%s), want a,b,metadata", got, e.Action)
	}
}
