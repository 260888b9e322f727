package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flagpole/flagpole/api"
	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis"
	"github.com/flagpole/flagpole/redis/redistest"
	"github.com/flagpole/flagpole/sdk"
)

// experimentServer is the API in-process on a real redis-server, wired as
// serve wires it plus server-side exposures: the event log wrapped in an
// api.ExposureRecorder, and the experiment consumer folding the stream.
type experimentServer struct {
	url   string
	admin string
	sdk   string // an sdk key of "prod"
	store *redis.Store
	reg   *prometheus.Registry
}

func startExperimentServer(t *testing.T) *experimentServer {
	t.Helper()
	rs := redistest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	store, err := redis.Open(ctx, redis.Options{URL: rs.URL()})
	if err != nil {
		t.Fatal(err)
	}
	x := &experimentServer{store: store, reg: prometheus.NewRegistry()}
	newKey := func(role auth.Role, envs ...string) string {
		secret, hash := auth.NewSecret(role)
		if err := store.CreateKey(ctx, auth.Key{ID: auth.NewID(), Name: "e2e-" + string(role), Role: role, Envs: envs, Hash: hash, Prefix: secret[:12], CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		return secret
	}
	x.admin, x.sdk = newKey(auth.RoleAdmin), newKey(auth.RoleSDK, "prod")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	rec, err := api.NewExposureRecorder(store.EventLog(0), api.ExposureConfig{Registerer: x.reg, Logger: quiet, FlushInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := api.New(api.Config{
		Store: store, Keys: store, Flags: flags.NewService(store, nil), Logger: quiet, Registry: x.reg,
		Events: rec, Experiments: store,
	})
	if err != nil {
		t.Fatal(err)
	}
	consumer, err := store.ExperimentConsumer(redis.ConsumerOptions{Logger: quiet, Poll: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Run(ctx) })
	wg.Go(func() { rec.Run(ctx) })
	wg.Go(func() { _ = consumer.Run(ctx) })
	hs := httptest.NewServer(srv.Handler())
	x.url = hs.URL
	t.Cleanup(func() {
		hs.Close()
		cancel()
		wg.Wait()
		_ = store.Close()
	})
	eventually(t, 15*time.Second, "the API ready", srv.Ready)
	return x
}

// post sends a JSON body with key and returns the status and body.
func (x *experimentServer) post(t *testing.T, path, key string, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, x.url+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

const e2eFlags = `{"flags": {
  "checkout": {"state": "ENABLED", "variants": {"control": "one-step", "treatment": "two-step"}, "defaultVariant": "control"},
  "banner": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"}
}}`

const e2eExperiment = `{
  "key": "checkout-test",
  "flagKey": "checkout",
  "hypothesis": "The two-step checkout converts better.",
  "control": "control",
  "treatments": ["treatment"],
  "metrics": [
    {"key": "purchase", "kind": "conversion", "event": "purchase", "role": "goal"},
    {"key": "revenue", "kind": "sum", "event": "purchase", "role": "secondary"},
    {"key": "page-errors", "kind": "count", "event": "page_error", "role": "guardrail", "direction": "lower_is_better"}
  ],
  "analysis": {"tuningUsers": 20000}
}`

// TestExperimentEndToEnd: 20,000 users, half evaluated in-process by the Go
// SDK (exposures from its hook), half over OFREP (exposures recorded by
// the server), buy with 10% probability in the control and 12% in the
// treatment; the results show the lift within its interval, no sample
// ratio mismatch and the recommendation to ship, which the CLI then does.
func TestExperimentEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	x := startExperimentServer(t)
	ctx := context.Background()
	cli := map[string]string{envURL: x.url, envToken: x.admin, envEnv: "prod"}

	if code, body := x.post(t, "/api/v1/environments", x.admin, []byte(`{"name":"prod","flags":`+e2eFlags+`}`)); code != http.StatusCreated {
		t.Fatalf("create environment: %d %s", code, body)
	}
	file := filepath.Join(t.TempDir(), "checkout-test.json")
	if err := os.WriteFile(file, []byte(e2eExperiment), 0o600); err != nil {
		t.Fatal(err)
	}
	runCLI(t, cli, "experiment", "create", "-f", file).expect(t, 0, []string{"experiment checkout-test created (draft, version 1)"}, nil)
	runCLI(t, cli, "experiment", "start", "checkout-test", "--reason", "e2e").expect(t, 0, []string{"experiment checkout-test started (running"}, nil)

	app := newSDKApp(t)
	if err := app.start(x.url, x.sdk, "prod", sdk.WithEventFlush(100*time.Millisecond, 1000), sdk.WithMaxPendingEvents(100_000)); err != nil {
		t.Fatal(err)
	}

	const users = 20_000
	rng := rand.New(rand.NewPCG(20, 26))
	bought := map[string]int{} // purchases by variant
	served := map[string]int{} // users by variant
	var ofrepEvents []json.RawMessage
	flushOFREPEvents := func() {
		if len(ofrepEvents) == 0 {
			return
		}
		b, _ := json.Marshal(map[string]any{"events": ofrepEvents})
		if code, body := x.post(t, "/api/v1/environments/prod/events", x.sdk, b); code != http.StatusAccepted {
			t.Fatalf("events: %d %s", code, body)
		}
		ofrepEvents = ofrepEvents[:0]
	}
	for i := range users {
		key := fmt.Sprintf("user-%05d", i)
		var variant string
		if i%2 == 0 { // in-process
			d, err := app.client.StringValueDetails(ctx, "checkout", "none", openfeature.NewEvaluationContext(key, nil))
			if err != nil {
				t.Fatalf("SDK evaluation: %v", err)
			}
			_, _ = app.client.BooleanValue(ctx, "banner", false, openfeature.NewEvaluationContext(key, nil)) // no experiment: no exposure
			variant = d.Variant
		} else { // OFREP
			code, body := x.post(t, "/ofrep/v1/evaluate/flags/checkout", x.sdk, []byte(`{"context":{"targetingKey":"`+key+`"}}`))
			var ev struct{ Variant string }
			if code != http.StatusOK || json.Unmarshal(body, &ev) != nil {
				t.Fatalf("OFREP evaluation: %d %s", code, body)
			}
			variant = ev.Variant
		}
		served[variant]++
		p := 0.10
		if variant == "treatment" {
			p = 0.12
		}
		if rng.Float64() >= p {
			continue
		}
		bought[variant]++
		amount := 20 + 60*rng.Float64()
		if i%2 == 0 {
			app.client.Track(ctx, "purchase", openfeature.NewEvaluationContext(key, nil), openfeature.NewTrackingEventDetails(amount))
		} else {
			ofrepEvents = append(ofrepEvents, json.RawMessage(fmt.Sprintf(`{"name":"purchase","targetingKey":%q,"value":%g}`, key, amount)))
			if len(ofrepEvents) == 1000 {
				flushOFREPEvents()
			}
		}
	}
	flushOFREPEvents()
	if served["control"]+served["treatment"] != users {
		t.Fatalf("variants served %v", served)
	}

	var res struct {
		experiments.Results
		GeneratedAt time.Time `json:"generatedAt"`
	}
	purchases := int64(bought["control"] + bought["treatment"])
	eventually(t, 45*time.Second, "every exposure and purchase folded", func() bool {
		out := runCLI(t, cli, "experiment", "results", "checkout-test", "-o", "json")
		if out.code != 0 || json.Unmarshal([]byte(out.stdout), &res) != nil || len(res.Metrics) == 0 {
			return false
		}
		conv := int64(0)
		for _, a := range res.Metrics[0].Arms {
			conv += a.Conversions
		}
		return res.Users == users && conv == purchases
	})

	for _, a := range res.Arms {
		if a.Users != int64(served[a.Variant]) {
			t.Errorf("arm %s: %d users, %d were served it", a.Variant, a.Users, served[a.Variant])
		}
	}
	if res.Crossovers != 0 || res.Health.SRM.Mismatch || res.Health.Status != experiments.HealthOK {
		t.Errorf("health %+v, crossovers %d: want healthy", res.Health, res.Crossovers)
	}
	c := res.Metrics[0].Comparisons[0]
	const planted = 0.12/0.10 - 1
	if c.Relative == nil || c.Relative.Lower > planted || c.Relative.Upper < planted || c.Relative.Lower <= 0 {
		t.Errorf("purchase lift %+v: want an interval above 0 holding the planted %.0f%%", c.Relative, planted*100)
	}
	if c.Verdict != experiments.VerdictBetter {
		t.Errorf("purchase verdict %s, want better", c.Verdict)
	}
	if rec := res.Recommendation; rec.Action != experiments.ActionShip || rec.Variant != "treatment" {
		t.Errorf("recommendation %+v, want ship treatment", rec)
	}
	if got := testutil.ToFloat64(exposureCounter(t, x.reg, "recorded")); got != users/2 {
		t.Errorf("server-side exposures recorded %v, want %d (one per OFREP user)", got, users/2)
	}

	table := runCLI(t, cli, "experiment", "results", "checkout-test")
	table.expect(t, 0, []string{"purchase goal treatment", "better", "Health: healthy", "no mismatch", "Recommendation: SHIP treatment"}, nil)
	t.Logf("results:\n%s", table.stdout)

	runCLI(t, cli, "experiment", "stop", "checkout-test", "--decision", "ship", "--variant", "treatment", "--reason", "e2e lift").
		expect(t, 0, []string{"experiment checkout-test stopped (stopped"}, nil)
	eventually(t, 10*time.Second, "everyone served the treatment", func() bool {
		code, body := x.post(t, "/ofrep/v1/evaluate/flags/checkout", x.sdk, []byte(`{"context":{"targetingKey":"someone-new"}}`))
		return code == http.StatusOK && strings.Contains(string(body), `"variant":"treatment"`) && !strings.Contains(string(body), `"experiment"`)
	})
}

// exposureCounter finds flagpole_exposures_total{result} in reg.
func exposureCounter(t *testing.T, reg *prometheus.Registry, result string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "flagpole_exposures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x"}, func() float64 { return m.GetCounter().GetValue() })
				}
			}
		}
	}
	t.Fatalf("no flagpole_exposures_total{result=%q}", result)
	return nil
}
