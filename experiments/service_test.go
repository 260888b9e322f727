package experiments_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis"
)

// hookStore is an experiment store whose UpdateExperiment can run a hook
// first (to interleave another writer) or fail (a crash or outage after
// the flag write).
type hookStore struct {
	*redis.Store
	beforeUpdate func(e *experiments.Experiment) error
}

func (h *hookStore) UpdateExperiment(ctx context.Context, env string, e *experiments.Experiment, w experiments.Write) (experiments.Stored, error) {
	if f := h.beforeUpdate; f != nil {
		h.beforeUpdate = nil // once
		if err := f(e); err != nil {
			return experiments.Stored{}, err
		}
	}
	return h.Store.UpdateExperiment(ctx, env, e, w)
}

type serviceFixture struct {
	svc   *experiments.Service
	flags *flags.Service
	raw   *redis.Store
	store *hookStore
}

const fixtureFlags = `{"flags": {
  "checkout": {"state": "ENABLED", "variants": {"new": true, "old": false}, "defaultVariant": "old"}
}}`

func newServiceFixture(t *testing.T) *serviceFixture {
	t.Helper()
	raw, err := redis.OpenEmbedded(context.Background(), t.TempDir(), redis.Options{})
	if err != nil {
		t.Fatalf("OpenEmbedded: %v", err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	fs := flags.NewService(raw, nil)
	doc, err := flags.Parse([]byte(fixtureFlags))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fs.CreateEnvironment(context.Background(), "prod", doc, flags.WriteOptions{Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	hs := &hookStore{Store: raw}
	svc, err := experiments.NewService(experiments.ServiceConfig{Store: hs, Flags: fs, FlagSets: raw})
	if err != nil {
		t.Fatal(err)
	}
	return &serviceFixture{svc: svc, flags: fs, raw: raw, store: hs}
}

func fixtureExperiment(key string) experiments.Experiment {
	return experiments.Experiment{
		Key: key, FlagKey: "checkout", Control: "old", Treatments: []string{"new"},
		Metrics: []experiments.Metric{{Key: "converted", Kind: experiments.KindConversion, Event: "purchase", Role: experiments.RoleGoal}},
	}
}

func (f *serviceFixture) create(t *testing.T, key string) {
	t.Helper()
	if _, err := f.svc.Create(context.Background(), "prod", fixtureExperiment(key), experiments.WriteOptions{}); err != nil {
		t.Fatalf("create %s: %v", key, err)
	}
}

func (f *serviceFixture) flag(t *testing.T) *flags.Flag {
	t.Helper()
	snap, err := f.raw.Snapshot(context.Background(), "prod")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := flags.Parse(snap.Document)
	if err != nil {
		t.Fatal(err)
	}
	return doc.Flags["checkout"]
}

// editFlag changes the flag as another writer would.
func (f *serviceFixture) editFlag(t *testing.T, change func(*flags.Flag)) {
	t.Helper()
	_, err := f.flags.Update(context.Background(), "prod", "test.edit", flags.WriteOptions{Actor: "someone"}, func(d *flags.Document) error {
		change(d.Flags["checkout"])
		return nil
	})
	if err != nil {
		t.Fatalf("edit flag: %v", err)
	}
}

func targetingOf(t *testing.T, e experiments.Experiment) json.RawMessage {
	t.Helper()
	tg, err := e.Targeting()
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

const rolloutSplit = `{"fractional": [{"var": "targetingKey"}, ["new", 10], ["old", 90]]}`

func TestStartRefusesForeignTargeting(t *testing.T) {
	cases := []struct {
		name      string
		targeting string
		wantErr   error
	}{
		{"a rollout's split", rolloutSplit, experiments.ErrFlagTargeted},
		{"a rule", `{"if": [{"==": [{"var": "email"}, "a@b.c"]}, "new", "old"]}`, experiments.ErrFlagTargeted},
		{"empty object", `{}`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newServiceFixture(t)
			f.create(t, "exp")
			f.editFlag(t, func(fl *flags.Flag) { fl.Targeting = json.RawMessage(tc.targeting) })
			_, err := f.svc.Start(context.Background(), "prod", "exp", experiments.WriteOptions{})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Start: %v, want %v", err, tc.wantErr)
			}
			got := f.flag(t)
			if tc.wantErr != nil {
				if !sameJSON(got.Targeting, json.RawMessage(tc.targeting)) || got.Metadata[experiments.FlagMetadataKey] != nil {
					t.Errorf("flag changed by a refused start: targeting %s, metadata %v", got.Targeting, got.Metadata)
				}
				if !strings.Contains(err.Error(), `"checkout"`) {
					t.Errorf("error does not name the flag: %v", err)
				}
				st, _ := f.svc.Get(context.Background(), "prod", "exp")
				if st.Status != experiments.StatusDraft {
					t.Errorf("status %q after a refused start", st.Status)
				}
			}
		})
	}
}

func TestStopRemovesOnlyWhatTheExperimentWrote(t *testing.T) {
	cases := []struct {
		name          string
		edit          func(*flags.Flag) // while the experiment runs
		wantTargeting string            // "" = none
		wantMetadata  map[string]any
	}{
		{"untouched", nil, "", nil},
		{"targeting replaced by someone", func(fl *flags.Flag) { fl.Targeting = json.RawMessage(rolloutSplit) }, rolloutSplit, nil},
		{"metadata added by someone", func(fl *flags.Flag) { fl.Metadata["owner"] = "pay" }, "", map[string]any{"owner": "pay"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newServiceFixture(t)
			f.create(t, "exp")
			if _, err := f.svc.Start(context.Background(), "prod", "exp", experiments.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			if tc.edit != nil {
				f.editFlag(t, tc.edit)
			}
			if _, err := f.svc.Stop(context.Background(), "prod", "exp", experiments.StopDecision{Outcome: experiments.OutcomeShip, Variant: "new"}, experiments.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			got := f.flag(t)
			if tc.wantTargeting == "" && len(got.Targeting) != 0 && string(got.Targeting) != "{}" {
				t.Errorf("targeting %s, want none", got.Targeting)
			}
			if tc.wantTargeting != "" && !sameJSON(got.Targeting, json.RawMessage(tc.wantTargeting)) {
				t.Errorf("targeting %s, want %s", got.Targeting, tc.wantTargeting)
			}
			if len(got.Metadata) != len(tc.wantMetadata) {
				t.Errorf("metadata %v, want %v", got.Metadata, tc.wantMetadata)
			}
			for k, v := range tc.wantMetadata {
				if got.Metadata[k] != v {
					t.Errorf("metadata %v, want %v", got.Metadata, tc.wantMetadata)
				}
			}
			if got.DefaultVariant == nil || *got.DefaultVariant != "new" {
				t.Errorf("default variant %v, want the shipped new", got.DefaultVariant)
			}
		})
	}
}

func TestRestoreLeavesAFlagChangedSince(t *testing.T) {
	outage := errors.New("store down")
	cases := []struct {
		name string
		// during runs between the flag write and the failed store write.
		during      func(t *testing.T, f *serviceFixture)
		wantRestore bool
	}{
		{"nobody wrote in between: restored", nil, true},
		{"someone edited the flag in between: left", func(t *testing.T, f *serviceFixture) {
			f.editFlag(t, func(fl *flags.Flag) { fl.Metadata["owner"] = "pay" })
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newServiceFixture(t)
			f.create(t, "exp")
			if _, err := f.svc.Start(context.Background(), "prod", "exp", experiments.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			running := f.flag(t)
			f.store.beforeUpdate = func(*experiments.Experiment) error {
				if tc.during != nil {
					tc.during(t, f)
				}
				return outage
			}
			_, err := f.svc.Restart(context.Background(), "prod", "exp", "", experiments.WriteOptions{})
			if !errors.Is(err, outage) {
				t.Fatalf("Restart: %v, want the store's error", err)
			}
			got := f.flag(t)
			restored := sameJSON(got.Targeting, running.Targeting)
			if restored != tc.wantRestore {
				t.Errorf("targeting %s; restored %v, want %v", got.Targeting, restored, tc.wantRestore)
			}
			if !tc.wantRestore && got.Metadata["owner"] != "pay" {
				t.Errorf("the other writer's change was lost: %v", got.Metadata)
			}
		})
	}
}

// TestConcurrentRestartKeepsTheWinnersTargeting: a restart whose store
// write loses to another restart must not put the old salt's targeting back.
func TestConcurrentRestartKeepsTheWinnersTargeting(t *testing.T) {
	f := newServiceFixture(t)
	f.create(t, "exp")
	if _, err := f.svc.Start(context.Background(), "prod", "exp", experiments.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	var winner experiments.Stored
	f.store.beforeUpdate = func(*experiments.Experiment) error {
		// The other restart, from the same version, with the same derived
		// salt: it writes the same flag and stores first.
		var err error
		winner, err = f.svc.Restart(context.Background(), "prod", "exp", "", experiments.WriteOptions{})
		return err
	}
	_, err := f.svc.Restart(context.Background(), "prod", "exp", "", experiments.WriteOptions{})
	if !errors.Is(err, experiments.ErrConflict) {
		t.Fatalf("losing Restart: %v, want ErrConflict", err)
	}
	if winner.Restarts != 1 {
		t.Fatalf("winner = %+v", winner)
	}
	if got, want := f.flag(t).Targeting, targetingOf(t, winner.Experiment); !sameJSON(got, want) {
		t.Errorf("flag targeting %s, want the running salt's %s", got, want)
	}
}

func TestStaleMarker(t *testing.T) {
	crash := errors.New("crashed")
	cases := []struct {
		name   string
		delete bool // delete the draft after the crash
	}{
		{"the draft is kept", false},
		{"the draft is deleted", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newServiceFixture(t)
			f.create(t, "a")
			f.create(t, "b")
			// A crash after the flag write: simulated by a store failure and
			// a restore that cannot happen (the flag edited since).
			f.store.beforeUpdate = func(*experiments.Experiment) error {
				f.editFlag(t, func(fl *flags.Flag) { fl.Metadata["owner"] = "pay" })
				return crash
			}
			if _, err := f.svc.Start(context.Background(), "prod", "a", experiments.WriteOptions{}); !errors.Is(err, crash) {
				t.Fatalf("Start a: %v", err)
			}
			if got := f.flag(t).Metadata[experiments.FlagMetadataKey]; got != "a" {
				t.Fatalf("marker %v, want the crashed a", got)
			}
			if tc.delete {
				if err := f.svc.Delete(context.Background(), "prod", "a", experiments.WriteOptions{}); err != nil {
					t.Fatal(err)
				}
				got := f.flag(t)
				if got.Metadata[experiments.FlagMetadataKey] != nil || (len(got.Targeting) != 0 && string(got.Targeting) != "{}") {
					t.Errorf("after deleting a: marker %v, targeting %s; want neither", got.Metadata, got.Targeting)
				}
				if got.Metadata["owner"] != "pay" {
					t.Errorf("delete removed someone else's metadata: %v", got.Metadata)
				}
			}
			st, err := f.svc.Start(context.Background(), "prod", "b", experiments.WriteOptions{})
			if err != nil {
				t.Fatalf("Start b on a flag marked by a non-running experiment: %v", err)
			}
			got := f.flag(t)
			if got.Metadata[experiments.FlagMetadataKey] != "b" || !sameJSON(got.Targeting, targetingOf(t, st.Experiment)) {
				t.Errorf("flag after starting b: marker %v, targeting %s", got.Metadata, got.Targeting)
			}
		})
	}
}

// TestStaleMarkerFencesTheCrashedStart: taking over the marker of a draft
// that is still being started makes that start fail rather than leave two
// experiments running on one flag.
func TestStaleMarkerFencesTheCrashedStart(t *testing.T) {
	f := newServiceFixture(t)
	f.create(t, "a")
	f.create(t, "b")
	var bErr error
	f.store.beforeUpdate = func(e *experiments.Experiment) error {
		_, bErr = f.svc.Start(context.Background(), "prod", "b", experiments.WriteOptions{})
		return nil
	}
	_, aErr := f.svc.Start(context.Background(), "prod", "a", experiments.WriteOptions{})
	if bErr != nil {
		t.Fatalf("Start b: %v", bErr)
	}
	if !errors.Is(aErr, experiments.ErrConflict) {
		t.Fatalf("Start a, overtaken: %v, want ErrConflict", aErr)
	}
	a, _ := f.svc.Get(context.Background(), "prod", "a")
	b, _ := f.svc.Get(context.Background(), "prod", "b")
	if a.Status != experiments.StatusDraft || b.Status != experiments.StatusRunning {
		t.Errorf("a %s, b %s; want draft and running", a.Status, b.Status)
	}
	if got := f.flag(t); got.Metadata[experiments.FlagMetadataKey] != "b" || !sameJSON(got.Targeting, targetingOf(t, b.Experiment)) {
		t.Errorf("flag: marker %v, targeting %s; want b's", got.Metadata, got.Targeting)
	}
}

// TestStaleMarkerFencedOnce: when the flag write that takes over a stale
// marker is retried (someone wrote the flag meanwhile), the stale
// experiment is fenced once, not once per attempt.
func TestStaleMarkerFencedOnce(t *testing.T) {
	f := newServiceFixture(t)
	f.create(t, "a")
	f.create(t, "b")
	crash := errors.New("crashed")
	f.store.beforeUpdate = func(*experiments.Experiment) error {
		f.editFlag(t, func(fl *flags.Flag) { fl.Metadata["owner"] = "pay" })
		return crash
	}
	if _, err := f.svc.Start(context.Background(), "prod", "a", experiments.WriteOptions{}); !errors.Is(err, crash) {
		t.Fatalf("Start a: %v", err)
	}
	before, err := f.svc.Get(context.Background(), "prod", "a")
	if err != nil {
		t.Fatal(err)
	}
	// The hook runs once: at the first fence, the flag changes under the
	// flag write, which then retries its change.
	f.store.beforeUpdate = func(e *experiments.Experiment) error {
		if e.Key == "a" {
			f.editFlag(t, func(fl *flags.Flag) { fl.Metadata["owner"] = "search" })
		}
		return nil
	}
	if _, err := f.svc.Start(context.Background(), "prod", "b", experiments.WriteOptions{}); err != nil {
		t.Fatalf("Start b: %v", err)
	}
	after, err := f.svc.Get(context.Background(), "prod", "a")
	if err != nil {
		t.Fatal(err)
	}
	if after.Version != before.Version+1 {
		t.Errorf("a's version %d → %d; want it fenced once, one version up", before.Version, after.Version)
	}
	if got := f.flag(t); got.Metadata[experiments.FlagMetadataKey] != "b" || got.Metadata["owner"] != "search" {
		t.Errorf("flag metadata %v; want b's marker and the concurrent edit", got.Metadata)
	}
}
