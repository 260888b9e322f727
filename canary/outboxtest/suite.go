// Package outboxtest is the conformance suite every canary.Outbox backend
// runs (the same tests against the embedded store, a real Redis, or anything
// else that claims to be a canary.Outbox), and an in-memory outbox for tests
// of the outbox's callers.
package outboxtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
)

// T0 is the suite's reference time.
var T0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// Notification returns a valid notification with ID id at t.
func Notification(id string, t time.Time) canary.Notification {
	return canary.Notification{
		ID:      id,
		Event:   canary.EventAnalysisCompleted,
		Subject: "analysis/" + id,
		Payload: json.RawMessage(`{"verdict":"fail","score":42.5,"reason":"errors up","nested":{"k":[1,2,3]}}`),
		Time:    t,
	}
}

// Run runs the suite. newOutbox must return an empty outbox of its own each
// time it is called; the suite calls it once per subtest.
func Run(t *testing.T, newOutbox func(t *testing.T) canary.Outbox) {
	tests := []struct {
		name string
		fn   func(t *testing.T, o canary.Outbox)
	}{
		{"EnqueueAndRead", testEnqueue},
		{"BadInput", testBadInput},
		{"ClaimDueAndLease", testClaim},
		{"RecordOutcomes", testRecord},
		{"FencedRecord", testFenced},
		{"Redrive", testRedrive},
		{"Stats", testStats},
		{"Listing", testListing},
		{"Prune", testPrune},
		{"ConcurrentWorkers", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newOutbox(t))
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want %v", err, target)
	}
}

// wantValidation checks that err is a *ValidationError naming field.
func wantValidation(t *testing.T, err error, field string) {
	t.Helper()
	var ve *canary.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error = %v, want a *canary.ValidationError naming %q", err, field)
	}
	for _, p := range ve.Problems {
		if p.Field == field {
			return
		}
	}
	t.Fatalf("problems %v do not name %q", ve.Problems, field)
}

func claimAll(t *testing.T, o canary.Outbox, owner string, now time.Time, lease time.Duration) []canary.Claim {
	t.Helper()
	cs, err := o.Claim(t.Context(), owner, now, lease, canary.MaxClaim)
	must(t, err)
	return cs
}

func ids(cs []canary.Claim) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.Delivery.ID)
	}
	return out
}

func attempt(at time.Time, outcome canary.AttemptOutcome, retryAt time.Time) canary.Attempt {
	a := canary.Attempt{At: at, Duration: canary.Duration(120 * time.Millisecond), Outcome: outcome, RetryAt: retryAt}
	switch outcome {
	case canary.OutcomeDelivered:
		a.Status = 200
	case canary.OutcomeRetry:
		a.Status, a.Error = 503, "receiver answered 503"
	case canary.OutcomeDead:
		a.Status, a.Error = 410, "receiver answered 410 Gone"
	}
	return a
}

func testEnqueue(t *testing.T, o canary.Outbox) {
	ctx := t.Context()
	n := Notification("n1", T0.Add(1500*time.Microsecond))
	must(t, o.Enqueue(ctx, n, []string{"ops", "slack-alerts"}))
	log, err := o.Notification(ctx, "n1")
	must(t, err)
	if log.Notification.ID != "n1" || log.Notification.Event != n.Event || log.Notification.Subject != n.Subject || !log.Notification.Time.Equal(n.Time) {
		t.Errorf("notification = %+v, want %+v", log.Notification, n)
	}
	var got, want any
	must(t, json.Unmarshal(log.Notification.Payload, &got))
	must(t, json.Unmarshal(n.Payload, &want))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("payload = %s, want %s", log.Notification.Payload, n.Payload)
	}
	if len(log.Deliveries) != 2 {
		t.Fatalf("deliveries = %+v, want 2", log.Deliveries)
	}
	for i, target := range []string{"ops", "slack-alerts"} {
		d := log.Deliveries[i]
		if d.ID != "n1/"+target || d.NotificationID != "n1" || d.Target != target || d.State != canary.DeliveryPending || d.Attempts != 0 {
			t.Errorf("delivery %d = %+v", i, d)
		}
		if !d.NextAt.Equal(T0.Add(time.Millisecond)) {
			t.Errorf("delivery %d NextAt = %v, want the notification time to the millisecond (%v)", i, d.NextAt, T0.Add(time.Millisecond))
		}
	}
	if len(log.Attempts) != 0 {
		t.Errorf("attempts = %+v, want none", log.Attempts)
	}
	// The same ID again is refused and changes nothing.
	dup := Notification("n1", T0.Add(time.Hour))
	dup.Subject = "other"
	wantErr(t, o.Enqueue(ctx, dup, []string{"other"}), canary.ErrExists)
	log2, err := o.Notification(ctx, "n1")
	must(t, err)
	if log2.Notification.Subject != n.Subject || len(log2.Deliveries) != 2 {
		t.Errorf("a refused enqueue changed the notification: %+v", log2)
	}
	_, err = o.Notification(ctx, "missing")
	wantErr(t, err, canary.ErrNotFound)
}

func testBadInput(t *testing.T, o canary.Outbox) {
	ctx := t.Context()
	good := Notification("ok", T0)
	tests := []struct {
		name    string
		mutate  func(n *canary.Notification)
		targets []string
		field   string
	}{
		{"bad id", func(n *canary.Notification) { n.ID = "a b" }, []string{"t"}, "id"},
		{"empty id", func(n *canary.Notification) { n.ID = "" }, []string{"t"}, "id"},
		{"bad event", func(n *canary.Notification) { n.Event = "Analysis Completed" }, []string{"t"}, "event"},
		{"payload not an object", func(n *canary.Notification) { n.Payload = json.RawMessage(`[1]`) }, []string{"t"}, "payload"},
		{"payload not JSON", func(n *canary.Notification) { n.Payload = json.RawMessage(`{"a":`) }, []string{"t"}, "payload"},
		{"payload too large", func(n *canary.Notification) {
			n.Payload = json.RawMessage(`{"a":"` + strings.Repeat("x", canary.MaxPayloadBytes) + `"}`)
		}, []string{"t"}, "payload"},
		{"no time", func(n *canary.Notification) { n.Time = time.Time{} }, []string{"t"}, "time"},
		{"no targets", func(n *canary.Notification) {}, nil, "targets"},
		{"bad target", func(n *canary.Notification) {}, []string{"Ops Team"}, "targets[0]"},
		{"repeated target", func(n *canary.Notification) {}, []string{"a", "a"}, "targets[1]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := good
			tc.mutate(&n)
			wantValidation(t, o.Enqueue(ctx, n, tc.targets), tc.field)
		})
	}
	if _, err := o.Notification(ctx, "ok"); !errors.Is(err, canary.ErrNotFound) {
		t.Errorf("a refused notification was stored: %v", err)
	}
	_, err := o.Claim(ctx, "", T0, time.Minute, 1)
	wantValidation(t, err, "owner")
	_, err = o.Claim(ctx, "w", T0, 0, 1)
	wantValidation(t, err, "lease")
	_, err = o.Claim(ctx, "w", T0, time.Minute, 0)
	wantValidation(t, err, "limit")
	_, err = o.Claim(ctx, "w", T0, time.Minute, canary.MaxClaim+1)
	wantValidation(t, err, "limit")

	claim := canary.Claim{Delivery: canary.Delivery{ID: "missing/t"}, Owner: "w", Token: 1}
	_, err = o.Record(ctx, claim, attempt(T0, canary.OutcomeDelivered, time.Time{}))
	wantErr(t, err, canary.ErrNotFound)
	_, err = o.Record(ctx, claim, attempt(T0, canary.OutcomeRetry, time.Time{}))
	wantValidation(t, err, "attempt.retryAt")
	_, err = o.Record(ctx, claim, attempt(T0, "maybe", time.Time{}))
	wantValidation(t, err, "attempt.outcome")
	_, err = o.Record(ctx, canary.Claim{Delivery: canary.Delivery{ID: "x/t"}, Owner: "w"}, attempt(T0, canary.OutcomeDelivered, time.Time{}))
	wantValidation(t, err, "claim.token")
	_, err = o.Redrive(ctx, "missing/t", T0)
	wantErr(t, err, canary.ErrNotFound)
	_, err = o.Redrive(ctx, "not a delivery id", T0)
	wantErr(t, err, canary.ErrNotFound)
	_, err = o.Notifications(ctx, canary.NotificationQuery{Cursor: "garbage"})
	wantValidation(t, err, "cursor")
	_, err = o.Notifications(ctx, canary.NotificationQuery{Limit: canary.MaxNotificationPage + 1})
	wantValidation(t, err, "limit")
	_, err = o.Dead(ctx, -1)
	wantValidation(t, err, "limit")
	_, err = o.Prune(ctx, T0, 0)
	wantValidation(t, err, "limit")
}

func testClaim(t *testing.T, o canary.Outbox) {
	ctx := t.Context()
	must(t, o.Enqueue(ctx, Notification("b", T0.Add(2*time.Second)), []string{"x", "y"}))
	must(t, o.Enqueue(ctx, Notification("a", T0.Add(time.Second)), []string{"x"}))
	must(t, o.Enqueue(ctx, Notification("later", T0.Add(time.Hour)), []string{"x"}))

	if cs := claimAll(t, o, "w1", T0, time.Minute); len(cs) != 0 {
		t.Fatalf("claimed %v before anything was due", ids(cs))
	}
	now := T0.Add(5 * time.Second)
	cs, err := o.Claim(ctx, "w1", now, time.Minute, 2)
	must(t, err)
	if got := ids(cs); !slices.Equal(got, []string{"a/x", "b/x"}) {
		t.Fatalf("first claim = %v, want the two earliest due [a/x b/x]", got)
	}
	for _, c := range cs {
		if c.Owner != "w1" || c.Token < 1 || !c.LeaseUntil.Equal(now.Add(time.Minute)) || c.Notification.ID != c.Delivery.NotificationID || c.Delivery.State != canary.DeliveryPending {
			t.Errorf("claim = %+v", c)
		}
		if c.Notification.Subject != "analysis/"+c.Notification.ID || len(c.Notification.Payload) == 0 {
			t.Errorf("claim carries notification %+v", c.Notification)
		}
	}
	first := cs
	cs = claimAll(t, o, "w2", now, time.Minute)
	if got := ids(cs); !slices.Equal(got, []string{"b/y"}) {
		t.Fatalf("second claim = %v, want only the unclaimed b/y", got)
	}
	// Nothing more until a lease lapses.
	if cs := claimAll(t, o, "w3", now.Add(59*time.Second), time.Minute); len(cs) != 0 {
		t.Fatalf("claimed %v while their leases held", ids(cs))
	}
	cs = claimAll(t, o, "w3", now.Add(time.Minute), time.Minute)
	if got := ids(cs); !slices.Equal(got, []string{"a/x", "b/x", "b/y"}) {
		t.Fatalf("claim after the leases ended = %v, want all three again", got)
	}
	for i, c := range cs[:2] {
		if c.Token <= first[i].Token || c.Owner != "w3" {
			t.Errorf("re-claim of %s has token %d owner %s, want above %d and w3", c.Delivery.ID, c.Token, c.Owner, first[i].Token)
		}
	}
}

func testRecord(t *testing.T, o canary.Outbox) {
	ctx := t.Context()
	must(t, o.Enqueue(ctx, Notification("n", T0), []string{"ok", "flaky", "gone"}))
	now := T0.Add(time.Second)
	cs := claimAll(t, o, "w", now, time.Minute)
	if len(cs) != 3 {
		t.Fatalf("claimed %v", ids(cs))
	}
	by := map[string]canary.Claim{}
	for _, c := range cs {
		by[c.Delivery.Target] = c
	}
	d, err := o.Record(ctx, by["ok"], attempt(now, canary.OutcomeDelivered, time.Time{}))
	must(t, err)
	if d.State != canary.DeliveryDelivered || d.Attempts != 1 || d.LastStatus != 200 || d.LastError != "" {
		t.Errorf("delivered = %+v", d)
	}
	retryAt := now.Add(30 * time.Second)
	d, err = o.Record(ctx, by["flaky"], attempt(now, canary.OutcomeRetry, retryAt))
	must(t, err)
	if d.State != canary.DeliveryPending || d.Attempts != 1 || !d.NextAt.Equal(retryAt) || d.LastStatus != 503 || d.LastError == "" {
		t.Errorf("retried = %+v", d)
	}
	d, err = o.Record(ctx, by["gone"], attempt(now, canary.OutcomeDead, time.Time{}))
	must(t, err)
	if d.State != canary.DeliveryDead || d.Attempts != 1 {
		t.Errorf("dead = %+v", d)
	}
	// Only the retried one comes back, and only once it is due again (the
	// lease it was claimed under no longer matters).
	if cs := claimAll(t, o, "w", retryAt.Add(-time.Millisecond), time.Hour); len(cs) != 0 {
		t.Fatalf("claimed %v before the retry time", ids(cs))
	}
	cs = claimAll(t, o, "w", retryAt, time.Minute)
	if got := ids(cs); !slices.Equal(got, []string{"n/flaky"}) {
		t.Fatalf("claim at the retry time = %v, want [n/flaky]", got)
	}
	if cs[0].Delivery.Attempts != 1 {
		t.Errorf("re-claimed delivery has %d attempts, want 1", cs[0].Delivery.Attempts)
	}
	d, err = o.Record(ctx, cs[0], attempt(retryAt, canary.OutcomeDelivered, time.Time{}))
	must(t, err)
	if d.Attempts != 2 || d.State != canary.DeliveryDelivered {
		t.Errorf("second attempt = %+v", d)
	}
	log, err := o.Notification(ctx, "n")
	must(t, err)
	type row struct {
		target  string
		number  int
		outcome canary.AttemptOutcome
	}
	var got []row
	for _, a := range log.Attempts {
		got = append(got, row{a.Target, a.Number, a.Outcome})
		if a.Duration != canary.Duration(120*time.Millisecond) || a.At.IsZero() {
			t.Errorf("attempt %+v lost its duration or time", a)
		}
	}
	want := []row{{"ok", 1, canary.OutcomeDelivered}, {"flaky", 1, canary.OutcomeRetry}, {"gone", 1, canary.OutcomeDead}, {"flaky", 2, canary.OutcomeDelivered}}
	if !slices.Equal(got, want) {
		t.Errorf("attempt log = %v, want %v", got, want)
	}
	if !log.Attempts[1].RetryAt.Equal(retryAt) || log.Attempts[1].Status != 503 {
		t.Errorf("retry attempt = %+v", log.Attempts[1])
	}
	states := map[string]canary.DeliveryState{}
	for _, d := range log.Deliveries {
		states[d.Target] = d.State
	}
	if states["ok"] != canary.DeliveryDelivered || states["flaky"] != canary.DeliveryDelivered || states["gone"] != canary.DeliveryDead {
		t.Errorf("states = %v", states)
	}
	dead, err := o.Dead(ctx, 0)
	must(t, err)
	if len(dead) != 1 || dead[0].ID != "n/gone" {
		t.Errorf("dead = %+v, want [n/gone]", dead)
	}
	// Nothing is due any more.
	if cs := claimAll(t, o, "w", T0.Add(24*time.Hour), time.Minute); len(cs) != 0 {
		t.Errorf("claimed finished deliveries %v", ids(cs))
	}
}

func testFenced(t *testing.T, o canary.Outbox) {
	ctx := t.Context()
	must(t, o.Enqueue(ctx, Notification("n", T0), []string{"t"}))
	old := claimAll(t, o, "slow", T0, time.Minute)
	if len(old) != 1 {
		t.Fatalf("claimed %v", ids(old))
	}
	// The lease lapses; another worker claims and delivers.
	fresh := claimAll(t, o, "fast", T0.Add(time.Minute), time.Minute)
	if len(fresh) != 1 {
		t.Fatalf("re-claimed %v", ids(fresh))
	}
	// The slow worker's late record is refused and logs nothing.
	_, err := o.Record(ctx, old[0], attempt(T0.Add(61*time.Second), canary.OutcomeRetry, T0.Add(time.Hour)))
	wantErr(t, err, canary.ErrLeaseLost)
	d, err := o.Record(ctx, fresh[0], attempt(T0.Add(62*time.Second), canary.OutcomeDelivered, time.Time{}))
	must(t, err)
	if d.State != canary.DeliveryDelivered || d.Attempts != 1 {
		t.Errorf("delivery = %+v", d)
	}
	// Recording twice under one claim is refused too.
	_, err = o.Record(ctx, fresh[0], attempt(T0.Add(63*time.Second), canary.OutcomeDelivered, time.Time{}))
	wantErr(t, err, canary.ErrLeaseLost)
	// A claim with a forged owner is refused.
	forged := fresh[0]
	forged.Owner = "someone-else"
	_, err = o.Record(ctx, forged, attempt(T0.Add(64*time.Second), canary.OutcomeDelivered, time.Time{}))
	wantErr(t, err, canary.ErrLeaseLost)
	log, err := o.Notification(ctx, "n")
	must(t, err)
	if len(log.Attempts) != 1 || log.Attempts[0].Outcome != canary.OutcomeDelivered {
		t.Errorf("attempt log = %+v, want the one delivered attempt", log.Attempts)
	}
}

func testRedrive(t *testing.T, o canary.Outbox) {
	ctx := t.Context()
	must(t, o.Enqueue(ctx, Notification("n", T0), []string{"t", "u"}))
	cs := claimAll(t, o, "w", T0, time.Minute)
	if len(cs) != 2 {
		t.Fatalf("claimed %v", ids(cs))
	}
	_, err := o.Record(ctx, cs[0], attempt(T0, canary.OutcomeDead, time.Time{}))
	must(t, err)
	_, err = o.Record(ctx, cs[1], attempt(T0, canary.OutcomeDelivered, time.Time{}))
	must(t, err)
	_, err = o.Redrive(ctx, "n/u", T0)
	wantErr(t, err, canary.ErrConflict)
	at := T0.Add(time.Hour)
	d, err := o.Redrive(ctx, "n/t", at)
	must(t, err)
	if d.State != canary.DeliveryPending || d.Attempts != 0 || !d.NextAt.Equal(at) {
		t.Errorf("redriven = %+v", d)
	}
	if dead, _ := o.Dead(ctx, 0); len(dead) != 0 {
		t.Errorf("dead after redrive = %+v", dead)
	}
	_, err = o.Redrive(ctx, "n/t", at)
	wantErr(t, err, canary.ErrConflict)
	if cs := claimAll(t, o, "w", at.Add(-time.Millisecond), time.Minute); len(cs) != 0 {
		t.Fatalf("claimed %v before the redrive time", ids(cs))
	}
	cs = claimAll(t, o, "w", at, time.Minute)
	if got := ids(cs); !slices.Equal(got, []string{"n/t"}) {
		t.Fatalf("claim after redrive = %v", got)
	}
	d, err = o.Record(ctx, cs[0], attempt(at, canary.OutcomeDelivered, time.Time{}))
	must(t, err)
	if d.Attempts != 1 {
		t.Errorf("attempts after redrive = %d, want 1 (counted afresh)", d.Attempts)
	}
	log, err := o.Notification(ctx, "n")
	must(t, err)
	if len(log.Attempts) != 3 {
		t.Errorf("log = %+v, want all three attempts kept", log.Attempts)
	}
}

func testStats(t *testing.T, o canary.Outbox) {
	ctx := t.Context()
	st, err := o.Stats(ctx, T0)
	must(t, err)
	if st != (canary.OutboxStats{}) {
		t.Errorf("empty stats = %+v", st)
	}
	must(t, o.Enqueue(ctx, Notification("now", T0), []string{"a", "b", "c"}))
	must(t, o.Enqueue(ctx, Notification("later", T0.Add(time.Hour)), []string{"a"}))
	cs, err := o.Claim(ctx, "w", T0, time.Minute, 2)
	must(t, err)
	_, err = o.Record(ctx, cs[0], attempt(T0, canary.OutcomeDead, time.Time{}))
	must(t, err)
	// Now: one dead; one claimed (its lease runs); one due; one later.
	st, err = o.Stats(ctx, T0)
	must(t, err)
	if want := (canary.OutboxStats{Due: 1, Pending: 3, Dead: 1}); st != want {
		t.Errorf("stats = %+v, want %+v", st, want)
	}
	// After the lease lapses the claimed one is due again.
	st, err = o.Stats(ctx, T0.Add(time.Minute))
	must(t, err)
	if want := (canary.OutboxStats{Due: 2, Pending: 3, Dead: 1}); st != want {
		t.Errorf("stats after the lease = %+v, want %+v", st, want)
	}
}

func testListing(t *testing.T, o canary.Outbox) {
	ctx := t.Context()
	var want []string
	// Several per millisecond, to page across ties.
	for i := range 23 {
		id := fmt.Sprintf("n%02d", i)
		must(t, o.Enqueue(ctx, Notification(id, T0.Add(time.Duration(i/3)*time.Millisecond)), []string{"t"}))
		want = append(want, id)
	}
	slices.SortFunc(want, func(a, b string) int {
		var ia, ib int
		fmt.Sscanf(a, "n%d", &ia)
		fmt.Sscanf(b, "n%d", &ib)
		if ia/3 != ib/3 {
			return ib/3 - ia/3
		}
		switch {
		case a > b:
			return -1
		case a < b:
			return 1
		}
		return 0
	})
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		p, err := o.Notifications(ctx, canary.NotificationQuery{Limit: 4, Cursor: cursor})
		must(t, err)
		for _, n := range p.Notifications {
			got = append(got, n.Notification.ID)
			if len(n.Deliveries) != 1 || n.Deliveries[0].Target != "t" {
				t.Errorf("listed %s with deliveries %+v", n.Notification.ID, n.Deliveries)
			}
			if len(n.Attempts) != 0 {
				t.Errorf("listed %s with attempts", n.Notification.ID)
			}
		}
		if p.Next == "" {
			break
		}
		if len(p.Notifications) != 4 {
			t.Errorf("a middle page has %d entries, want 4", len(p.Notifications))
		}
		cursor = p.Next
	}
	if !slices.Equal(got, want) {
		t.Errorf("listing = %v\nwant      %v", got, want)
	}
	p, err := o.Notifications(ctx, canary.NotificationQuery{})
	must(t, err)
	if len(p.Notifications) != 23 || p.Next != "" {
		t.Errorf("default page has %d entries and next %q", len(p.Notifications), p.Next)
	}
}

func testPrune(t *testing.T, o canary.Outbox) {
	ctx := t.Context()
	must(t, o.Enqueue(ctx, Notification("old-done", T0), []string{"a", "b"}))
	must(t, o.Enqueue(ctx, Notification("old-pending", T0.Add(time.Second)), []string{"a"}))
	must(t, o.Enqueue(ctx, Notification("new-done", T0.Add(time.Hour)), []string{"a"}))
	cs := claimAll(t, o, "w", T0.Add(time.Hour), time.Minute)
	for _, c := range cs {
		outcome := canary.OutcomeDelivered
		switch c.Delivery.ID {
		case "old-pending/a":
			_, err := o.Record(ctx, c, attempt(T0.Add(time.Hour), canary.OutcomeRetry, T0.Add(2*time.Hour)))
			must(t, err)
			continue
		case "old-done/b":
			outcome = canary.OutcomeDead
		}
		_, err := o.Record(ctx, c, attempt(T0.Add(time.Hour), outcome, time.Time{}))
		must(t, err)
	}
	n, err := o.Prune(ctx, T0.Add(time.Minute), 100)
	must(t, err)
	if n != 1 {
		t.Errorf("pruned %d, want 1 (only old-done has ended and is old)", n)
	}
	_, err = o.Notification(ctx, "old-done")
	wantErr(t, err, canary.ErrNotFound)
	for _, id := range []string{"old-pending", "new-done"} {
		if _, err := o.Notification(ctx, id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
	if dead, _ := o.Dead(ctx, 0); len(dead) != 0 {
		t.Errorf("dead list after pruning its notification = %+v", dead)
	}
	if st, _ := o.Stats(ctx, T0.Add(3*time.Hour)); st.Dead != 0 || st.Pending != 1 {
		t.Errorf("stats after prune = %+v", st)
	}
}

// testConcurrent runs workers that claim and deliver in parallel, with
// leases short enough to lapse: every delivery ends delivered, and each
// accepted record belongs to the claim current at the time.
func testConcurrent(t *testing.T, o canary.Outbox) {
	ctx := t.Context()
	const notifications, targets, workers = 30, 2, 6
	for i := range notifications {
		must(t, o.Enqueue(ctx, Notification(fmt.Sprintf("c%02d", i), T0), []string{"a", "b"}[:targets]))
	}
	var clock atomic.Int64 // milliseconds after T0, advanced by every claim
	var mu sync.Mutex
	delivered := map[string]int{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			owner := fmt.Sprintf("w%d", w)
			for range 400 {
				now := T0.Add(time.Duration(clock.Add(7)) * time.Millisecond)
				cs, err := o.Claim(ctx, owner, now, 50*time.Millisecond, 3)
				if err != nil {
					t.Error(err)
					return
				}
				for _, c := range cs {
					d, err := o.Record(ctx, c, attempt(now, canary.OutcomeDelivered, time.Time{}))
					switch {
					case errors.Is(err, canary.ErrLeaseLost):
						continue
					case err != nil:
						t.Error(err)
						return
					}
					mu.Lock()
					delivered[d.ID]++
					mu.Unlock()
				}
				mu.Lock()
				done := len(delivered) == notifications*targets
				mu.Unlock()
				if done {
					return
				}
			}
		})
	}
	wg.Wait()
	if len(delivered) != notifications*targets {
		t.Fatalf("delivered %d of %d", len(delivered), notifications*targets)
	}
	for id, n := range delivered {
		if n != 1 {
			t.Errorf("%s recorded as delivered %d times", id, n)
		}
	}
	st, err := o.Stats(ctx, T0.Add(time.Hour))
	must(t, err)
	if st.Pending != 0 || st.Due != 0 {
		t.Errorf("stats after delivering everything = %+v", st)
	}
}
