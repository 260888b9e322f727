// Package experiments is the pure core of Flagpole's A/B experiments: the
// experiment model and its lifecycle, deterministic assignment and the flagd
// targeting that serves it, per-arm sufficient statistics, and the
// statistics that judge the result. It does no I/O: storage, event
// ingestion and HTTP live in the adapters.
//
// # Model
//
// An [Experiment] runs on one flag: a control variant and one or more
// treatments, split by integer weights, with a traffic percentage (the users
// outside get the control and are not counted). Its [Metric]s are defined on
// tracking events: conversion, count, sum, mean and ratio, each a goal,
// secondary or guardrail metric with a direction and an optional cap.
// Lifecycle: draft → running → stopped (ship a variant, roll back, or no
// decision) → archived; see [Experiment.Start], [Experiment.Stop],
// [Experiment.Restart], [Experiment.Archive] and [Experiment.Update], which
// refuses changes that would bias a running experiment unless it restarts.
//
// # Assignment
//
// Users are bucketed with MurmurHash3 (x86, 32-bit, seed 0, implemented in
// this package) of the experiment's salt and the targeting key, mapped onto
// the weights as flagd's fractional operation does (see [Experiment.Assign]). [Experiment.Targeting] produces the
// flag's flagd targeting rule and [Experiment.Assign] recomputes it in Go, so
// the exposure path can tell users in the experiment from the others.
//
// # Statistics
//
// [Stats] holds users, sums, sums of squares, conversions and, for ratios,
// the denominator and cross-product sums of one metric in one arm; [Analyze]
// turns them into [Results]: absolute and relative effects (delta method),
// the Welch t-test, anytime-valid confidence sequences (the default mode),
// a Bayesian normal-prior analysis, sample ratio mismatch, Holm or
// Benjamini–Hochberg correction across goal metrics × treatments, one-sided
// uncorrected guardrails, the minimum detectable effect and a one-sentence
// recommendation. The distributions (normal, Student t, chi-square) are
// implemented here on top of the standard library.
package experiments
