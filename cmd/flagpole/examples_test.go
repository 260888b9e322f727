package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/flags"
)

// TestExampleFlags checks that examples/flags.yaml (what `make run` serves)
// is valid and that each example flag does what its comment says.
func TestExampleFlags(t *testing.T) {
	data, err := os.ReadFile("../../examples/flags.yaml")
	if err != nil {
		t.Fatal(err)
	}
	set, err := flags.Load(data)
	if err != nil {
		t.Fatalf("examples/flags.yaml does not load: %v", err)
	}
	type ctx = map[string]any
	tests := []struct {
		name    string
		flag    string
		ctx     ctx
		variant string
		reason  flags.Reason
	}{
		{"kill switch is off", "payments-kill-switch", ctx{"targetingKey": "u1"}, "off", flags.ReasonStatic},
		{"employees get the new checkout", "new-checkout", ctx{"targetingKey": "u1", "email": "ada@example.com"}, "on", flags.ReasonTargetingMatch},
		{"beta testers get the new checkout", "new-checkout", ctx{"targetingKey": "user-7", "email": "x@gmail.com"}, "on", flags.ReasonTargetingMatch},
		{"acme users see green", "banner-color", ctx{"targetingKey": "u1", "email": "bob@acme.com"}, "green", flags.ReasonTargetingMatch},
		{"globex users see red", "banner-color", ctx{"targetingKey": "u1", "email": "eve@globex.com"}, "red", flags.ReasonTargetingMatch},
		{"everyone else sees the default", "banner-color", ctx{"targetingKey": "u1", "email": "x@gmail.com"}, "blue", flags.ReasonDefault},
		{"app 2.3.0 gets the new onboarding", "mobile-onboarding-v2", ctx{"targetingKey": "u1", "appVersion": "2.3.0"}, "on", flags.ReasonTargetingMatch},
		{"app 2.2.9 does not", "mobile-onboarding-v2", ctx{"targetingKey": "u1", "appVersion": "2.2.9"}, "off", flags.ReasonTargetingMatch},
		{"pro plan gets large pages", "search-page-size", ctx{"targetingKey": "u1", "plan": "pro"}, "large", flags.ReasonTargetingMatch},
		{"free plan gets small pages", "search-page-size", ctx{"targetingKey": "u1", "plan": "free"}, "small", flags.ReasonTargetingMatch},
		{"employees are unlimited", "checkout-limits", ctx{"targetingKey": "u1", "email": "ada@example.com", "country": "XX"}, "unlimited", flags.ReasonTargetingMatch},
		{"strict country", "checkout-limits", ctx{"targetingKey": "u1", "email": "x@gmail.com", "country": "XX"}, "strict", flags.ReasonTargetingMatch},
		{"holiday theme is disabled", "holiday-theme", ctx{"targetingKey": "u1"}, "", flags.ReasonDisabled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := set.Evaluate(tc.flag, tc.ctx)
			if r.Variant != tc.variant || r.Reason != tc.reason {
				t.Errorf("%s: variant %q reason %s (%s), want %q %s", tc.flag, r.Variant, r.Reason, r.ErrorMessage, tc.variant, tc.reason)
			}
		})
	}

	rollouts := []struct {
		flag, variant string
		lo, hi        int // expected share of 2,000 users, in per mille
	}{
		{"new-checkout", "on", 70, 130},                  // 10%
		{"recommendations-algorithm", "ml-v2", 450, 550}, // 50%
	}
	for _, ro := range rollouts {
		t.Run("rollout "+ro.flag, func(t *testing.T) {
			const users = 2000
			n := 0
			for i := range users {
				r := set.Evaluate(ro.flag, ctx{"targetingKey": fmt.Sprintf("customer-%d", i), "email": "x@gmail.com"})
				if r.Variant == ro.variant {
					n++
				}
			}
			if pm := n * 1000 / users; pm < ro.lo || pm > ro.hi {
				t.Errorf("%s: %d‰ of users get %q, want %d‰..%d‰", ro.flag, pm, ro.variant, ro.lo, ro.hi)
			}
		})
	}
}

// TestExampleExperiment checks that examples/checkout-test.yaml is a valid
// experiment, read as `flagpole experiment create -f` reads it, and that it
// can run on its flag in examples/flags.yaml.
func TestExampleExperiment(t *testing.T) {
	flagsYAML, err := os.ReadFile("../../examples/flags.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := flags.Parse(flagsYAML)
	if err != nil {
		t.Fatalf("examples/flags.yaml: %v", err)
	}
	a := &app{}
	data, err := a.readDocument("../../examples/checkout-test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var e experiments.Experiment
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("examples/checkout-test.yaml: %v", err)
	}
	if err := e.Validate(); err != nil {
		t.Fatalf("examples/checkout-test.yaml: %v", describeExperimentError(err))
	}
	f, ok := doc.Flags[e.FlagKey]
	if !ok {
		t.Fatalf("examples/flags.yaml has no flag %q", e.FlagKey)
	}
	if err := e.CheckFlag(f); err != nil {
		t.Errorf("the experiment cannot run on %s: %v", e.FlagKey, err)
	}
	if len(f.Targeting) > 0 && string(f.Targeting) != "{}" {
		t.Errorf("%s has targeting of its own; the experiment writes it", e.FlagKey)
	}
}
