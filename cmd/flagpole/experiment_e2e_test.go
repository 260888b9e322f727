package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/redis/redistest"
	"github.com/flagpole/flagpole/sdk"
)

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

// The simulated population of TestExperimentEndToEnd.
const (
	xpUsers      = 20_000
	xpOFREPShare = 2   // every other user is evaluated over OFREP, the rest in process
	xpEarlyEvery = 40  // user i with i%40 == 1 (OFREP) bought before the experiment started
	xpGhosts     = 200 // users who buy but are never evaluated
	xpWorkers    = 4   // concurrent OFREP clients
)

// xpUser is one simulated user: where it is evaluated, its draw for the
// purchase and the amount, and the variant it was served.
type xpUser struct {
	key     string
	sdk     bool    // evaluated by the Go SDK in process, else over OFREP
	u       float64 // buys when u < the arm's conversion rate
	amount  float64
	variant string
}

// bought reports whether u buys, at the planted conversion rate of its arm.
func (u *xpUser) bought() bool {
	p := 0.10
	if u.variant == "treatment" {
		p = 0.12
	}
	return u.u < p
}

// dupSDK and dupOFREP are users evaluated twice (their exposure is
// de-duplicated by the SDK's hook and by the server's recorder);
// bannerOFREP users also evaluate a flag in no experiment (no exposure).
func dupSDK(i int) bool      { return i%10 == 2 }
func dupOFREP(i int) bool    { return i%10 == 3 }
func bannerOFREP(i int) bool { return i%10 == 5 }
func early(i int) bool       { return i%xpEarlyEvery == 1 }

// TestExperimentEndToEnd runs issue 7's end-to-end test against the real
// `flagpole serve` binary on a real redis-server. The experiment is created
// and started through the CLI binary; 20,000 users are evaluated, half in
// process by the Go SDK (exposures from its hook, purchases through Track)
// and half over OFREP (exposures recorded by the server, purchases sent to
// the events endpoint), buying with 10% probability in the control and 12%
// in the treatment. Some purchases must not count: 500 users bought before
// their exposure and 200 were never exposed. The results endpoint then
// shows every user in its arm, only the counted purchases, no crossovers,
// no sample ratio mismatch, the planted lift inside its interval and the
// recommendation to ship; the CLI's table says so, results.svg is XML, and
// /metrics accounts for every exposure and event (recorded, de-duplicated,
// stored, folded) with the consumer caught up. Shipping through the CLI
// then serves everyone the treatment.
func TestExperimentEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	rs := redistest.Start(t)
	// Gauges every 500ms rather than 15s, so /metrics is checked without a long wait.
	srv := startServe(t, []string{envAdminKey + "=" + testAdminKey, envExperimentMetricsEvery + "=500ms"}, "--redis", rs.URL())
	srv.waitReady()
	sdkKey := setupEnv(t, srv, "prod", e2eFlags)

	file := filepath.Join(t.TempDir(), "checkout-test.json")
	if err := os.WriteFile(file, []byte(e2eExperiment), 0o600); err != nil {
		t.Fatal(err)
	}
	srv.cli(testAdminKey, "experiment", "create", "-e", "prod", "-f", file).
		expect(t, 0, []string{"experiment checkout-test created (draft, version 1)"}, nil)
	srv.cli(testAdminKey, "experiment", "start", "checkout-test", "-e", "prod", "--reason", "e2e").
		expect(t, 0, []string{"experiment checkout-test started (running"}, nil)
	xpURL := srv.url + "/api/v1/environments/prod/experiments/checkout-test"
	var started experiments.Experiment
	if st, b := httpDo(t, http.MethodGet, xpURL, testAdminKey, ""); st != http.StatusOK || json.Unmarshal(b, &started) != nil || started.StartedAt == nil {
		t.Fatalf("GET the experiment: %d %s", st, b)
	}

	app := newSDKApp(t)
	if err := app.start(srv.url, sdkKey, "prod", sdk.WithEventFlush(100*time.Millisecond, 1000), sdk.WithMaxPendingEvents(100_000)); err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(20, 26))
	users := make([]xpUser, xpUsers)
	for i := range users {
		users[i] = xpUser{key: fmt.Sprintf("user-%05d", i), sdk: i%xpOFREPShare == 0, u: rng.Float64(), amount: 20 + 60*rng.Float64()}
	}

	// Purchases that must not count: before the experiment started (so
	// before the buyer's exposure by more than experiments.ExposureGrace
	// allows for clock skew: the buyers are evaluated seconds later, which
	// is inside the grace), and by users never exposed.
	var uncounted []json.RawMessage
	at := started.StartedAt.Add(-time.Millisecond).UTC().Format(time.RFC3339Nano)
	for i := range users {
		if !users[i].sdk && early(i) {
			uncounted = append(uncounted, purchaseEvent(users[i].key, 50, at))
		}
	}
	for g := range xpGhosts {
		uncounted = append(uncounted, purchaseEvent(fmt.Sprintf("ghost-%03d", g), 50, ""))
	}
	if err := postEvents(srv.url, sdkKey, uncounted); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	wg.Go(func() { driveSDK(t, app, users) })
	for w := range xpWorkers {
		wg.Go(func() { driveOFREP(t, srv.url, sdkKey, users, w) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	served, bought := map[string]int64{}, map[string]int64{}
	var dups, sdkDups int
	for i := range users {
		u := &users[i]
		served[u.variant]++
		if u.bought() {
			bought[u.variant]++
		}
		switch {
		case !u.sdk && dupOFREP(i):
			dups++
		case u.sdk && dupSDK(i):
			sdkDups++
		}
	}
	if served["control"]+served["treatment"] != xpUsers || served["control"] == 0 || served["treatment"] == 0 {
		t.Fatalf("variants served %v", served)
	}
	purchases := bought["control"] + bought["treatment"]

	// Wait until the consumer has folded every exposure and event sent,
	// then read the results endpoint once.
	// The purchases stamped before the start are ignored by the consumer
	// (kind "ignored"); every other event is folded (kind "event").
	tracked := purchases + int64(len(uncounted))
	beforeStart := int64(len(uncounted) - xpGhosts)
	poll(t, 40*time.Second, 50*time.Millisecond, "every exposure and event folded", func() bool {
		fams := scrapeMetrics(t, srv.url)
		exp, _ := metricValue(fams, "flagpole_experiment_events_folded_total", map[string]string{"kind": "exposure"})
		evs, _ := metricValue(fams, "flagpole_experiment_events_folded_total", map[string]string{"kind": "event"})
		ign, _ := metricValue(fams, "flagpole_experiment_events_folded_total", map[string]string{"kind": "ignored"})
		return exp >= xpUsers && evs+ign >= float64(tracked)
	})
	t.Logf("folded %s after the start", time.Since(*started.StartedAt).Round(time.Millisecond))
	var res experiments.Results
	if st, b := httpDo(t, http.MethodGet, xpURL+"/results", testAdminKey, ""); st != http.StatusOK || json.Unmarshal(b, &res) != nil || len(res.Metrics) != 3 || len(res.Metrics[0].Comparisons) != 1 {
		t.Fatalf("results: %d %.1000s", st, b)
	}
	if res.Users != xpUsers {
		t.Errorf("results count %d users, %d were exposed", res.Users, xpUsers)
	}
	var armUsers int64
	for _, a := range res.Arms {
		armUsers += a.Users
		if a.Users != served[a.Variant] {
			t.Errorf("arm %s: %d users, %d were served it", a.Variant, a.Users, served[a.Variant])
		}
	}
	if armUsers != xpUsers || len(res.Arms) != 2 {
		t.Errorf("arms %+v hold %d users, want %d in 2 arms", res.Arms, armUsers, xpUsers)
	}
	for _, a := range res.Metrics[0].Arms {
		if a.Conversions != bought[a.Variant] {
			t.Errorf("purchase conversions in %s: %d, want %d (purchases before exposure or without one counted?)", a.Variant, a.Conversions, bought[a.Variant])
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

	// The CLI binary's table.
	table := srv.cli(testAdminKey, "experiment", "results", "checkout-test", "-e", "prod")
	table.expect(t, 0, []string{
		"Users: 20,000", "purchase goal treatment", "better", "Health: healthy", "no mismatch",
		"Crossovers: 0 users", "Recommendation: SHIP treatment",
	}, nil)
	t.Logf("results:\n%s", table.stdout)

	// The chart.
	checkSVG(t, xpURL+"/results.svg")

	// /metrics: every exposure and event accounted for, the consumer caught
	// up. The gauges are refreshed every 500ms (FLAGPOLE_EXPERIMENT_METRICS_EVERY).
	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"flagpole_exposures_total", map[string]string{"result": "recorded"}, xpUsers / 2},
		{"flagpole_exposures_total", map[string]string{"result": "deduplicated"}, float64(dups)},
		{"flagpole_exposures_total", map[string]string{"result": "dropped"}, 0},
		{"flagpole_exposures_total", map[string]string{"result": "failed"}, 0},
		{"flagpole_tracking_events_total", map[string]string{"type": "exposure", "result": "stored"}, xpUsers / 2},
		{"flagpole_tracking_events_total", map[string]string{"type": "track", "result": "stored"}, float64(tracked)},
		{"flagpole_experiment_events_folded_total", map[string]string{"kind": "exposure"}, xpUsers},
		{"flagpole_experiment_events_folded_total", map[string]string{"kind": "event"}, float64(tracked - beforeStart)},
		{"flagpole_experiment_events_folded_total", map[string]string{"kind": "ignored"}, float64(beforeStart)},
		{"flagpole_experiment_consumer_lag", map[string]string{"env": "prod"}, 0},
		{"flagpole_experiment_consumer_pending", map[string]string{"env": "prod"}, 0},
		{"flagpole_experiments", map[string]string{"status": "running", "health": "healthy"}, 1},
		{"flagpole_experiment_crossover_users", map[string]string{"env": "prod", "experiment": "checkout-test"}, 0},
	}
	var fams map[string]*dto.MetricFamily
	// On a timeout, the checks below say which value is off.
	_ = pollUntil(10*time.Second, 100*time.Millisecond, func() bool {
		fams = scrapeMetrics(t, srv.url)
		for _, w := range want[len(want)-4:] { // the gauges
			if got, ok := metricValue(fams, w.name, w.labels); !ok || got != w.value {
				return false
			}
		}
		return true
	})
	t.Logf("gauges refreshed %s after the start", time.Since(*started.StartedAt).Round(time.Millisecond))
	for _, w := range want {
		got, ok := metricValue(fams, w.name, w.labels)
		if !ok {
			t.Errorf("/metrics lacks %s %v", w.name, w.labels)
		} else if got != w.value {
			t.Errorf("%s %v = %v, want %v", w.name, w.labels, got, w.value)
		}
	}
	t.Logf("%d in-process users evaluated twice (one exposure each), %d over OFREP; %d purchases counted, %d not", sdkDups, dups, purchases, len(uncounted))

	// Ship through the CLI binary: everyone gets the treatment.
	srv.cli(testAdminKey, "experiment", "stop", "checkout-test", "-e", "prod", "--decision", "ship", "--variant", "treatment", "--reason", "e2e lift").
		expect(t, 0, []string{"experiment checkout-test stopped (stopped"}, nil)
	poll(t, 10*time.Second, 20*time.Millisecond, "everyone served the treatment", func() bool {
		st, b, err := tryCall(http.MethodPost, srv.url+"/ofrep/v1/evaluate/flags/checkout", sdkKey, `{"context":{"targetingKey":"someone-new"}}`)
		return err == nil && st == http.StatusOK && strings.Contains(string(b), `"variant":"treatment"`) && !strings.Contains(string(b), `"experiment"`)
	})
}

// driveSDK evaluates the in-process half of users through app (dupSDK ones
// twice, and a flag in no experiment once) and tracks their purchases.
func driveSDK(t *testing.T, app *sdkApp, users []xpUser) {
	for i := range users {
		u := &users[i]
		if !u.sdk {
			continue
		}
		ec := openfeature.NewEvaluationContext(u.key, nil)
		d, err := app.client.StringValueDetails(bgCtx, "checkout", "none", ec)
		if err != nil {
			t.Errorf("SDK evaluation of %s: %v", u.key, err)
			return
		}
		if dupSDK(i) {
			if again, _ := app.client.StringValueDetails(bgCtx, "checkout", "none", ec); again.Variant != d.Variant {
				t.Errorf("%s: variant %s then %s", u.key, d.Variant, again.Variant)
				return
			}
		}
		_, _ = app.client.BooleanValue(bgCtx, "banner", false, ec)
		u.variant = d.Variant
		if u.bought() {
			app.client.Track(bgCtx, "purchase", ec, openfeature.NewTrackingEventDetails(u.amount))
		}
	}
}

// driveOFREP evaluates worker w's share of the OFREP half of users
// (dupOFREP ones twice, bannerOFREP ones also on a flag in no experiment)
// and sends their purchases to the events endpoint in batches.
func driveOFREP(t *testing.T, url, key string, users []xpUser, w int) {
	var batch []json.RawMessage
	eval := func(flag, user string) (string, error) {
		st, b, err := tryCall(http.MethodPost, url+"/ofrep/v1/evaluate/flags/"+flag, key, `{"context":{"targetingKey":"`+user+`"}}`)
		var ev struct{ Variant string }
		if err == nil && (st != http.StatusOK || json.Unmarshal(b, &ev) != nil) {
			err = fmt.Errorf("HTTP %d %s", st, b)
		}
		return ev.Variant, err
	}
	for i := range users {
		u := &users[i]
		if u.sdk || (i/xpOFREPShare)%xpWorkers != w {
			continue
		}
		v, err := eval("checkout", u.key)
		if err == nil && dupOFREP(i) {
			var again string
			if again, err = eval("checkout", u.key); err == nil && again != v {
				err = fmt.Errorf("variant %s then %s", v, again)
			}
		}
		if err == nil && bannerOFREP(i) {
			_, err = eval("banner", u.key)
		}
		if err != nil {
			t.Errorf("OFREP evaluation of %s: %v", u.key, err)
			return
		}
		u.variant = v
		if u.bought() {
			batch = append(batch, purchaseEvent(u.key, u.amount, ""))
		}
		if len(batch) == 500 {
			if err := postEvents(url, key, batch); err != nil {
				t.Error(err)
				return
			}
			batch = batch[:0]
		}
	}
	if err := postEvents(url, key, batch); err != nil {
		t.Error(err)
	}
}

// purchaseEvent is a "purchase" tracking event of user worth amount, at
// the given RFC 3339 time or, when at is "", when the server receives it.
func purchaseEvent(user string, amount float64, at string) json.RawMessage {
	ev := map[string]any{"name": "purchase", "targetingKey": user, "value": amount}
	if at != "" {
		ev["time"] = at
	}
	b, _ := json.Marshal(ev)
	return b
}

// postEvents sends events (any number) to the events endpoint of prod in
// batches of at most 1000, each of which must be accepted whole.
func postEvents(url, key string, events []json.RawMessage) error {
	for len(events) > 0 {
		n := min(len(events), 1000)
		b, _ := json.Marshal(map[string]any{"events": events[:n]})
		st, body, err := tryCall(http.MethodPost, url+"/api/v1/environments/prod/events", key, string(b))
		if err == nil && st != http.StatusAccepted {
			err = fmt.Errorf("HTTP %d %s", st, body)
		}
		if err != nil {
			return fmt.Errorf("posting %d events: %w", n, err)
		}
		events = events[n:]
	}
	return nil
}

// checkSVG fetches the results chart and checks it is a well-formed SVG
// document naming the metrics.
func checkSVG(t *testing.T, url string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "image/svg+xml") {
		t.Fatalf("results.svg: %d %s %.200s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	dec := xml.NewDecoder(bytes.NewReader(body))
	var root string
	var text strings.Builder
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("results.svg is not well-formed XML: %v\n%.500s", err, body)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Local
			}
		case xml.CharData:
			text.Write(tok)
		}
	}
	if root != "svg" {
		t.Errorf("results.svg's root element is <%s>, want <svg>", root)
	}
	for _, m := range []string{"purchase", "revenue", "page-errors"} {
		if !strings.Contains(text.String(), m) {
			t.Errorf("results.svg does not name metric %s", m)
		}
	}
}

// scrapeMetrics fetches and parses url's /metrics.
func scrapeMetrics(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	st, body := httpDo(t, http.MethodGet, url+"/metrics", "", "")
	if st != http.StatusOK {
		t.Fatalf("/metrics: %d", st)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// metricValue is the value of the one sample of name whose labels include
// labels.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		match := 0
		for _, l := range m.GetLabel() {
			if v, ok := labels[l.GetName()]; ok && v == l.GetValue() {
				match++
			}
		}
		if match != len(labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		default:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// poll checks cond every interval until it holds, failing the test after d.
func poll(t *testing.T, d, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	if !pollUntil(d, interval, cond) {
		t.Fatalf("after %s: %s", d, what)
	}
}

// pollUntil checks cond every interval until it holds (true) or d passes (false).
func pollUntil(d, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
	return true
}
