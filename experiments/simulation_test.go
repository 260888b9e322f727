package experiments

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/flagpole/flagpole/internal/stat"
)

// TestAAPeekingStaysWithinAlpha runs A/A experiments (no true effect) and
// looks at the results 20 times each as users arrive. In sequential mode the
// share of experiments that ever show a significant goal effect must stay at
// or below α; the same data read with the fixed-horizon test shows the
// inflation that peeking causes, which proves the simulation can tell.
func TestAAPeekingStaysWithinAlpha(t *testing.T) {
	const (
		experiments = 300
		looks       = 20
		perLook     = 100 // users per arm between looks: 2,000 per arm at the end
		p           = 0.2 // conversion rate in both arms
		alpha       = 0.05
	)
	seq := &Experiment{
		Key: "aa", FlagKey: "f", Control: "a", Treatments: []string{"b"},
		Metrics:  []Metric{{Key: "conv", Kind: KindConversion, Event: "e", Role: RoleGoal}},
		Analysis: Analysis{Mode: ModeSequential, Alpha: alpha},
	}
	fixed := seq.clone()
	fixed.Analysis.Mode = ModeFixed

	r := rand.New(rand.NewPCG(2024, 7))
	seqFP, fixedFP := 0, 0
	for range experiments {
		var a, b Stats
		seqHit, fixedHit := false, false
		for range looks {
			for range perLook {
				a.Add(bernoulli(r, p), 0)
				b.Add(bernoulli(r, p), 0)
			}
			obs := Observations{
				Users:   map[string]int64{"a": a.Users, "b": b.Users},
				Metrics: map[string]map[string]Stats{"conv": {"a": a, "b": b}},
			}
			if Analyze(seq, obs, t1).Metrics[0].Comparisons[0].Verdict != VerdictInconclusive {
				seqHit = true
			}
			if Analyze(&fixed, obs, t1).Metrics[0].Comparisons[0].Verdict != VerdictInconclusive {
				fixedHit = true
			}
		}
		if seqHit {
			seqFP++
		}
		if fixedHit {
			fixedFP++
		}
	}
	seqRate, fixedRate := float64(seqFP)/experiments, float64(fixedFP)/experiments
	t.Logf("false positive rate over %d looks: sequential %.3f, fixed-horizon %.3f", looks, seqRate, fixedRate)
	if seqRate > alpha {
		t.Errorf("sequential mode: %.3f of A/A experiments were called significant at some look, want ≤ α = %v", seqRate, alpha)
	}
	if fixedRate < 2*alpha {
		t.Errorf("fixed mode with peeking: false positive rate %.3f; expected well above α, so the simulation is not sensitive", fixedRate)
	}
}

// TestFixedIntervalCoverage checks that the fixed-horizon confidence
// intervals for the absolute and the relative (delta-method) effect cover
// the planted truth about 95% of the time, for a skewed revenue metric.
func TestFixedIntervalCoverage(t *testing.T) {
	const (
		reps  = 400
		n     = 1000
		lift  = 0.1
		mean0 = 20.0
	)
	r := rand.New(rand.NewPCG(99, 1))
	absHits, relHits := 0, 0
	for range reps {
		var c, tr Stats
		for range n {
			c.Add(r.ExpFloat64()*mean0, 0)
			tr.Add(r.ExpFloat64()*mean0*(1+lift), 0)
		}
		cs, _ := c.Summarize(false)
		ts, _ := tr.Summarize(false)
		d, v := AbsoluteEffect(cs, ts)
		ci, _ := WelchTest(d, v, WelchDF(cs, ts), 0.05)
		if ci.Lower <= mean0*lift && mean0*lift <= ci.Upper {
			absHits++
		}
		l, vl, _ := RelativeEffect(cs, ts)
		q := stat.StudentTQuantile(0.975, WelchDF(cs, ts))
		if l-q*math.Sqrt(vl) <= lift && lift <= l+q*math.Sqrt(vl) {
			relHits++
		}
	}
	// 95% ± 3 binomial standard errors (±3.3 points for 400 runs).
	for name, hits := range map[string]int{"absolute": absHits, "relative": relHits} {
		if cov := float64(hits) / reps; cov < 0.917 || cov > 0.983 {
			t.Errorf("%s interval coverage %.3f, want about 0.95", name, cov)
		}
	}
}

// TestPlantedSplitImbalanceRaisesSRM assigns users with the real hash and
// then drops 18% of the treatment's exposures (a logging bug that leaves a
// 55/45 split): the experiment must turn unhealthy. The untouched hash
// split must not.
func TestPlantedSplitImbalanceRaisesSRM(t *testing.T) {
	e := testExperiment()
	if err := e.Start(t0); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 5))
	clean := Observations{Users: map[string]int64{}}
	lossy := Observations{Users: map[string]int64{}}
	for i := range 20000 {
		a := e.Assign(fmt.Sprintf("visitor-%d", i))
		clean.Users[a.Variant]++
		if a.Variant == "on" && r.Float64() < 0.18 {
			continue // exposure lost
		}
		lossy.Users[a.Variant]++
	}
	ok := Analyze(e, clean, t1)
	if ok.Health.SRM.Mismatch || ok.Health.Status == HealthUnhealthy {
		t.Errorf("hash split %v flagged: %+v", clean.Users, ok.Health.SRM)
	}
	bad := Analyze(e, lossy, t1)
	share := float64(lossy.Users["off"]) / float64(lossy.Users["off"]+lossy.Users["on"])
	if share < 0.54 || share > 0.56 {
		t.Fatalf("planted split is %.3f, want about 0.55", share)
	}
	if !bad.Health.SRM.Mismatch || bad.Health.SRM.PValue >= SRMThreshold || bad.Recommendation.Action != ActionUnhealthy {
		t.Errorf("55/45 split %v not flagged: SRM %+v, recommendation %+v", lossy.Users, bad.Health.SRM, bad.Recommendation)
	}
}
