package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExperimentConsumerOptions(t *testing.T) {
	cases := []struct {
		name  string
		value string
		want  time.Duration // 0: the consumer's default
		err   string
	}{
		{"unset: the default", "", 0, ""},
		{"milliseconds", "250ms", 250 * time.Millisecond, ""},
		{"minutes", "1m", time.Minute, ""},
		{"not a duration", "soon", 0, `FLAGPOLE_EXPERIMENT_METRICS_EVERY "soon": must be a positive duration`},
		{"no unit", "5", 0, `FLAGPOLE_EXPERIMENT_METRICS_EVERY "5": must be a positive duration`},
		{"zero", "0s", 0, `FLAGPOLE_EXPERIMENT_METRICS_EVERY "0s": must be a positive duration`},
		{"negative", "-1s", 0, `FLAGPOLE_EXPERIMENT_METRICS_EVERY "-1s": must be a positive duration`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := experimentConsumerOptions(envMap(map[string]string{envExperimentMetricsEvery: tc.value}))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.MetricsEvery != tc.want {
				t.Errorf("MetricsEvery = %v, want %v", o.MetricsEvery, tc.want)
			}
		})
	}
}

// TestServeBadExperimentMetricsEvery: serve refuses to start on a bad value
// and says which variable is wrong.
func TestServeBadExperimentMetricsEvery(t *testing.T) {
	r := runCLI(t, map[string]string{envExperimentMetricsEvery: "often"},
		"serve", "--addr", "127.0.0.1:0", "--data-dir", filepath.Join(t.TempDir(), "data"))
	r.expect(t, 1, nil, []string{`FLAGPOLE_EXPERIMENT_METRICS_EVERY "often": must be a positive duration such as 5s`})
}
