package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"

	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/redis"
	"github.com/flagpole/flagpole/redis/redistest"
	"github.com/flagpole/flagpole/sdk"
)

// End-to-end tests of the Go provider (package sdk) against the real
// binary and a real redis-server: readiness, live changes, outages,
// replicas, both evaluation modes, and tracking.

// sdkFlags covers every reason the engine produces (STATIC,
// TARGETING_MATCH, DEFAULT with and without a variant, DISABLED, ERROR)
// and every error code an evaluation can end in (FLAG_NOT_FOUND,
// TYPE_MISMATCH, GENERAL), with flag and flag-set metadata. The engine
// never produces PARSE_ERROR, TARGETING_KEY_MISSING or INVALID_CONTEXT.
const sdkFlags = `{
  "metadata": {"team": "web"},
  "flags": {
    "checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
      "metadata": {"owner": "payments", "weight": 3}},
    "banner": {"state": "ENABLED", "variants": {"a": "A", "b": "B"}, "defaultVariant": "b",
      "metadata": {"experiment": "banner-test"},
      "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "a", null]}},
    "code-default": {"state": "ENABLED", "variants": {"on": true, "off": false},
      "targeting": {"if": [{"==": [{"var": "plan"}, "pro"]}, "on", null]}},
    "disabled": {"state": "DISABLED", "variants": {"on": true, "off": false}, "defaultVariant": "on"},
    "dynamic": {"state": "ENABLED", "variants": {"x": "X"}, "defaultVariant": "x", "targeting": {"var": "pick"}},
    "number": {"state": "ENABLED", "variants": {"ten": 10, "pi": 3.14}, "defaultVariant": "ten",
      "targeting": {"if": [{"==": [{"var": "plan"}, "pi"]}, "pi", null]}},
    "config": {"state": "ENABLED", "variants": {"cfg": {"limit": 5, "tags": ["a", "b"]}}, "defaultVariant": "cfg"},
    "rollout": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"}, "defaultVariant": "red",
      "targeting": {"fractional": [["red", 50], ["blue", 50]]}}
  }
}`

// flagpoleOn starts `flagpole serve` on rs (at addr, or a free port when
// addr is "") and waits until it is ready.
func flagpoleOn(t *testing.T, rs *redistest.Server, addr string) *proc {
	t.Helper()
	args := []string{"--redis", rs.URL()}
	if addr != "" {
		args = append(args, "--addr", addr)
	}
	p := startServe(t, []string{envAdminKey + "=" + testAdminKey}, args...)
	p.waitReady()
	return p
}

// setupEnv creates environment env holding doc through p and returns a
// new sdk key of it.
func setupEnv(t *testing.T, p *proc, env, doc string) string {
	t.Helper()
	body := fmt.Sprintf(`{"name":%q,"flags":%s}`, env, doc)
	if st, b := httpDo(t, http.MethodPost, p.url+"/api/v1/environments", testAdminKey, body); st != 201 {
		t.Fatalf("creating %s: %d %s", env, st, b)
	}
	st, b := httpDo(t, http.MethodPost, p.url+"/api/v1/keys", testAdminKey, fmt.Sprintf(`{"name":"sdk-%s","role":"sdk","environments":[%q]}`, env, env))
	var key struct{ Secret string }
	if err := json.Unmarshal(b, &key); st != 201 || err != nil || key.Secret == "" {
		t.Fatalf("creating an sdk key: %d %s", st, b)
	}
	return key.Secret
}

// patchFlag changes a flag through p's API.
func patchFlag(t *testing.T, p *proc, env, key, patch string) {
	t.Helper()
	if st, b := httpDo(t, http.MethodPatch, p.url+"/api/v1/environments/"+env+"/flags/"+key, testAdminKey, patch); st != 200 {
		t.Fatalf("PATCH %s: %d %s", key, st, b)
	}
}

// sdkEvent is one provider event as an application handler saw it.
type sdkEvent struct {
	typ openfeature.EventType
	at  time.Time
	openfeature.EventDetails
}

// sdkApp is an application using the provider through an isolated
// OpenFeature API, recording every provider event.
type sdkApp struct {
	t        *testing.T
	api      *openfeature.EvaluationAPI
	client   *openfeature.Client
	provider *sdk.Provider
	events   chan sdkEvent
}

func newSDKApp(t *testing.T) *sdkApp {
	t.Helper()
	a := &sdkApp{t: t, api: isolated.NewAPI(), events: make(chan sdkEvent, 100)}
	for _, typ := range []openfeature.EventType{openfeature.ProviderReady, openfeature.ProviderConfigChange, openfeature.ProviderStale, openfeature.ProviderError} {
		cb := func(d openfeature.EventDetails) { a.events <- sdkEvent{typ: typ, at: time.Now(), EventDetails: d} }
		a.api.AddHandler(typ, &cb)
	}
	a.client = a.api.NewClient()
	t.Cleanup(func() { _ = a.api.Shutdown(context.Background()) })
	return a
}

// start sets a provider following env on url with key and waits for Init.
func (a *sdkApp) start(url, key, env string, extra ...sdk.Option) error {
	opts := append([]sdk.Option{
		sdk.WithURL(url), sdk.WithSDKKey(key), sdk.WithEnvironment(env),
		sdk.WithReconnectBackoff(20*time.Millisecond, 200*time.Millisecond),
		sdk.WithInitTimeout(10 * time.Second),
	}, extra...)
	a.provider = sdk.NewProvider(opts...)
	return a.api.SetProviderAndWait(context.Background(), a.provider)
}

// expect returns the next event, which must be of type typ, skipping
// those in skip.
func (a *sdkApp) expect(typ openfeature.EventType, skip ...openfeature.EventType) sdkEvent {
	a.t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case ev := <-a.events:
			if ev.typ == typ {
				return ev
			}
			if !slices.Contains(skip, ev.typ) {
				a.t.Fatalf("event %s (%q), want %s", ev.typ, ev.Message, typ)
			}
		case <-deadline:
			a.t.Fatalf("no %s event within 15s", typ)
			return sdkEvent{}
		}
	}
}

var bgCtx = context.Background()

// TestSDKLifecycle: the provider becomes READY; changes made through the
// API arrive as CONFIGURATION_CHANGED naming the flag, with the new value,
// within 100 ms (median of five); when the server dies the provider turns
// STALE and keeps answering with the last values; when it comes back
// (after a change made meanwhile through another replica) the provider is
// READY again with that change.
func TestSDKLifecycle(t *testing.T) {
	rs := redistest.Start(t)
	srv := flagpoleOn(t, rs, "")
	key := setupEnv(t, srv, "prod", sdkFlags)
	app := newSDKApp(t)
	if err := app.start(srv.url, key, "prod"); err != nil {
		t.Fatalf("SetProviderAndWait: %v", err)
	}
	app.expect(openfeature.ProviderReady)
	user := openfeature.NewEvaluationContext("u1", map[string]any{"plan": "pro"})
	if v, err := app.client.BooleanValue(bgCtx, "checkout", true, user); v || err != nil {
		t.Fatalf("checkout before any change = %v (%v), want false", v, err)
	}

	var lat []time.Duration
	want := false
	for i := range 5 {
		want = !want
		variant := map[bool]string{true: "on", false: "off"}[want]
		start := time.Now()
		patchFlag(t, srv, "prod", "checkout", `{"defaultVariant":"`+variant+`"}`)
		ev := app.expect(openfeature.ProviderConfigChange)
		v, err := app.client.BooleanValue(bgCtx, "checkout", !want, user)
		if !slices.Equal(ev.FlagChanges, []string{"checkout"}) || v != want || err != nil {
			t.Fatalf("change %d: flags %v, value %v (%v); want [checkout] and %v", i, ev.FlagChanges, v, err, want)
		}
		lat = append(lat, ev.at.Sub(start))
	}
	slices.Sort(lat)
	t.Logf("API write → CONFIGURATION_CHANGED: %v", lat)
	if lat[2] > 100*time.Millisecond {
		t.Errorf("median propagation %s, want ≤ 100ms (all: %v)", lat[2], lat)
	}

	// The server dies: STALE, and evaluations keep the last values.
	addr := strings.TrimPrefix(srv.url, "http://")
	srv.stopWith(syscall.SIGKILL)
	app.expect(openfeature.ProviderStale)
	for range 3 {
		if v, err := app.client.BooleanValue(bgCtx, "checkout", !want, user); v != want || err != nil {
			t.Fatalf("checkout while the server is down = %v (%v), want %v", v, err, want)
		}
		if v, _ := app.client.StringValue(bgCtx, "banner", "", user); v != "A" {
			t.Fatalf("banner while the server is down = %q, want A", v)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A change lands while the provider's server is down (through another
	// replica); the restarted server brings it.
	other := flagpoleOn(t, rs, "")
	patchFlag(t, other, "prod", "banner", `{"defaultVariant":"a","targeting":{}}`)
	srv = flagpoleOn(t, rs, addr)
	got := map[openfeature.EventType]sdkEvent{}
	for len(got) < 2 {
		select {
		case ev := <-app.events:
			if ev.typ != openfeature.ProviderStale { // reconnection attempts
				got[ev.typ] = ev
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("after the restart: events %v, want READY and CONFIGURATION_CHANGED", got)
		}
	}
	if ch, ok := got[openfeature.ProviderConfigChange]; !ok || !slices.Equal(ch.FlagChanges, []string{"banner"}) {
		t.Errorf("resync change: %+v", got)
	}
	if _, ok := got[openfeature.ProviderReady]; !ok {
		t.Errorf("no READY after the restart: %+v", got)
	}
	free := openfeature.NewEvaluationContext("u2", map[string]any{"plan": "free"})
	if v, _ := app.client.StringValue(bgCtx, "banner", "", free); v != "A" {
		t.Errorf("banner after the resync = %q, want A (the change made while down)", v)
	}
	// And it follows changes again.
	patchFlag(t, srv, "prod", "checkout", `{"state":"DISABLED"}`)
	if ev := app.expect(openfeature.ProviderConfigChange); !slices.Equal(ev.FlagChanges, []string{"checkout"}) {
		t.Errorf("after the restart: %v", ev.FlagChanges)
	}
	if d, _ := app.client.BooleanValueDetails(bgCtx, "checkout", true, user); d.Reason != openfeature.DisabledReason || !d.Value {
		t.Errorf("disabled checkout: %+v, want the caller's default and DISABLED", d)
	}
}

// TestSDKFollowsAnotherReplica: two servers on one Redis; the provider
// follows B; a change written on A reaches it.
func TestSDKFollowsAnotherReplica(t *testing.T) {
	rs := redistest.Start(t)
	a := flagpoleOn(t, rs, "")
	b := flagpoleOn(t, rs, "")
	key := setupEnv(t, a, "prod", sdkFlags)
	app := newSDKApp(t)
	if err := app.start(b.url, key, "prod"); err != nil {
		t.Fatalf("SetProviderAndWait on B: %v", err)
	}
	app.expect(openfeature.ProviderReady)
	start := time.Now()
	patchFlag(t, a, "prod", "number", `{"defaultVariant":"pi"}`)
	ev := app.expect(openfeature.ProviderConfigChange)
	v, err := app.client.FloatValue(bgCtx, "number", 0, openfeature.EvaluationContext{})
	if !slices.Equal(ev.FlagChanges, []string{"number"}) || v != 3.14 || err != nil {
		t.Fatalf("on B after a write on A: flags %v, value %v (%v)", ev.FlagChanges, v, err)
	}
	t.Logf("a write on A reached the provider on B in %s", ev.at.Sub(start))
}

// sdkCall is one OpenFeature client call and what it must resolve to.
type sdkCall struct {
	name       string
	kind       string // bool, string, int, float, object
	flag       string
	ctx        openfeature.EvaluationContext
	wantReason openfeature.Reason
	wantCode   openfeature.ErrorCode
}

func (c sdkCall) do(cl *openfeature.Client) (openfeature.InterfaceEvaluationDetails, error) {
	var d openfeature.InterfaceEvaluationDetails
	var err error
	switch c.kind {
	case "bool":
		var r openfeature.BooleanEvaluationDetails
		r, err = cl.BooleanValueDetails(bgCtx, c.flag, true, c.ctx)
		d = openfeature.InterfaceEvaluationDetails{Value: r.Value, EvaluationDetails: r.EvaluationDetails}
	case "string":
		var r openfeature.StringEvaluationDetails
		r, err = cl.StringValueDetails(bgCtx, c.flag, "dflt", c.ctx)
		d = openfeature.InterfaceEvaluationDetails{Value: r.Value, EvaluationDetails: r.EvaluationDetails}
	case "int":
		var r openfeature.IntEvaluationDetails
		r, err = cl.IntValueDetails(bgCtx, c.flag, -1, c.ctx)
		d = openfeature.InterfaceEvaluationDetails{Value: r.Value, EvaluationDetails: r.EvaluationDetails}
	case "float":
		var r openfeature.FloatEvaluationDetails
		r, err = cl.FloatValueDetails(bgCtx, c.flag, -1, c.ctx)
		d = openfeature.InterfaceEvaluationDetails{Value: r.Value, EvaluationDetails: r.EvaluationDetails}
	case "object":
		d, err = cl.ObjectValueDetails(bgCtx, c.flag, "dflt", c.ctx)
	}
	return d, err
}

// TestSDKModesAgree: the same OpenFeature calls give identical details in
// process and over OFREP, against the real server.
func TestSDKModesAgree(t *testing.T) {
	rs := redistest.Start(t)
	srv := flagpoleOn(t, rs, "")
	key := setupEnv(t, srv, "prod", sdkFlags)
	local, remote := newSDKApp(t), newSDKApp(t)
	if err := local.start(srv.url, key, "prod"); err != nil {
		t.Fatal(err)
	}
	if err := remote.start(srv.url, key, "prod", sdk.WithRemoteEvaluation()); err != nil {
		t.Fatal(err)
	}
	pro := func(plan string) openfeature.EvaluationContext {
		return openfeature.NewEvaluationContext("u1", map[string]any{"plan": plan})
	}
	calls := []sdkCall{
		{"static", "bool", "checkout", openfeature.EvaluationContext{}, openfeature.StaticReason, ""},
		{"targeting match", "string", "banner", pro("pro"), openfeature.TargetingMatchReason, ""},
		{"default variant", "string", "banner", pro("free"), openfeature.DefaultReason, ""},
		{"code default", "bool", "code-default", pro("free"), openfeature.DefaultReason, ""},
		{"code default, matched", "bool", "code-default", pro("pro"), openfeature.TargetingMatchReason, ""},
		{"disabled", "bool", "disabled", openfeature.EvaluationContext{}, openfeature.DisabledReason, ""},
		{"rule names no variant", "string", "dynamic", openfeature.NewTargetlessEvaluationContext(map[string]any{"pick": "nope"}), openfeature.ErrorReason, openfeature.GeneralCode},
		{"rule names a variant", "string", "dynamic", openfeature.NewTargetlessEvaluationContext(map[string]any{"pick": "x"}), openfeature.TargetingMatchReason, ""},
		{"unknown flag", "bool", "missing", openfeature.EvaluationContext{}, openfeature.ErrorReason, openfeature.FlagNotFoundCode},
		{"wrong type", "string", "checkout", openfeature.EvaluationContext{}, openfeature.ErrorReason, openfeature.TypeMismatchCode},
		{"object as bool", "bool", "config", openfeature.EvaluationContext{}, openfeature.ErrorReason, openfeature.TypeMismatchCode},
		{"int", "int", "number", openfeature.EvaluationContext{}, openfeature.DefaultReason, ""},
		{"int, not whole", "int", "number", pro("pi"), openfeature.ErrorReason, openfeature.TypeMismatchCode},
		{"float", "float", "number", pro("pi"), openfeature.TargetingMatchReason, ""},
		{"object", "object", "config", openfeature.EvaluationContext{}, openfeature.StaticReason, ""},
		{"fractional", "string", "rollout", openfeature.NewEvaluationContext("user-42", nil), openfeature.TargetingMatchReason, ""},
		{"fractional, other user", "string", "rollout", openfeature.NewEvaluationContext("user-7", nil), openfeature.TargetingMatchReason, ""},
	}
	reasons, codes, ran := map[openfeature.Reason]bool{}, map[openfeature.ErrorCode]bool{}, 0
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			ld, lerr := c.do(local.client)
			rd, rerr := c.do(remote.client)
			if ld.Reason != c.wantReason || ld.ErrorCode != c.wantCode || (lerr != nil) != (c.wantCode != "") {
				t.Errorf("in-process: reason %s code %q error %v, want %s %q", ld.Reason, ld.ErrorCode, lerr, c.wantReason, c.wantCode)
			}
			// Error messages are prose and differ (the server names the
			// environment); everything else must be identical.
			if c.wantCode != "" && (ld.ErrorMessage == "" || rd.ErrorMessage == "") {
				t.Errorf("an error message is missing: in-process %q, OFREP %q", ld.ErrorMessage, rd.ErrorMessage)
			}
			lm, rm := ld, rd
			lm.ErrorMessage, rm.ErrorMessage = "", ""
			if c.wantCode == "" {
				lm, rm = ld, rd
			}
			if !reflect.DeepEqual(lm, rm) || (lerr == nil) != (rerr == nil) {
				t.Errorf("modes differ:\n in-process %+v (%v)\n OFREP      %+v (%v)", ld, lerr, rd, rerr)
			}
			reasons[ld.Reason], codes[ld.ErrorCode] = true, true
			ran++
		})
	}
	if ran < len(calls) {
		return // some calls were filtered out with -run
	}
	for _, r := range []openfeature.Reason{openfeature.StaticReason, openfeature.TargetingMatchReason, openfeature.DefaultReason, openfeature.DisabledReason, openfeature.ErrorReason} {
		if !reasons[r] {
			t.Errorf("no call ended in reason %s", r)
		}
	}
	for _, c := range []openfeature.ErrorCode{openfeature.FlagNotFoundCode, openfeature.TypeMismatchCode, openfeature.GeneralCode} {
		if !codes[c] {
			t.Errorf("no call ended in error code %s", c)
		}
	}
	d, _ := remote.client.BooleanValueDetails(bgCtx, "checkout", true, openfeature.EvaluationContext{})
	if want := (openfeature.FlagMetadata{"team": "web", "owner": "payments", "weight": float64(3)}); !reflect.DeepEqual(d.FlagMetadata, want) {
		t.Errorf("metadata over OFREP %v, want %v", d.FlagMetadata, want)
	}
}

// TestSDKTrackingReachesRedis: Track calls and exposures recorded by the
// provider's hook arrive in the environment's Redis Stream.
func TestSDKTrackingReachesRedis(t *testing.T) {
	rs := redistest.Start(t)
	srv := flagpoleOn(t, rs, "")
	key := setupEnv(t, srv, "prod", sdkFlags)
	app := newSDKApp(t)
	if err := app.start(srv.url, key, "prod", sdk.WithEventFlush(50*time.Millisecond, 100), sdk.WithExposureWindow(time.Minute)); err != nil {
		t.Fatal(err)
	}
	u1 := openfeature.NewEvaluationContext("u1", map[string]any{"plan": "pro"})
	app.client.Track(bgCtx, "checkout", u1, openfeature.NewTrackingEventDetails(42.5).Add("currency", "EUR"))
	for range 3 { // de-duplicated: one exposure
		if v, _ := app.client.StringValue(bgCtx, "banner", "", u1); v != "A" {
			t.Fatalf("banner = %q", v)
		}
	}
	app.client.Track(bgCtx, "signup", openfeature.NewEvaluationContext("u2", nil), openfeature.TrackingEventDetails{})

	st, err := redis.Open(bgCtx, redis.Options{URL: rs.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var got []redis.StoredEvent
	eventually(t, 10*time.Second, "3 events in the Redis stream", func() bool {
		got, err = st.EventLog(0).Read(bgCtx, "prod", "", 100)
		return err == nil && len(got) >= 3
	})
	byName := map[string]experiments.Event{}
	for _, e := range got {
		byName[e.Name] = e.Event
	}
	if len(got) != 3 {
		t.Errorf("%d events, want 3: %+v", len(got), got)
	}
	if c := byName["checkout"]; c.TargetingKey != "u1" || c.Value == nil || *c.Value != 42.5 || c.Details["currency"] != "EUR" || c.Context["plan"] != "pro" {
		t.Errorf("checkout event: %+v", c)
	}
	if e := byName[experiments.ExposureEvent]; e.TargetingKey != "u1" || e.FlagKey != "banner" || e.Variant != "a" {
		t.Errorf("exposure: %+v", e)
	}
	if s := byName["signup"]; s.TargetingKey != "u2" || s.Value != nil {
		t.Errorf("signup event: %+v", s)
	}
	for _, e := range got {
		if time.Since(e.Time) > time.Minute || time.Since(e.Time) < 0 {
			t.Errorf("event %s at %s, not just now", e.Name, e.Time)
		}
	}
}
