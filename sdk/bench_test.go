package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"

	"github.com/flagpole/flagpole/api/ofrep"
	"github.com/flagpole/flagpole/api/stream"
	"github.com/flagpole/flagpole/flags"
)

const benchFlags = `{"flags": {
  "static": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
  "rules": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
    "targeting": {"if": [
      {"in": ["@example.com", {"var": "email"}]}, "on",
      {"==": [{"var": "plan"}, "enterprise"]}, "on",
      {"sem_ver": [{"var": "appVersion"}, ">=", "2.4.0"]}, "on",
      null]}}
}}`

// constProvider answers every boolean with true: the OpenFeature SDK's own
// cost around a provider that does no work.
type constProvider struct{ openfeature.NoopProvider }

func (constProvider) Metadata() openfeature.Metadata { return openfeature.Metadata{Name: "const"} }
func (constProvider) BooleanEvaluation(context.Context, string, bool, openfeature.FlattenedContext) openfeature.BoolResolutionDetail {
	return openfeature.BoolResolutionDetail{Value: true, ProviderResolutionDetail: openfeature.ProviderResolutionDetail{Reason: openfeature.StaticReason, Variant: "on"}}
}

// BenchmarkBooleanValue compares, for a static flag and a three-rule flag:
// the raw engine call; the provider's method; client.BooleanValue over a
// provider that does nothing (the go-sdk's overhead); client.BooleanValue
// in-process; and the same with the exposure hook recording (an exposure
// already seen in its window, the steady state).
func BenchmarkBooleanValue(b *testing.B) {
	for _, flag := range []string{"static", "rules"} {
		attrs := map[string]any{"email": "ann@corp.test", "plan": "team", "appVersion": "2.5.1"}
		flat := openfeature.FlattenedContext{"targetingKey": "user-1", "email": "ann@corp.test", "plan": "team", "appVersion": "2.5.1"}
		evalCtx := openfeature.NewEvaluationContext("user-1", attrs)

		b.Run(flag+"/engine", func(b *testing.B) {
			set, err := flags.Load([]byte(benchFlags))
			if err != nil {
				b.Fatal(err)
			}
			ctx := map[string]any(flat)
			for b.Loop() {
				if v, _ := set.Boolean(flag, false, ctx); !v {
					b.Fatal("false")
				}
			}
		})
		b.Run(flag+"/provider", func(b *testing.B) {
			p := offlineProvider(b)
			for b.Loop() {
				if d := p.BooleanEvaluation(bg, flag, false, flat); !d.Value {
					b.Fatal("false")
				}
			}
		})
		b.Run(flag+"/sdk-overhead", func(b *testing.B) {
			client := clientFor(b, constProvider{})
			for b.Loop() {
				if v, _ := client.BooleanValue(bg, flag, false, evalCtx); !v {
					b.Fatal("false")
				}
			}
		})
		b.Run(flag+"/client-in-process", func(b *testing.B) {
			client := clientFor(b, offlineProvider(b))
			for b.Loop() {
				if v, _ := client.BooleanValue(bg, flag, false, evalCtx); !v {
					b.Fatal("false")
				}
			}
		})
		b.Run(flag+"/client-in-process-exposures", func(b *testing.B) {
			// Exposures are recorded for flags that run an experiment.
			s := newFlagServer(b, strings.Replace(benchFlags, `{"flags": {`, `{"metadata": {"experiment": "bench"}, "flags": {`, 1))
			client := clientFor(b, NewProvider(fastOptions(s)...))
			for b.Loop() {
				if v, _ := client.BooleanValue(bg, flag, false, evalCtx); !v {
					b.Fatal("false")
				}
			}
		})
	}
}

// offlineProvider serves benchFlags from a bootstrap file.
func offlineProvider(b *testing.B) *Provider {
	path := b.TempDir() + "/flags.json"
	if err := writeFileAtomic(path, []byte(benchFlags)); err != nil {
		b.Fatal(err)
	}
	p := NewProvider(WithBootstrapFile(path))
	if err := p.Init(openfeature.EvaluationContext{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.Shutdown)
	return p
}

func clientFor(b *testing.B, p openfeature.FeatureProvider) *openfeature.Client {
	api := isolated.NewAPI()
	if err := api.SetProviderAndWait(bg, p); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = api.Shutdown(bg) })
	b.ReportAllocs()
	return api.NewClient()
}

// BenchmarkPropagation connects 1,000 in-process providers to one stream
// hub in this process, publishes one change per iteration, and reports the
// time until each provider has installed it and announced
// CONFIGURATION_CHANGED: p50, p99 and max over every provider and
// iteration. Sub-benchmarks vary the flag set's size, since each provider
// compiles the whole set: with 1,000 providers on 2 cores the figure is
// bound by 1,000 compilations; the single-provider case is what one
// application sees.
func BenchmarkPropagation(b *testing.B) {
	for _, c := range []struct{ providers, flags int }{{1000, 2}, {1000, 10}, {1000, 100}, {1, 100}} {
		b.Run(fmt.Sprintf("%d-providers/%d-flags", c.providers, c.flags), func(b *testing.B) {
			benchPropagation(b, c.providers, c.flags)
		})
	}
}

// propagationDoc is a flag set of flagCount flags in canonical JSON (as the
// server stores and streams it); on flips the first flag's default.
func propagationDoc(flagCount int, on bool) string {
	d, err := flags.Parse([]byte(propagationSource(flagCount, on)))
	if err != nil {
		panic(err)
	}
	out, err := json.Marshal(d)
	if err != nil {
		panic(err)
	}
	return string(out)
}

func propagationSource(flagCount int, on bool) string {
	var sb strings.Builder
	sb.WriteString(`{"flags":{`)
	for i := range flagCount {
		if i > 0 {
			sb.WriteByte(',')
		}
		def := "off"
		if i == 0 && on {
			def = "on"
		}
		switch i % 3 {
		case 0:
			fmt.Fprintf(&sb, `"f%d":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":%q}`, i, def)
		case 1:
			fmt.Fprintf(&sb, `"f%d":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"if":[{"in":[{"var":"email"},["a@x.io","b@x.io"]]},"on",null]}}`, i)
		default:
			fmt.Fprintf(&sb, `"f%d":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off","targeting":{"fractional":[["on",10],["off",90]]}}`, i)
		}
	}
	sb.WriteString(`}}`)
	return sb.String()
}

func benchPropagation(b *testing.B, providers, flagCount int) {
	s := newFlagServerHeartbeat(b, propagationDoc(flagCount, false), stream.DefaultHeartbeat)
	var (
		mu        sync.Mutex
		published time.Time
		latencies []time.Duration
		arrived   = make(chan struct{}, providers)
	)
	ps := make([]*Provider, providers)
	var wg sync.WaitGroup
	for i := range ps {
		ps[i] = NewProvider(fastOptions(s, WithExposureWindow(0), WithInitTimeout(time.Minute))...)
		wg.Go(func() {
			if err := ps[i].Init(openfeature.EvaluationContext{}); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
	stop := make(chan struct{})
	var drains sync.WaitGroup
	for _, p := range ps {
		drains.Go(func() {
			for {
				select {
				case ev := <-p.EventChannel():
					if ev.EventType == openfeature.ProviderConfigChange {
						mu.Lock()
						latencies = append(latencies, time.Since(published))
						mu.Unlock()
						arrived <- struct{}{}
					}
				case <-stop:
					return
				}
			}
		})
	}
	defer func() {
		close(stop)
		drains.Wait()
		var sd sync.WaitGroup
		for _, p := range ps {
			sd.Go(p.Shutdown)
		}
		sd.Wait()
	}()

	on := false
	b.ResetTimer()
	for b.Loop() {
		on = !on
		doc := propagationDoc(flagCount, on)
		s.setFlagsThen(doc, func() {
			mu.Lock()
			published = time.Now()
			mu.Unlock()
		})
		for range providers {
			select {
			case <-arrived:
			case <-time.After(30 * time.Second):
				b.Fatal("a change did not reach every provider within 30s")
			}
		}
	}
	b.StopTimer()
	slices.Sort(latencies)
	q := func(f float64) float64 {
		return float64(latencies[int(f*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1), "max-ms")
}

// BenchmarkApplyChange is what one in-process provider spends on a change
// event once the SSE message is read: decoding it, compiling the new flag
// set from the one it holds (only the changed flag is compiled again),
// swapping it in and working out the event. With N providers in one
// process a change costs N times this, spread over the cores.
func BenchmarkApplyChange(b *testing.B) {
	for _, n := range []int{2, 10, 100, 1000} {
		b.Run(fmt.Sprintf("%d-flags", n), func(b *testing.B) {
			p := NewProvider(WithURL("http://127.0.0.1:1"), WithSDKKey(testKey), WithEnvironment(testEnv))
			var msgs [2][]byte
			for i, on := range []bool{false, true} {
				data, err := json.Marshal(ofrep.StreamMessage{Environment: testEnv, Version: int64(i + 1), ETag: fmt.Sprintf(`"%d"`, i),
					Changed: []string{"f0"}, Flags: json.RawMessage(propagationDoc(n, on))})
				if err != nil {
					b.Fatal(err)
				}
				msgs[i] = data
			}
			if err := p.apply(msgs[0]); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 1
			for b.Loop() {
				if err := p.apply(msgs[i&1]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
