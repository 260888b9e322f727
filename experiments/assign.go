package experiments

import (
	"encoding/json"

	"github.com/flagpole/flagpole/flags"
)

// Assignment is where one user falls in an experiment.
type Assignment struct {
	// Variant is the variant the flag serves the user: an arm for users in
	// the experiment, the control for everyone else.
	Variant string
	// InExperiment is false for users outside the traffic percentage and for
	// an empty targeting key; such users are served the control but never
	// counted in the results.
	InExperiment bool
}

// Bucketing keys. Two independent hashes decide a user's fate: one whether
// the user is in the experiment at all, one which arm. Keeping them
// independent means that raising traffic only adds users (those already in
// keep their arm) and that the arms are split in the configured proportions
// inside the experiment whatever the traffic.
const (
	armSep     = ":"         // salt + ":" + targetingKey
	trafficSep = ":traffic:" // salt + ":traffic:" + targetingKey
)

// bucketHash is MurmurHash3 x86 32-bit with seed 0 of the concatenated
// parts: the hash flagd's fractional operation uses.
func bucketHash(parts ...string) uint32 { return flags.Murmur3(parts...) }

// pick maps a 32-bit hash onto integer weights exactly as flagd's fractional
// does (its current "v2" bucketing): bucket = ⌊hash · Σw / 2³²⌋, and the
// first arm whose cumulative weight exceeds the bucket wins. It returns the
// index of the chosen weight.
func pick(hash uint32, weights []int) int {
	total := uint64(0)
	for _, w := range weights {
		total += uint64(w)
	}
	if total == 0 {
		return 0
	}
	bucket := (uint64(hash) * total) >> 32
	end := uint64(0)
	for i, w := range weights {
		end += uint64(w)
		if bucket < end {
			return i
		}
	}
	return len(weights) - 1
}

// Assign returns the variant the experiment's targeting (see
// [Experiment.Targeting]) serves for targetingKey and whether that user is in
// the experiment. It is the same computation flagd performs on the targeting
// JSON, so the exposure path can tell the control's users who are in the
// experiment from those who are not (the flag serves both the control variant):
//
//  1. An empty targeting key is never in the experiment.
//  2. Traffic below 100%: h = murmur3_32(salt + ":traffic:" + targetingKey);
//     the user is in if ⌊h · 10000 / 2³²⌋ < traffic in basis points.
//  3. The arm: h = murmur3_32(salt + ":" + targetingKey), mapped onto the
//     split weights (control first) by ⌊h · Σw / 2³²⌋.
//
// MurmurHash3 is x86 32-bit with seed 0 over the UTF-8 bytes. Assign does not
// allocate for keys up to 256 bytes and never fails.
func (e *Experiment) Assign(targetingKey string) Assignment {
	if targetingKey == "" {
		return Assignment{Variant: e.Control}
	}
	salt := e.Salt
	if salt == "" {
		salt = e.Key // as Defaults does
	}
	if bp := e.trafficBP(); bp < fullTrafficBP {
		in := pick(bucketHash(salt, trafficSep, targetingKey), []int{bp, trafficScale - bp}) == 0
		if !in {
			return Assignment{Variant: e.Control}
		}
	}
	var wbuf [MaxArms]int
	weights := wbuf[:0]
	if len(e.Weights) > 0 {
		weights = append(weights, e.Weights...)
	} else {
		for range 1 + len(e.Treatments) {
			weights = append(weights, 1)
		}
	}
	i := pick(bucketHash(salt, armSep, targetingKey), weights)
	if i == 0 || i > len(e.Treatments) {
		return Assignment{Variant: e.Control, InExperiment: true}
	}
	return Assignment{Variant: e.Treatments[i-1], InExperiment: true}
}

// Targeting returns the flagd targeting rule (JsonLogic) that serves the
// experiment, to be written as the flag's "targeting" while it runs.
//
// With 100% traffic it is
//
//	{"if": [{"var": "targetingKey"},
//	        {"fractional": [{"cat": [SALT, ":", {"var": "targetingKey"}]},
//	                        ["control", w0], ["treatment", w1], …]},
//	        "control"]}
//
// fractional's first argument is the bucketing expression, so assignment
// depends on the experiment's salt and the targeting key only (not on the
// flag key, which would make two experiments on one flag correlate). Below
// 100% a second, independent fractional decides who is in the experiment:
//
//	{"if": [{"and": [{"var": "targetingKey"},
//	                 {"==": [{"fractional": [{"cat": [SALT, ":traffic:", {"var": "targetingKey"}]},
//	                                         ["in", T], ["out", 10000-T]]}, "in"]}]},
//	        ARMS,
//	        "control"]}
//
// where T is the traffic in basis points. fractional here returns the string
// "in" or "out", which "==" compares: flagd accepts a fractional whose result
// is used as a condition rather than as a variant. Users outside get the
// control variant. flagd has no per-evaluation way to label a result "not in
// the experiment" short of an extra variant (which every client would then
// see), so the label comes from [Experiment.Assign], which recomputes the
// same hashes: exposures are recorded only for users it puts in the experiment.
//
// The error is a *ValidationError when the experiment is invalid.
func (e *Experiment) Targeting() (json.RawMessage, error) {
	c := e.clone()
	c.Defaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	tk := map[string]any{"var": "targetingKey"}
	arms := []any{map[string]any{"cat": []any{c.Salt, armSep, tk}}}
	weights := c.SplitWeights()
	for i, v := range c.Arms() {
		arms = append(arms, []any{v, weights[i]})
	}
	armRule := map[string]any{"fractional": arms}

	var cond any = tk
	if bp := c.trafficBP(); bp < fullTrafficBP {
		traffic := map[string]any{"fractional": []any{
			map[string]any{"cat": []any{c.Salt, trafficSep, tk}},
			[]any{"in", bp},
			[]any{"out", trafficScale - bp},
		}}
		cond = map[string]any{"and": []any{tk, map[string]any{"==": []any{traffic, "in"}}}}
	}
	rule := map[string]any{"if": []any{cond, armRule, c.Control}}
	return json.Marshal(rule)
}
