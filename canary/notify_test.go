package canary

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func fieldsOf(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v is not a *ValidationError", err)
	}
	var out []string
	for _, p := range ve.Problems {
		out = append(out, p.Field)
	}
	return out
}

func TestCheckNotification(t *testing.T) {
	good := Notification{ID: "analysis.completed.run-1", Event: EventAnalysisCompleted, Subject: "analysis/run-1", Payload: json.RawMessage(`{"a":1}`), Time: time.Unix(1, 0)}
	tests := []struct {
		name   string
		mutate func(n *Notification)
		want   string // the field named; "" for valid
	}{
		{"valid", func(*Notification) {}, ""},
		{"empty subject is fine", func(n *Notification) { n.Subject = "" }, ""},
		{"payload with spaces", func(n *Notification) { n.Payload = json.RawMessage(" {\"a\":1} ") }, ""},
		{"id with slash", func(n *Notification) { n.ID = "a/b" }, "id"},
		{"id too long", func(n *Notification) { n.ID = strings.Repeat("a", 129) }, "id"},
		{"id starting with a dot", func(n *Notification) { n.ID = ".a" }, "id"},
		{"upper-case event", func(n *Notification) { n.Event = "Analysis.completed" }, "event"},
		{"event with empty word", func(n *Notification) { n.Event = "analysis..completed" }, "event"},
		{"subject too long", func(n *Notification) { n.Subject = strings.Repeat("s", MaxSubjectBytes+1) }, "subject"},
		{"payload array", func(n *Notification) { n.Payload = json.RawMessage(`[]`) }, "payload"},
		{"payload string", func(n *Notification) { n.Payload = json.RawMessage(`"{}"`) }, "payload"},
		{"payload missing", func(n *Notification) { n.Payload = nil }, "payload"},
		{"no time", func(n *Notification) { n.Time = time.Time{} }, "time"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := good
			tc.mutate(&n)
			got := fieldsOf(t, CheckNotification(n))
			switch {
			case tc.want == "" && len(got) != 0:
				t.Errorf("problems %v, want none", got)
			case tc.want != "" && (len(got) != 1 || got[0] != tc.want):
				t.Errorf("problems %v, want exactly [%s]", got, tc.want)
			}
		})
	}
}

func TestCheckTargets(t *testing.T) {
	tests := []struct {
		name    string
		targets []string
		want    []string
	}{
		{"one", []string{"ops"}, nil},
		{"several", []string{"ops", "slack.alerts", "team_a-1"}, nil},
		{"none", nil, []string{"targets"}},
		{"upper case", []string{"Ops"}, []string{"targets[0]"}},
		{"repeated", []string{"a", "b", "a"}, []string{"targets[2]"}},
		{"too long", []string{strings.Repeat("a", 64)}, []string{"targets[0]"}},
		{"too many", make([]string, MaxTargets+1), nil}, // checked below
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := fieldsOf(t, CheckTargets(tc.targets))
			if tc.name == "too many" {
				if len(got) == 0 || got[0] != "targets" {
					t.Errorf("problems %v, want targets first", got)
				}
				return
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("problems %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCheckAttempt(t *testing.T) {
	claim := Claim{Delivery: Delivery{ID: "n/t"}, Owner: "w", Token: 3}
	now := time.Unix(100, 0)
	tests := []struct {
		name  string
		claim Claim
		a     Attempt
		want  []string
	}{
		{"delivered", claim, Attempt{At: now, Outcome: OutcomeDelivered, Status: 200}, nil},
		{"retry", claim, Attempt{At: now, Outcome: OutcomeRetry, RetryAt: now.Add(time.Second)}, nil},
		{"retry without time", claim, Attempt{At: now, Outcome: OutcomeRetry}, []string{"attempt.retryAt"}},
		{"dead with retry time", claim, Attempt{At: now, Outcome: OutcomeDead, RetryAt: now}, []string{"attempt.retryAt"}},
		{"unknown outcome", claim, Attempt{At: now, Outcome: "ok"}, []string{"attempt.outcome"}},
		{"no time", claim, Attempt{Outcome: OutcomeDelivered}, []string{"attempt.at"}},
		{"bad status", claim, Attempt{At: now, Outcome: OutcomeDelivered, Status: 1000}, []string{"attempt.status"}},
		{"no claim", Claim{}, Attempt{At: now, Outcome: OutcomeDelivered}, []string{"claim.delivery.id", "claim.owner", "claim.token"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := fieldsOf(t, CheckAttempt(tc.claim, tc.a))
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("problems %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDeliveryIDs(t *testing.T) {
	tests := []struct {
		id          string
		ntf, target string
		ok          bool
	}{
		{"n1/ops", "n1", "ops", true},
		{"analysis.completed.run-1/slack", "analysis.completed.run-1", "slack", true},
		{"n1", "", "", false},
		{"/ops", "", "", false},
		{"n1/", "", "", false},
		{"n 1/ops", "", "", false},
		{"n1/Ops", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			n, tg, ok := SplitDeliveryID(tc.id)
			if n != tc.ntf || tg != tc.target || ok != tc.ok {
				t.Errorf("SplitDeliveryID(%q) = %q, %q, %v; want %q, %q, %v", tc.id, n, tg, ok, tc.ntf, tc.target, tc.ok)
			}
			if tc.ok && DeliveryID(n, tg) != tc.id {
				t.Errorf("DeliveryID does not round-trip %q", tc.id)
			}
		})
	}
}

func TestNewNotificationID(t *testing.T) {
	a, b := NewNotificationID(EventRolloutFailed), NewNotificationID(EventRolloutFailed)
	if a == b || !strings.HasPrefix(a, "rollout.failed-") {
		t.Errorf("ids %q and %q", a, b)
	}
	if id := NewNotificationID("Bad Event"); !strings.HasPrefix(id, "n-") || !notificationIDRE.MatchString(id) {
		t.Errorf("id for a bad event = %q", id)
	}
	n := Notification{ID: a, Event: EventRolloutFailed, Payload: json.RawMessage(`{}`), Time: time.Unix(1, 0)}
	if err := CheckNotification(n); err != nil {
		t.Errorf("a fresh ID fails the check: %v", err)
	}
}
