package experiments

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEventValidate(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	val := func(f float64) *float64 { return &f }
	cases := []struct {
		name string
		ev   Event
		want []string // "path: fragment"
	}{
		{"track", Event{Name: "checkout", TargetingKey: "u1", Value: val(9.5), Time: at}, nil},
		{"track without a subject", Event{Name: "page-view", Time: at}, nil},
		{"exposure", Event{Name: ExposureEvent, TargetingKey: "u1", FlagKey: "f", Variant: "on", Time: at}, nil},
		{"no name", Event{Time: at}, []string{"name: is required"}},
		{"long name", Event{Name: strings.Repeat("x", MaxEventNameLen+1), Time: at}, []string{"name: is longer"}},
		{"bad utf-8", Event{Name: "a\xffb", Time: at}, []string{"name: is not valid UTF-8"}},
		{"reserved", Event{Name: "$pageview", Time: at}, []string{"name: names starting with"}},
		{"exposure missing all", Event{Name: ExposureEvent, Time: at},
			[]string{"targetingKey: is required", "flagKey: is required", "variant: is required"}},
		{"flag on a track", Event{Name: "x", FlagKey: "f", Variant: "v", Time: at},
			[]string{"flagKey: is only allowed", "variant: is only allowed"}},
		{"NaN", Event{Name: "x", Value: val(math.NaN()), Time: at}, []string{"value: must be a finite"}},
		{"Inf", Event{Name: "x", Value: val(math.Inf(-1)), Time: at}, []string{"value: must be a finite"}},
		{"no time", Event{Name: "x"}, []string{"time: is required"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.ev.Validate()
			if len(got) != len(c.want) {
				t.Fatalf("Validate() = %v, want %d problems %v", got, len(c.want), c.want)
			}
			for i, w := range c.want {
				if !strings.HasPrefix(got[i].String(), w) {
					t.Errorf("problem %d = %q, want prefix %q", i, got[i], w)
				}
			}
		})
	}
}

func TestEventIsExposure(t *testing.T) {
	if !(&Event{Name: ExposureEvent}).IsExposure() || (&Event{Name: "checkout"}).IsExposure() {
		t.Error("IsExposure is wrong")
	}
}

func TestInvalidEventError(t *testing.T) {
	err := error(&InvalidEventError{Index: 3, Problems: []Problem{{Path: "name", Message: "is required"}}})
	if got := err.Error(); got != "experiments: event 3: name: is required" {
		t.Errorf("Error() = %q", got)
	}
	var ie *InvalidEventError
	if !errors.As(err, &ie) || ie.Index != 3 || !slices.Equal(ie.Problems, []Problem{{"name", "is required"}}) {
		t.Errorf("errors.As = %+v", ie)
	}
	if got := (&InvalidEventError{Index: 1}).Error(); got != "experiments: event 1 is invalid" {
		t.Errorf("Error() without problems = %q", got)
	}
}
