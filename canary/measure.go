package canary

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
)

// measureParallelism bounds the queries one measurement runs at once.
const measureParallelism = 4

// Measure runs every query of the template for both arms over the window
// (instant queries at w.End with {{ .window }} = w.End − w.Start; series as
// range queries over the window at the metric's step) and returns the
// observation for Judge.
//
// A source error, or an answer of the wrong shape (several series where one
// was expected, histogram buckets without an "le" label), becomes that
// metric's Measurement.Err — judged as an error, never a pass — and the
// other metrics are still measured. Measure itself fails only when the
// arguments do not fill the queries (a *ValidationError naming the field) or
// when src or t is nil.
func Measure(ctx context.Context, src MetricSource, t *Template, args Args, w Window) (Observation, error) {
	if src == nil || t == nil {
		return Observation{}, errors.New("canary: Measure needs a metric source and a template")
	}
	window := w.End.Sub(w.Start)
	obs := Observation{Window: w, ExpectedSplit: args.ExpectedSplit, Measurements: make([]Measurement, len(t.Metrics))}
	type job struct {
		metric int
		arm    Arm
		q      Queries
	}
	var jobs []job
	for i := range t.Metrics {
		obs.Measurements[i].Metric = t.Metrics[i].Name
		for _, arm := range []Arm{ArmBaseline, ArmCanary} {
			if arm == ArmBaseline && t.Metrics[i].Kind == KindThreshold {
				continue
			}
			q, err := t.RenderMetric(i, args, arm, window)
			if err != nil {
				return Observation{}, err
			}
			jobs = append(jobs, job{metric: i, arm: arm, q: q})
		}
	}
	var trafficQ [2]string
	measureTraffic := args.ExpectedSplit > 0 && t.SampleRatio.Query != ""
	if measureTraffic {
		for k, arm := range []Arm{ArmBaseline, ArmCanary} {
			q, err := t.RenderSampleRatio(args, arm, window)
			if err != nil {
				return Observation{}, err
			}
			trafficQ[k] = q
		}
	}

	var (
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, measureParallelism)
	)
	setErr := func(i int, err error) {
		mu.Lock()
		defer mu.Unlock()
		if obs.Measurements[i].Err == nil {
			obs.Measurements[i].Err = err
		}
	}
	for _, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			m := &t.Metrics[j.metric]
			data, err := measureArm(ctx, src, m, j.q, w)
			if err != nil {
				setErr(j.metric, fmt.Errorf("%s arm: %w", j.arm, err))
				return
			}
			mu.Lock()
			if j.arm == ArmCanary {
				obs.Measurements[j.metric].Canary = data
			} else {
				obs.Measurements[j.metric].Baseline = data
			}
			mu.Unlock()
		}()
	}
	var traffic [2]float64
	var trafficErr [2]error
	if measureTraffic {
		for k := range trafficQ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				v, empty, err := instantScalar(ctx, src, trafficQ[k], w)
				if err == nil && empty {
					v = 0
				}
				traffic[k], trafficErr[k] = v, err
			}()
		}
	}
	wg.Wait()
	if measureTraffic {
		obs.Traffic = &Traffic{Baseline: traffic[0], Canary: traffic[1], Source: "sampleRatio.query", Err: errors.Join(trafficErr[:]...)}
	}
	return obs, nil
}

// measureArm runs one arm's queries of one metric.
func measureArm(ctx context.Context, src MetricSource, m *Metric, q Queries, w Window) (ArmData, error) {
	switch m.Kind {
	case KindThreshold:
		v, empty, err := instantScalar(ctx, src, q.Query, w)
		if err != nil {
			return ArmData{}, fmt.Errorf("query: %w", err)
		}
		return ArmData{Value: v, Empty: empty}, nil
	case KindRatio:
		num, numEmpty, err := instantScalar(ctx, src, q.Numerator, w)
		if err != nil {
			return ArmData{}, fmt.Errorf("numerator: %w", err)
		}
		den, denEmpty, err := instantScalar(ctx, src, q.Denominator, w)
		if err != nil {
			return ArmData{}, fmt.Errorf("denominator: %w", err)
		}
		if numEmpty {
			// A counter with no events yet often has no series at all.
			num = 0
		}
		return ArmData{Count: num, Total: den, Empty: denEmpty}, nil
	case KindHistogram:
		els, err := src.Instant(ctx, q.Query, w.End)
		if err != nil {
			return ArmData{}, fmt.Errorf("query: %w", err)
		}
		if len(els) == 0 {
			return ArmData{Empty: true}, nil
		}
		bs := make([]Bucket, 0, len(els))
		for _, e := range els {
			le, ok := e.Labels["le"]
			if !ok {
				return ArmData{}, errors.New(`histogram query returned a series without an "le" label; query the _bucket series, e.g. sum by (le) (increase(x_bucket{...}[window]))`)
			}
			ub, err := strconv.ParseFloat(le, 64)
			if err != nil {
				return ArmData{}, fmt.Errorf("histogram bucket le=%q is not a number", le)
			}
			bs = append(bs, Bucket{UpperBound: ub, Count: e.Value})
		}
		return ArmData{Buckets: bs}, nil
	case KindSeries:
		ss, err := src.Range(ctx, q.Query, w.Start, w.End, m.step())
		if err != nil {
			return ArmData{}, fmt.Errorf("query: %w", err)
		}
		switch len(ss) {
		case 0:
			return ArmData{Empty: true}, nil
		case 1:
			if len(ss[0].Points) == 0 {
				return ArmData{Empty: true}, nil
			}
			return ArmData{Points: ss[0].Points}, nil
		}
		return ArmData{}, fmt.Errorf("query returned %d series; aggregate it to one per arm, e.g. avg(...)", len(ss))
	}
	return ArmData{}, fmt.Errorf("unknown kind %q", m.Kind)
}

// instantScalar runs an instant query expected to return at most one series.
func instantScalar(ctx context.Context, src MetricSource, query string, w Window) (v float64, empty bool, err error) {
	els, err := src.Instant(ctx, query, w.End)
	if err != nil {
		return 0, false, err
	}
	switch len(els) {
	case 0:
		return math.NaN(), true, nil
	case 1:
		return els[0].Value, false, nil
	}
	return 0, false, fmt.Errorf("query returned %d series; aggregate it to one per arm, e.g. sum(...)", len(els))
}
