package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/canarytest"
	"github.com/flagpole/flagpole/redis"
)

// countingStore counts the run reads that reach the store.
type countingStore struct {
	canary.Store
	runReads atomic.Int64
}

func (c *countingStore) Run(ctx context.Context, id string) (canary.StoredRun, error) {
	c.runReads.Add(1)
	return c.Store.Run(ctx, id)
}

// analysisHarness is a server with an in-memory analysis store.
type analysisHarness struct {
	*harness
	mem   *canarytest.Memory
	store *countingStore
}

func newAnalysisHarness(t testing.TB) *analysisHarness {
	t.Helper()
	mem := canarytest.NewMemory()
	cs := &countingStore{Store: mem}
	h := newHarness(t, func(c *Config) { c.Analyses = cs })
	return &analysisHarness{harness: h, mem: mem, store: cs}
}

const tplYAML = `name: checkout
description: error rate of the checkout service
args:
  - name: service
metrics:
  - name: error-rate
    kind: ratio
    numerator: sum(increase(errors_total{job="{{ .service }}", {{ .scope }}}[{{ .window }}]))
    denominator: sum(increase(requests_total{job="{{ .service }}", {{ .scope }}}[{{ .window }}]))
    margin: {relative: 0.2}
    critical: true
schedule:
  interval: 1m
  count: 5
`

func yamlBody(method, path, key, body string) req {
	return req{method: method, path: path, key: key, body: body, header: map[string]string{"Content-Type": "application/yaml"}}
}

// startOK starts an analysis of checkout and returns its ID.
func (h *analysisHarness) startOK(key string) string {
	h.t.Helper()
	r := h.do(req{method: "POST", path: "/api/v1/analyses", key: key,
		body: `{"template":"checkout","baselineScope":"track=\"stable\"","canaryScope":"track=\"canary\"","expectedSplit":0.1,"args":{"service":"checkout"}}`})
	if r.status != http.StatusCreated {
		h.t.Fatalf("start: %d %s", r.status, r.body)
	}
	id, _ := r.json(h.t)["id"].(string)
	return id
}

func TestAnalysisTemplatesCRUD(t *testing.T) {
	h := newAnalysisHarness(t)
	r := h.do(yamlBody("POST", "/api/v1/analysis-templates", h.admin, tplYAML))
	if r.status != http.StatusCreated || r.header.Get("ETag") != `"1"` || r.header.Get("Location") != "/api/v1/analysis-templates/checkout" {
		t.Fatalf("create: %d ETag %q Location %q %s", r.status, r.header.Get("ETag"), r.header.Get("Location"), r.body)
	}
	if m := r.json(t); m["name"] != "checkout" || m["version"] != 1.0 || m["updatedAt"] == nil || m["description"] == nil {
		t.Errorf("create body: %s", r.body)
	}
	if r := h.do(yamlBody("POST", "/api/v1/analysis-templates", h.admin, tplYAML)); r.status != http.StatusConflict || errorOf(t, r).Code != codeConflict {
		t.Errorf("create twice: %d %s", r.status, r.body)
	}

	// GET as JSON and as YAML; the YAML applies again as it is.
	r = h.do(req{method: "GET", path: "/api/v1/analysis-templates/checkout", key: h.admin})
	if r.status != 200 || r.header.Get("ETag") != `"1"` || r.json(t)["schedule"].(map[string]any)["interval"] != "1m0s" {
		t.Errorf("get: %d %s", r.status, r.body)
	}
	r = h.do(req{method: "GET", path: "/api/v1/analysis-templates/checkout", key: h.admin, header: map[string]string{"Accept": "application/yaml"}})
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/yaml") || strings.Contains(string(r.body), "updatedAt") {
		t.Fatalf("get yaml: %d %s %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	if _, err := canary.ParseTemplate(r.body); err != nil {
		t.Errorf("the YAML served does not parse: %v\n%s", err, r.body)
	}
	if r := h.do(req{method: "GET", path: "/api/v1/analysis-templates/checkout", key: h.admin, header: map[string]string{"If-None-Match": `"1"`}}); r.status != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", r.status)
	}

	// PUT: the name comes from the path; each write is a new version.
	noName := strings.Replace(tplYAML, "name: checkout\n", "", 1)
	noName = strings.Replace(noName, "count: 5", "count: 7", 1)
	r = h.do(yamlBody("PUT", "/api/v1/analysis-templates/checkout", h.admin, noName))
	if r.status != 200 || r.header.Get("ETag") != `"2"` || r.json(t)["schedule"].(map[string]any)["count"] != 7.0 {
		t.Errorf("put: %d %s", r.status, r.body)
	}
	tests := []struct {
		name   string
		r      req
		status int
		code   string
		field  string
	}{
		{"put with another name", yamlBody("PUT", "/api/v1/analysis-templates/checkout", h.admin, strings.Replace(tplYAML, "name: checkout", "name: other", 1)), 400, codeInvalidRequest, "name"},
		{"put at a stale version", func() req {
			r := yamlBody("PUT", "/api/v1/analysis-templates/checkout", h.admin, tplYAML)
			r.header["If-Match"] = `"1"`
			return r
		}(), 412, codePreconditionFailed, ""},
		{"put at a version of a missing one", func() req {
			r := yamlBody("PUT", "/api/v1/analysis-templates/ghost", h.admin, noName)
			r.header["If-Match"] = `"1"`
			return r
		}(), 404, codeNotFound, ""},
		{"delete at a stale version", req{method: "DELETE", path: "/api/v1/analysis-templates/checkout", key: h.admin, header: map[string]string{"If-Match": `"1"`}}, 412, codePreconditionFailed, ""},
		{"get a missing one", req{method: "GET", path: "/api/v1/analysis-templates/ghost", key: h.admin}, 404, codeNotFound, ""},
		{"get in a made-up format", req{method: "GET", path: "/api/v1/analysis-templates/checkout?format=toml", key: h.admin}, 400, codeInvalidRequest, "format"},
		{"delete a missing one", req{method: "DELETE", path: "/api/v1/analysis-templates/ghost", key: h.admin}, 404, codeNotFound, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(tc.r)
			e := errorOf(t, r)
			if r.status != tc.status || e.Code != tc.code || (tc.field != "" && (len(e.Details) == 0 || e.Details[0].Field != tc.field)) {
				t.Errorf("%d %+v; want %d %s naming %q", r.status, e, tc.status, tc.code, tc.field)
			}
		})
	}
	h.do(yamlBody("PUT", "/api/v1/analysis-templates/alpha", h.admin, strings.Replace(tplYAML, "name: checkout", "name: alpha", 1)))
	r = h.do(req{method: "GET", path: "/api/v1/analysis-templates", key: h.admin})
	var list struct {
		Templates []canary.StoredTemplate `json:"templates"`
	}
	if err := json.Unmarshal(r.body, &list); err != nil || len(list.Templates) != 2 || list.Templates[0].Name != "alpha" || list.Templates[1].Version != 2 {
		t.Errorf("list: %s", r.body)
	}
	if r := h.do(req{method: "DELETE", path: "/api/v1/analysis-templates/checkout", key: h.admin, header: map[string]string{"If-Match": `"2"`}}); r.status != http.StatusNoContent {
		t.Errorf("delete: %d %s", r.status, r.body)
	}
	if r := h.do(req{method: "GET", path: "/api/v1/analysis-templates/checkout", key: h.admin}); r.status != 404 {
		t.Errorf("get after delete: %d", r.status)
	}
}

func TestAnalysisTemplateValidation(t *testing.T) {
	h := newAnalysisHarness(t)
	bad := `name: Bad Name
metrics:
  - name: error-rate
    kind: ratios
    margin: {relative: -1}
schedule:
  intervl: 1m
`
	r := h.do(yamlBody("POST", "/api/v1/analysis-templates", h.admin, bad))
	e := errorOf(t, r)
	if r.status != http.StatusUnprocessableEntity || e.Code != codeInvalidTemplate {
		t.Fatalf("invalid template: %d %s", r.status, r.body)
	}
	var fields []string
	for _, d := range e.Details {
		fields = append(fields, d.Field)
	}
	if !slices.Contains(fields, "schedule.intervl") {
		t.Errorf("problems %v; want the unknown field schedule.intervl named", fields)
	}
	// With the shape right, every value problem is listed with its path.
	bad = strings.Replace(bad, "intervl", "interval", 1)
	r = h.do(yamlBody("POST", "/api/v1/analysis-templates", h.admin, bad))
	e = errorOf(t, r)
	fields = nil
	for _, d := range e.Details {
		fields = append(fields, d.Field)
	}
	for _, want := range []string{"name", "metrics[0].kind"} {
		if !slices.Contains(fields, want) {
			t.Errorf("problems %v lack %s", fields, want)
		}
	}
	if r.status != 422 || len(e.Details) < 2 || !strings.Contains(e.Message, "problems") {
		t.Errorf("%d %+v; want 422 listing every problem", r.status, e)
	}

	tests := []struct {
		name   string
		r      req
		status int
		code   string
	}{
		{"not YAML at all", yamlBody("POST", "/api/v1/analysis-templates", h.admin, "name: [unclosed"), 422, codeInvalidTemplate},
		{"JSON with a wrong type", req{method: "POST", path: "/api/v1/analysis-templates", key: h.admin, body: `{"name":"x","metrics":"many","schedule":{"interval":"1m"}}`}, 422, codeInvalidTemplate},
		{"empty body", yamlBody("POST", "/api/v1/analysis-templates", h.admin, " "), 400, codeInvalidRequest},
		{"form body", req{method: "POST", path: "/api/v1/analysis-templates", key: h.admin, body: "a=b", header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, 415, codeUnsupportedMedia},
		{"too large", yamlBody("POST", "/api/v1/analysis-templates", h.admin, "description: "+strings.Repeat("x", 2<<20)), 413, codeTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(tc.r)
			if e := errorOf(t, r); r.status != tc.status || e.Code != tc.code {
				t.Errorf("%d %+v; want %d %s", r.status, e, tc.status, tc.code)
			}
		})
	}
	if list, _ := h.mem.Templates(context.Background()); len(list) != 0 {
		t.Errorf("bad input stored %d templates", len(list))
	}
}

func TestAnalysisLifecycle(t *testing.T) {
	h := newAnalysisHarness(t)
	h.do(yamlBody("POST", "/api/v1/analysis-templates", h.admin, tplYAML))
	id := h.startOK(h.admin)
	if !strings.HasPrefix(id, "checkout-") {
		t.Errorf("analysis ID %q; want it to start with the template's name", id)
	}
	r := h.do(req{method: "GET", path: "/api/v1/analyses/" + id, key: h.admin})
	var got analysisOut
	if err := json.Unmarshal(r.body, &got); err != nil || r.status != 200 {
		t.Fatalf("get: %d %v %s", r.status, err, r.body)
	}
	if got.Phase != canary.PhasePending || got.Version != 1 || got.Args.ExpectedSplit != 0.1 || got.Args.Values["service"] != "checkout" ||
		got.Template.Version != 1 || got.Verdict.Verdict != "running" || got.Verdict.Final || r.header.Get("ETag") != `"1"` {
		t.Errorf("get: %s", r.body)
	}

	start := func(body string) resp {
		return h.do(req{method: "POST", path: "/api/v1/analyses", key: h.admin, body: body})
	}
	tests := []struct {
		name   string
		body   string
		status int
		code   string
		field  string
	}{
		{"no template", `{"baselineScope":"a","canaryScope":"b"}`, 400, codeInvalidRequest, "template"},
		{"unknown template", `{"template":"ghost","baselineScope":"a","canaryScope":"b"}`, 422, codeInvalidAnalysis, "template"},
		{"missing argument", `{"template":"checkout","baselineScope":"a=\"1\"","canaryScope":"a=\"2\""}`, 422, codeInvalidAnalysis, "args.service"},
		{"same scopes", `{"template":"checkout","baselineScope":"a","canaryScope":"a","args":{"service":"x"}}`, 422, codeInvalidAnalysis, "canaryScope"},
		{"split out of range", `{"template":"checkout","baselineScope":"a","canaryScope":"b","expectedSplit":1.5,"args":{"service":"x"}}`, 422, codeInvalidAnalysis, "expectedSplit"},
		{"unknown member", `{"template":"checkout","scope":"a"}`, 400, codeInvalidRequest, "scope"},
		{"wrong type", `{"template":"checkout","args":{"service":3}}`, 400, codeInvalidRequest, "args"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := start(tc.body)
			e := errorOf(t, r)
			var fields []string
			for _, d := range e.Details {
				fields = append(fields, d.Field)
			}
			if r.status != tc.status || e.Code != tc.code || !slices.Contains(fields, tc.field) {
				t.Errorf("%d %s %v (%s); want %d %s naming %s", r.status, e.Code, fields, e.Message, tc.status, tc.code, tc.field)
			}
		})
	}

	// Cancel: once, with a reason; again is a conflict.
	r = h.do(req{method: "POST", path: "/api/v1/analyses/" + id + "/cancel", key: h.admin, body: `{"reason":"rolled back"}`})
	if err := json.Unmarshal(r.body, &got); err != nil || r.status != 200 || got.Phase != canary.PhaseCancelled || got.Message != "rolled back" ||
		got.Verdict.Verdict != "inconclusive" || !got.Verdict.Final {
		t.Errorf("cancel: %d %s", r.status, r.body)
	}
	r = h.do(req{method: "POST", path: "/api/v1/analyses/" + id + "/cancel", key: h.admin})
	if e := errorOf(t, r); r.status != 409 || e.Code != codeConflict || !strings.Contains(e.Message, "Cancelled") {
		t.Errorf("cancel twice: %d %s", r.status, r.body)
	}
	for _, p := range []string{"/api/v1/analyses/ghost-1", "/api/v1/analyses/a%7Bb%7D", "/api/v1/analyses/ghost-1/verdict", "/api/v1/analyses/ghost-1/measurements"} {
		if r := h.do(req{method: "GET", path: p, key: h.admin}); r.status != 404 || errorOf(t, r).Code != codeNotFound {
			t.Errorf("GET %s: %d %s; want 404", p, r.status, r.body)
		}
	}
	if r := h.do(req{method: "POST", path: "/api/v1/analyses/ghost-1/cancel", key: h.admin}); r.status != 404 {
		t.Errorf("cancel a missing one: %d", r.status)
	}
}

func TestAnalysisListing(t *testing.T) {
	h := newAnalysisHarness(t)
	h.do(yamlBody("POST", "/api/v1/analysis-templates", h.admin, tplYAML))
	h.do(yamlBody("POST", "/api/v1/analysis-templates", h.admin, strings.Replace(tplYAML, "name: checkout", "name: search", 1)))
	var ids []string
	for i := range 5 {
		h.clock.Set(time.Date(2025, 6, 1, 12, 0, i, 0, time.UTC))
		ids = append(ids, h.startOK(h.admin))
	}
	h.do(req{method: "POST", path: "/api/v1/analyses/" + ids[1] + "/cancel", key: h.admin})
	r := h.do(req{method: "POST", path: "/api/v1/analyses", key: h.admin,
		body: `{"template":"search","baselineScope":"a","canaryScope":"b","args":{"service":"s"}}`})
	searchID, _ := r.json(t)["id"].(string)

	list := func(query string) ([]string, string, resp) {
		t.Helper()
		r := h.do(req{method: "GET", path: "/api/v1/analyses" + query, key: h.admin})
		var out struct {
			Analyses []analysisSummary `json:"analyses"`
			Next     string            `json:"next"`
		}
		_ = json.Unmarshal(r.body, &out)
		var got []string
		for _, a := range out.Analyses {
			got = append(got, a.ID)
		}
		return got, out.Next, r
	}
	tests := []struct {
		name  string
		query string
		want  []string
	}{
		{"all", "", []string{searchID, ids[4], ids[3], ids[2], ids[1], ids[0]}},
		{"one template", "?template=checkout", []string{ids[4], ids[3], ids[2], ids[1], ids[0]}},
		{"cancelled", "?phase=cancelled", []string{ids[1]}},
		{"active", "?active=true&template=checkout", []string{ids[4], ids[3], ids[2], ids[0]}},
		{"two phases", "?phase=Cancelled,Pending&template=search", []string{searchID}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, _, r := list(tc.query); !slices.Equal(got, tc.want) {
				t.Errorf("GET /api/v1/analyses%s = %v; want %v\n%s", tc.query, got, tc.want, r.body)
			}
		})
	}
	// Paging: two at a time.
	var all []string
	q := "?limit=2&template=checkout"
	for range 10 {
		got, next, _ := list(q)
		all = append(all, got...)
		if next == "" {
			break
		}
		q = "?limit=2&template=checkout&cursor=" + url.QueryEscape(next)
	}
	if !slices.Equal(all, []string{ids[4], ids[3], ids[2], ids[1], ids[0]}) {
		t.Errorf("paged: %v", all)
	}
	for _, bad := range []struct{ query, field string }{
		{"?phase=done", "phase"}, {"?limit=0", "limit"}, {"?limit=501", "limit"}, {"?cursor=nonsense", "cursor"},
	} {
		r := h.do(req{method: "GET", path: "/api/v1/analyses" + bad.query, key: h.admin})
		if e := errorOf(t, r); r.status != 400 || len(e.Details) == 0 || e.Details[0].Field != bad.field {
			t.Errorf("GET /api/v1/analyses%s: %d %s; want 400 naming %s", bad.query, r.status, r.body, bad.field)
		}
	}
}

// recordSteps records n inconclusive measurements of run id directly in the
// store, as a runner would.
func recordSteps(t *testing.T, store canary.Store, id string, n int, verdict canary.Verdict) {
	t.Helper()
	ctx := context.Background()
	sr, err := store.Run(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	l, err := store.AcquireLease(ctx, id, "test", sr.CreatedAt, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer store.ReleaseLease(ctx, l)
	for i := 1; i <= n; i++ {
		now := sr.CreatedAt.Add(time.Duration(i) * time.Minute)
		sr.Run.Advance(now)
		plan, ok := sr.Run.Due(now)
		if !ok {
			t.Fatalf("step %d not due", i)
		}
		rep := canary.Report{Verdict: verdict, Reason: fmt.Sprintf("look %d", i), Score: canary.Float(10 * i), Metrics: []canary.MetricResult{{
			Metric: "error-rate", Kind: canary.KindRatio, Verdict: verdict, Critical: true, Reason: "because",
			Evidence: canary.Evidence{Effect: 0.05, Lower: -0.1, Upper: canary.Float(float64(i)), Unit: canary.UnitRelative},
		}}}
		if err := sr.Run.Record(plan.Step, now, plan.Window, rep); err != nil {
			t.Fatal(err)
		}
		step := sr.Run.Steps[len(sr.Run.Steps)-1]
		if sr, err = store.UpdateRun(ctx, canary.RunUpdate{Run: &sr.Run, IfVersion: sr.Version, Token: l.Token, Step: &step}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAnalysisMeasurements(t *testing.T) {
	h := newAnalysisHarness(t)
	h.do(yamlBody("POST", "/api/v1/analysis-templates", h.admin, tplYAML))
	id := h.startOK(h.admin)
	recordSteps(t, h.mem, id, 4, canary.VerdictInconclusive)
	page := func(query string) ([]int, any) {
		r := h.do(req{method: "GET", path: "/api/v1/analyses/" + id + "/measurements" + query, key: h.admin})
		if r.status != 200 {
			t.Fatalf("measurements%s: %d %s", query, r.status, r.body)
		}
		var out struct {
			Measurements []canary.Step `json:"measurements"`
			Next         any           `json:"next"`
		}
		if err := json.Unmarshal(r.body, &out); err != nil {
			t.Fatal(err)
		}
		var nums []int
		for _, m := range out.Measurements {
			nums = append(nums, m.Number)
			if m.Report.Metrics[0].Evidence.Upper != canary.Float(m.Number) {
				t.Errorf("step %d evidence did not survive: %+v", m.Number, m.Report.Metrics[0].Evidence)
			}
		}
		return nums, out.Next
	}
	if nums, next := page(""); !slices.Equal(nums, []int{1, 2, 3, 4}) || next != nil {
		t.Errorf("all: %v next %v", nums, next)
	}
	if nums, next := page("?limit=3"); !slices.Equal(nums, []int{1, 2, 3}) || next != 3.0 {
		t.Errorf("first page: %v next %v", nums, next)
	}
	if nums, next := page("?limit=3&after=3"); !slices.Equal(nums, []int{4}) || next != nil {
		t.Errorf("second page: %v next %v", nums, next)
	}
	for _, bad := range []struct{ query, field string }{{"?after=-1", "after"}, {"?limit=1001", "limit"}, {"?limit=x", "limit"}} {
		r := h.do(req{method: "GET", path: "/api/v1/analyses/" + id + "/measurements" + bad.query, key: h.admin})
		if e := errorOf(t, r); r.status != 400 || e.Details[0].Field != bad.field {
			t.Errorf("%s: %d %s", bad.query, r.status, r.body)
		}
	}
	// The run itself holds the latest measurement; the verdict summarises it.
	r := h.do(req{method: "GET", path: "/api/v1/analyses/" + id + "/verdict", key: h.admin})
	var v verdictOut
	if err := json.Unmarshal(r.body, &v); err != nil || r.status != 200 {
		t.Fatalf("verdict: %d %s", r.status, r.body)
	}
	if v.AnalysisID != id || v.Verdict != "running" || v.Final || v.Steps != 4 || v.Score != 40 || v.Reason != "running; look 4 of the analysis is inconclusive: look 4" ||
		len(v.Metrics) != 1 || v.Metrics[0].Metric != "error-rate" || v.Metrics[0].Upper != 4 {
		t.Errorf("verdict: %s", r.body)
	}
}

// TestAnalysisVerdictCache: the verdict is read from the store at most once
// a second while running, never again once final, and served from memory
// while the store is down.
func TestAnalysisVerdictCache(t *testing.T) {
	h := newAnalysisHarness(t)
	h.do(yamlBody("POST", "/api/v1/analysis-templates", h.admin, tplYAML))
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	h.clock.Set(t0)
	id := h.startOK(h.admin)
	verdict := func(header map[string]string) (resp, verdictOut) {
		t.Helper()
		r := h.do(req{method: "GET", path: "/api/v1/analyses/" + id + "/verdict", key: h.admin, header: header})
		var v verdictOut
		if r.status == 200 {
			if err := json.Unmarshal(r.body, &v); err != nil {
				t.Fatal(err)
			}
		}
		return r, v
	}
	before := h.store.runReads.Load()
	for range 20 {
		if r, v := verdict(nil); r.status != 200 || v.Verdict != "running" || !strings.Contains(v.Reason, "warming up; the first measurement is due at 2025-06-01T12:00:00Z") {
			t.Fatalf("verdict: %d %s", r.status, r.body)
		}
	}
	if n := h.store.runReads.Load() - before; n != 1 {
		t.Errorf("20 reads within a second reached the store %d times; want 1", n)
	}
	r, _ := verdict(map[string]string{"If-None-Match": `"1"`})
	if r.status != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", r.status)
	}
	// A second later a new step is seen; while the store is down the last
	// verdict is served.
	recordSteps(t, h.mem, id, 1, canary.VerdictInconclusive)
	h.clock.Set(t0.Add(1100 * time.Millisecond))
	if _, v := verdict(nil); v.Steps != 1 {
		t.Errorf("after the TTL: %d steps; want the new measurement", v.Steps)
	}
	h.mem.Fail(true)
	h.clock.Set(t0.Add(5 * time.Second))
	if r, v := verdict(nil); r.status != 200 || v.Steps != 1 {
		t.Errorf("store down: %d %s; want the last verdict", r.status, r.body)
	}
	if r := h.do(req{method: "GET", path: "/api/v1/analyses/other-1/verdict", key: h.admin}); r.status != 503 || errorOf(t, r).Code != codeUnavailable {
		t.Errorf("store down, never seen: %d %s; want 503", r.status, r.body)
	}
	h.mem.Fail(false)
	// Final verdicts are never read again.
	h.do(req{method: "POST", path: "/api/v1/analyses/" + id + "/cancel", key: h.admin})
	if _, v := verdict(nil); v.Verdict != "inconclusive" || !v.Final || v.Phase != canary.PhaseCancelled {
		t.Errorf("after cancel: %+v", v)
	}
	before = h.store.runReads.Load()
	h.clock.Set(t0.Add(time.Hour))
	for range 5 {
		verdict(nil)
	}
	if n := h.store.runReads.Load() - before; n != 0 {
		t.Errorf("a final verdict was read from the store %d times", n)
	}
}

func TestAnalysisVerdictMapping(t *testing.T) {
	tests := []struct {
		phase   canary.Phase
		verdict string
		final   bool
	}{
		{canary.PhasePending, "running", false},
		{canary.PhaseRunning, "running", false},
		{canary.PhaseSuccessful, "pass", true},
		{canary.PhaseFailed, "fail", true},
		{canary.PhaseInconclusive, "inconclusive", true},
		{canary.PhaseError, "inconclusive", true},
		{canary.PhaseCancelled, "inconclusive", true},
	}
	for _, tc := range tests {
		sr := canary.StoredRun{Run: canary.Run{ID: "x", Phase: tc.phase, Message: "m", NextStep: 1}}
		v := verdictOf(&sr)
		if v.Verdict != tc.verdict || v.Final != tc.final {
			t.Errorf("%s: %s final %v; want %s final %v", tc.phase, v.Verdict, v.Final, tc.verdict, tc.final)
		}
		if _, err := json.Marshal(v); err != nil {
			t.Errorf("%s: verdict does not encode: %v", tc.phase, err)
		}
	}
}

func TestAnalysisRoles(t *testing.T) {
	h := newAnalysisHarness(t)
	editor := h.newKey(auth.RoleEditor, "ci", "staging")
	sdk := h.newKey(auth.RoleSDK, "web", "staging")
	if r := h.do(yamlBody("POST", "/api/v1/analysis-templates", editor, tplYAML)); r.status != 201 {
		t.Fatalf("editor creating a template: %d %s", r.status, r.body)
	}
	id := h.startOK(editor)
	routes := []req{
		{method: "GET", path: "/api/v1/analysis-templates"},
		yamlBody("POST", "/api/v1/analysis-templates", "", tplYAML),
		{method: "GET", path: "/api/v1/analysis-templates/checkout"},
		yamlBody("PUT", "/api/v1/analysis-templates/checkout", "", tplYAML),
		{method: "DELETE", path: "/api/v1/analysis-templates/checkout"},
		{method: "GET", path: "/api/v1/analyses"},
		{method: "POST", path: "/api/v1/analyses", body: `{"template":"checkout"}`},
		{method: "GET", path: "/api/v1/analyses/" + id},
		{method: "POST", path: "/api/v1/analyses/" + id + "/cancel"},
		{method: "GET", path: "/api/v1/analyses/" + id + "/verdict"},
		{method: "GET", path: "/api/v1/analyses/" + id + "/measurements"},
	}
	for _, rt := range routes {
		t.Run(rt.method+" "+rt.path, func(t *testing.T) {
			rt.key = sdk
			if r := h.do(rt); r.status != 403 || errorOf(t, r).Code != codeForbidden {
				t.Errorf("sdk key: %d %s; want 403", r.status, r.body)
			}
			rt.key = ""
			if r := h.do(rt); r.status != 401 {
				t.Errorf("no key: %d; want 401", r.status)
			}
		})
	}
	if r := h.do(req{method: "GET", path: "/api/v1/analyses/" + id + "/verdict", key: editor}); r.status != 200 {
		t.Errorf("editor reading a verdict: %d", r.status)
	}
	if r := h.do(req{method: "POST", path: "/api/v1/analyses/" + id + "/cancel", key: editor}); r.status != 200 || !strings.Contains(string(r.body), "cancelled by ci") {
		t.Errorf("editor cancelling: %d %s", r.status, r.body)
	}
}

func TestAnalysisNotConfiguredAndStoreDown(t *testing.T) {
	plain := newHarness(t)
	r := plain.do(req{method: "GET", path: "/api/v1/analyses", key: plain.admin})
	if e := errorOf(t, r); r.status != 503 || e.Code != codeUnavailable || !strings.Contains(e.Message, "not configured") {
		t.Errorf("no analysis store: %d %s", r.status, r.body)
	}
	h := newAnalysisHarness(t)
	h.mem.Fail(true)
	for _, rt := range []req{
		yamlBody("POST", "/api/v1/analysis-templates", h.admin, tplYAML),
		{method: "GET", path: "/api/v1/analysis-templates", key: h.admin},
		{method: "POST", path: "/api/v1/analyses", key: h.admin, body: `{"template":"checkout","baselineScope":"a","canaryScope":"b"}`},
		{method: "GET", path: "/api/v1/analyses", key: h.admin},
		{method: "GET", path: "/api/v1/analyses/x-1/measurements", key: h.admin},
	} {
		r := h.do(rt)
		if e := errorOf(t, r); r.status != 503 || e.Code != codeUnavailable || r.header.Get("Retry-After") == "" {
			t.Errorf("%s %s with the store down: %d %s; want 503 with Retry-After", rt.method, rt.path, r.status, r.body)
		}
	}
}

// TestAnalysisMetricsExposed: started and cancelled runs, and a runner's
// observations, appear on /metrics; deleting the template removes them.
func TestAnalysisMetricsExposed(t *testing.T) {
	h := newAnalysisHarness(t)
	h.do(yamlBody("POST", "/api/v1/analysis-templates", h.admin, tplYAML))
	id := h.startOK(h.admin)
	h.do(req{method: "POST", path: "/api/v1/analyses/" + id + "/cancel", key: h.admin})
	m := h.srv.AnalysisMetrics()
	step := &canary.Step{Number: 1, Report: canary.Report{Verdict: canary.VerdictFail, Score: 42, Metrics: []canary.MetricResult{{
		Metric: "error-rate", Verdict: canary.VerdictFail,
		Evidence: canary.Evidence{Effect: 2, Lower: 1.5, Upper: canary.Float(inf()), PValue: 0.001, EValue: 1000, MDE: 0.1,
			Baseline: &canary.ArmEstimate{Value: 0.01}, Canary: &canary.ArmEstimate{Value: 0.03}},
	}}}}
	m.StepRecorded("checkout", step)
	m.MeasurementError("checkout", "latency")
	m.JudgeDuration(time.Millisecond)
	m.ScheduleLag(300 * time.Millisecond)
	metrics := string(h.do(req{method: "GET", path: "/metrics"}).body)
	for _, want := range []string{
		`flagpole_canary_runs_total{phase="Pending",template="checkout"} 1`,
		`flagpole_canary_runs_total{phase="Cancelled",template="checkout"} 1`,
		`flagpole_canary_measurements_total{template="checkout",verdict="fail"} 1`,
		`flagpole_canary_metric_verdicts_total{metric="error-rate",template="checkout",verdict="fail"} 1`,
		`flagpole_canary_score{template="checkout"} 42`,
		`flagpole_canary_metric_evidence{metric="error-rate",stat="effect",template="checkout"} 2`,
		`flagpole_canary_metric_evidence{metric="error-rate",stat="upper",template="checkout"} +Inf`,
		`flagpole_canary_metric_evidence{metric="error-rate",stat="canary",template="checkout"} 0.03`,
		`flagpole_canary_measurement_errors_total{metric="latency",template="checkout"} 1`,
		`flagpole_canary_judge_duration_seconds_count 1`,
		`flagpole_canary_schedule_lag_seconds_bucket{le="0.5"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	h.do(req{method: "DELETE", path: "/api/v1/analysis-templates/checkout", key: h.admin})
	if metrics := string(h.do(req{method: "GET", path: "/metrics"}).body); strings.Contains(metrics, `template="checkout"`) {
		t.Errorf("a deleted template's series remain on /metrics")
	}
}

func inf() float64 { return 1 / zero }

var zero = 0.0

// TestAnalysesOnRedis runs the lifecycle once against the embedded Redis
// store, templates in YAML to verdict.
func TestAnalysesOnRedis(t *testing.T) {
	raw, err := redis.OpenEmbedded(context.Background(), t.TempDir(), redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	h := newHarnessOn(t, raw, func(c *Config) { c.Analyses = raw })
	if r := h.do(yamlBody("POST", "/api/v1/analysis-templates", h.admin, tplYAML)); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	ah := &analysisHarness{harness: h}
	id := ah.startOK(h.admin)
	recordSteps(t, raw, id, 2, canary.VerdictPass)
	r := h.do(req{method: "GET", path: "/api/v1/analyses/" + id + "/verdict", key: h.admin})
	var v verdictOut
	if err := json.Unmarshal(r.body, &v); err != nil || r.status != 200 || v.Steps != 2 || v.Verdict != "running" {
		t.Errorf("verdict: %d %s", r.status, r.body)
	}
	r = h.do(req{method: "GET", path: "/api/v1/analysis-templates/checkout?format=yaml", key: h.admin})
	var round map[string]any
	if err := yaml.Unmarshal(r.body, &round); err != nil || r.status != 200 || round["name"] != "checkout" {
		t.Errorf("yaml: %d %s", r.status, r.body)
	}
	r = h.do(req{method: "GET", path: "/api/v1/analyses/" + id + "/measurements", key: h.admin})
	if r.status != 200 || strings.Count(string(r.body), `"number"`) != 2 {
		t.Errorf("measurements: %d %s", r.status, r.body)
	}
}

// BenchmarkAnalysisVerdict is the cached verdict read an orchestrator
// polls: authentication, the cache hit and the response, in-process.
func BenchmarkAnalysisVerdict(b *testing.B) {
	h := newAnalysisHarness(b)
	h.do(yamlBody("POST", "/api/v1/analysis-templates", h.admin, tplYAML))
	id := h.startOK(h.admin)
	handler := h.srv.Handler()
	rq := httptest.NewRequest("GET", "/api/v1/analyses/"+id+"/verdict", nil)
	rq.Header.Set("Authorization", "Bearer "+h.admin)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, rq)
		if rec.Code != 200 {
			b.Fatalf("verdict: %d %s", rec.Code, rec.Body)
		}
	}
}
