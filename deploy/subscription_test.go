package deploy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/deploy"
)

func TestParseSubscriptions(t *testing.T) {
	env := map[string]string{"OPS_SECRET": "a-very-long-secret-value"}
	getenv := func(k string) string { return env[k] }
	tests := []struct {
		name string
		file string
		want []string // fields named by the error; nil: valid
	}{
		{"valid", `
webhooks:
  - name: ops
    url: https://hooks.example.com/flagpole
    secretEnv: OPS_SECRET
    events: [analysis.completed, rollout.*]
  - name: chat
    url: https://hooks.slack.com/services/T/B/X
    format: slack
`, nil},
		{"json", `{"webhooks":[{"name":"ops","url":"http://h","secret":"0123456789abcdef"}]}`, nil},
		{"empty file", ``, nil},
		{"unknown field", "webhooks:\n  - name: ops\n    url: http://h\n    secret: 0123456789abcdef\n    retries: 3\n", []string{""}},
		{"not yaml", "webhooks: [", []string{""}},
		{"missing name and url", "webhooks:\n  - secret: 0123456789abcdef\n", []string{"webhooks[0].name", "webhooks[0].url"}},
		{"bad url", "webhooks:\n  - {name: a, url: 'hooks.example.com', secret: 0123456789abcdef}\n", []string{"webhooks[0].url"}},
		{"url with password", "webhooks:\n  - {name: a, url: 'https://u:p@h/', secret: 0123456789abcdef}\n", []string{"webhooks[0].url"}},
		{"generic needs a secret", "webhooks:\n  - {name: a, url: 'https://h/'}\n", []string{"webhooks[0].secret"}},
		{"short secret", "webhooks:\n  - {name: a, url: 'https://h/', secret: short}\n", []string{"webhooks[0].secret"}},
		{"unset secretEnv", "webhooks:\n  - {name: a, url: 'https://h/', secretEnv: NOPE}\n", []string{"webhooks[0].secretEnv"}},
		{"both secrets", "webhooks:\n  - {name: a, url: 'https://h/', secret: 0123456789abcdef, secretEnv: OPS_SECRET}\n", []string{"webhooks[0].secretEnv"}},
		{"bad format", "webhooks:\n  - {name: a, url: 'https://h/', secret: 0123456789abcdef, format: teams}\n", []string{"webhooks[0].format"}},
		{"bad event filter", "webhooks:\n  - {name: a, url: 'https://h/', secret: 0123456789abcdef, events: ['rollout*']}\n", []string{"webhooks[0].events[0]"}},
		{"duplicate name", "webhooks:\n  - {name: a, url: 'https://h/', secret: 0123456789abcdef}\n  - {name: a, url: 'https://i/', secret: 0123456789abcdef}\n", []string{"webhooks[1].name"}},
		{"bad name", "webhooks:\n  - {name: 'Ops Team', url: 'https://h/', secret: 0123456789abcdef}\n", []string{"webhooks[0].name"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			subs, err := deploy.ParseSubscriptions([]byte(tc.file), getenv)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("ParseSubscriptions: %v", err)
				}
				return
			}
			var ve *canary.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("ParseSubscriptions = %v, %v; want a *canary.ValidationError", subs, err)
			}
			var got []string
			for _, p := range ve.Problems {
				got = append(got, p.Field)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("problems %v, want fields %v", ve.Problems, tc.want)
			}
		})
	}
	subs, err := deploy.ParseSubscriptions([]byte("webhooks:\n  - {name: ops, url: 'https://h/', secretEnv: OPS_SECRET}\n"), getenv)
	if err != nil || subs[0].Secret != env["OPS_SECRET"] || subs[0].Format != "" {
		t.Errorf("secretEnv not resolved: %+v, %v", subs, err)
	}
}

func TestSubscriptionWants(t *testing.T) {
	tests := []struct {
		events []string
		event  canary.EventType
		want   bool
	}{
		{nil, canary.EventAnalysisCompleted, true},
		{[]string{"*"}, canary.EventRolloutFailed, true},
		{[]string{"analysis.completed"}, canary.EventAnalysisCompleted, true},
		{[]string{"analysis.completed"}, canary.EventRolloutFailed, false},
		{[]string{"rollout.*"}, canary.EventRolloutFailed, true},
		{[]string{"rollout.*"}, canary.EventRolloutStep, true},
		{[]string{"rollout.*"}, "rollouts.x", false},
		{[]string{"rollout.*"}, "rollout", false},
		{[]string{"test", "rollout.failed"}, canary.EventTest, true},
	}
	for _, tc := range tests {
		s := deploy.Subscription{Events: tc.events}
		if got := s.Wants(tc.event); got != tc.want {
			t.Errorf("%v.Wants(%s) = %v, want %v", tc.events, tc.event, got, tc.want)
		}
	}
}
