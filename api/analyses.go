package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"sigs.k8s.io/yaml"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/canary"
)

// Canary analysis under /api/v1: analysis templates (CRUD, JSON or YAML),
// analysis runs (start, get, list, cancel), their measurements, and a cheap
// verdict read served from memory for orchestrators that poll it. Admin and
// editor keys (of any environment) may use them; sdk keys may not. Runs are
// executed by a canary.Runner elsewhere (flagpole serve --prometheus-url).

// Error codes of the analysis routes (422).
const (
	codeInvalidTemplate = "invalid_template"
	codeInvalidAnalysis = "invalid_analysis"
)

// verdictTTL is how long a running analysis's verdict is served from
// memory before the store is asked again; a final verdict never changes.
const verdictTTL = time.Second

// maxCachedVerdicts bounds the verdict cache.
const maxCachedVerdicts = 10_000

// analyses is the analysis part of the server.
type analyses struct {
	store    canary.Store
	svc      *canary.Service
	met      *AnalysisMetrics
	verdicts *verdictCache
}

// newAnalyses wires the analysis routes' dependencies; a nil store leaves
// them answering 503.
func newAnalyses(s *Server, store canary.Store) (*analyses, error) {
	if store == nil {
		return nil, nil
	}
	met, err := NewAnalysisMetrics(s.reg)
	if err != nil {
		return nil, err
	}
	now := func() time.Time { return s.now() }
	return &analyses{
		store: store, svc: canary.NewService(store, now), met: met,
		verdicts: &verdictCache{ttl: verdictTTL, now: now, m: map[string]*verdictEntry{}},
	}, nil
}

// AnalysisMetrics returns the Prometheus hooks for a canary.Runner in the
// same process (registered on the server's registry), or nil when the
// server has no analysis store.
func (s *Server) AnalysisMetrics() *AnalysisMetrics {
	if s.an == nil {
		return nil
	}
	return s.an.met
}

// analysisRoutes registers the analysis routes on the /api/v1 group.
func (s *Server) analysisRoutes(v1 *echo.Group) {
	v1.GET("/analysis-templates", s.withKey(s.listTemplates))
	v1.POST("/analysis-templates", s.withKey(s.createTemplate))
	v1.GET("/analysis-templates/:name", s.withKey(s.getTemplate))
	v1.PUT("/analysis-templates/:name", s.withKey(s.putTemplate))
	v1.DELETE("/analysis-templates/:name", s.withKey(s.deleteTemplate))
	v1.GET("/analyses", s.withKey(s.listAnalyses))
	v1.POST("/analyses", s.withKey(s.startAnalysis))
	v1.GET("/analyses/:id", s.withKey(s.getAnalysis))
	v1.POST("/analyses/:id/cancel", s.withKey(s.cancelAnalysis))
	v1.GET("/analyses/:id/verdict", s.withKey(s.analysisVerdict))
	v1.GET("/analyses/:id/measurements", s.withKey(s.listMeasurements))
}

// analysisAccess checks that analyses are configured and the key may use them.
func (s *Server) analysisAccess(k auth.Key) error {
	if k.Role != auth.RoleAdmin && k.Role != auth.RoleEditor {
		return forbidden("an sdk key may only evaluate flags; analyses need an editor or admin key")
	}
	if s.an == nil {
		return newError(http.StatusServiceUnavailable, codeUnavailable, "canary analysis is not configured on this server (no analysis store)")
	}
	return nil
}

// analysisError maps canary errors onto the API's shape; code is the 422
// code for validation problems, prefix names the body member they are in.
func analysisError(err error, code string) error {
	var ve *canary.ValidationError
	switch {
	case errors.As(err, &ve):
		what := "the template"
		if code == codeInvalidAnalysis {
			what = "the analysis"
		}
		return invalidError(err, ve, what, code, func(field string) string {
			if v, ok := strings.CutPrefix(field, "values."); ok {
				return "args." + v // run arguments are "args" in the API
			}
			return field
		})
	case errors.Is(err, canary.ErrUnavailable):
		return &apiError{Status: http.StatusServiceUnavailable, Code: codeUnavailable, Message: "the analysis store is unavailable, so nothing was changed; retry later", cause: err}
	case errors.Is(err, canary.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Code: codeNotFound, Message: strings.TrimPrefix(err.Error(), "canary: "), cause: err}
	case errors.Is(err, canary.ErrExists):
		return &apiError{Status: http.StatusConflict, Code: codeConflict, Message: err.Error(), cause: err}
	case errors.Is(err, canary.ErrConflict):
		return &apiError{Status: http.StatusPreconditionFailed, Code: codePreconditionFailed,
			Message: err.Error() + "; re-read the resource and retry with its current ETag", cause: err}
	case errors.Is(err, canary.ErrRunEnded):
		return &apiError{Status: http.StatusConflict, Code: codeConflict, Message: err.Error(), cause: err}
	}
	return err
}

// invalidError is the 422 for ve, a problem list of what (such as "the
// rollout") under code: a detail a problem, its field renamed by field (nil:
// as it is) or "body" for a problem of the whole, and a message that quotes
// a single problem or counts several.
func invalidError(err error, ve *canary.ValidationError, what, code string, field func(string) string) *apiError {
	details := make([]Detail, len(ve.Problems))
	for i, p := range ve.Problems {
		f := p.Field
		if field != nil {
			f = field(f)
		}
		if f == "" {
			f = "body"
		}
		details[i] = Detail{Field: f, Problem: p.Message}
	}
	msg := fmt.Sprintf("%s is invalid (%d problems); nothing was changed", what, len(details))
	if len(details) == 1 {
		msg = fmt.Sprintf("%s is invalid: %s: %s; nothing was changed", what, details[0].Field, details[0].Problem)
	}
	return &apiError{Status: http.StatusUnprocessableEntity, Code: code, Message: msg, Details: details, cause: err}
}

// queryError maps a store's validation of a list query onto 400s naming
// the query parameter.
func queryError(err error) error {
	var ve *canary.ValidationError
	if errors.As(err, &ve) && len(ve.Problems) > 0 {
		return badRequest(ve.Problems[0].Field, ve.Problems[0].Message)
	}
	return analysisError(err, codeInvalidRequest)
}

func etagOf(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }

// ---- templates ----

func (s *Server) listTemplates(rc *reqCtx, k auth.Key) error {
	if err := s.analysisAccess(k); err != nil {
		return err
	}
	list, err := s.an.store.Templates(rc.Request().Context())
	if err != nil {
		return analysisError(err, codeInvalidTemplate)
	}
	return s.writeJSON(rc, http.StatusOK, "", map[string]any{"templates": list})
}

// readTemplate parses a template body (JSON or YAML). When name is given
// (PUT), a body without a name takes it, and a different one is refused.
func (s *Server) readTemplate(rc *reqCtx, name string) (*canary.Template, error) {
	r := rc.Request()
	mt := mediaType(r)
	if !isJSONType(mt) && !isYAMLType(mt) {
		return nil, unsupportedType(r, "application/json or application/yaml")
	}
	data, err := readBody(r, s.bodyLimit)
	if err != nil {
		return nil, err
	}
	if strings.TrimSpace(string(data)) == "" {
		return nil, badRequest("body", "an analysis template is required")
	}
	if name != "" {
		if data, err = withName(data, name); err != nil {
			return nil, err
		}
	}
	t, err := canary.ParseTemplate(data)
	if err != nil {
		return nil, analysisError(err, codeInvalidTemplate)
	}
	return t, nil
}

// withName fills in a missing template name from the path, and refuses a
// different one. Bodies that are not an object are left to ParseTemplate.
func withName(data []byte, name string) ([]byte, error) {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return data, nil
	}
	var m map[string]any
	if json.Unmarshal(j, &m) != nil || m == nil {
		return data, nil
	}
	switch got := m["name"].(type) {
	case nil:
		m["name"] = name
		return json.Marshal(m)
	case string:
		if got != name {
			return nil, badRequest("name", fmt.Sprintf("%q differs from the template named in the path, %q", got, name))
		}
	}
	return data, nil
}

func templateLocation(name string) string {
	return "/api/v1/analysis-templates/" + url.PathEscape(name)
}

func (s *Server) createTemplate(rc *reqCtx, k auth.Key) error {
	if err := s.analysisAccess(k); err != nil {
		return err
	}
	t, err := s.readTemplate(rc, "")
	if err != nil {
		return err
	}
	st, err := s.an.svc.PutTemplate(rc.Request().Context(), t, canary.TemplateWrite{Create: true})
	if err != nil {
		return analysisError(err, codeInvalidTemplate)
	}
	s.log.Info("analysis template created", "template", st.Name, "version", st.Version, "actor", k.Name, "request_id", rc.id)
	rc.Response().Header().Set("Location", templateLocation(st.Name))
	return s.writeJSON(rc, http.StatusCreated, etagOf(int64(st.Version)), st)
}

func (s *Server) putTemplate(rc *reqCtx, k auth.Key) error {
	name, err := pathParam(rc, "name")
	if err != nil {
		return err
	}
	if err := s.analysisAccess(k); err != nil {
		return err
	}
	ifMatch, err := ifMatchVersion(rc.Request())
	if err != nil {
		return err
	}
	t, err := s.readTemplate(rc, name)
	if err != nil {
		return err
	}
	st, err := s.an.svc.PutTemplate(rc.Request().Context(), t, canary.TemplateWrite{IfVersion: int(ifMatch)})
	if err != nil {
		return analysisError(err, codeInvalidTemplate)
	}
	s.log.Info("analysis template stored", "template", st.Name, "version", st.Version, "actor", k.Name, "request_id", rc.id)
	status := http.StatusOK
	if st.Version == 1 {
		status = http.StatusCreated
		rc.Response().Header().Set("Location", templateLocation(st.Name))
	}
	return s.writeJSON(rc, status, etagOf(int64(st.Version)), st)
}

func (s *Server) getTemplate(rc *reqCtx, k auth.Key) error {
	name, err := pathParam(rc, "name")
	if err != nil {
		return err
	}
	if err := s.analysisAccess(k); err != nil {
		return err
	}
	format := rc.QueryParam("format")
	switch format {
	case "":
		format = "json"
		if acceptsYAML(rc.Request().Header.Get("Accept")) {
			format = "yaml"
		}
	case "json", "yaml":
	default:
		return badRequest("format", `must be "json" or "yaml"`)
	}
	st, err := s.an.store.Template(rc.Request().Context(), name)
	if err != nil {
		return analysisError(err, codeInvalidTemplate)
	}
	etag := etagOf(int64(st.Version))
	h := rc.Response().Header()
	h["Vary"] = append(h["Vary"], "Accept")
	if notModified(rc.Request(), etag) {
		h["Etag"] = []string{etag}
		return rc.NoContent(http.StatusNotModified)
	}
	if format == "json" {
		return s.writeJSON(rc, http.StatusOK, etag, st)
	}
	// YAML is the template as written to apply it again: no store fields.
	j, err := json.Marshal(&st.Template)
	if err != nil {
		return err
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		return err
	}
	h["Etag"] = []string{etag}
	h["Cache-Control"] = hvNoStore
	return rc.Blob(http.StatusOK, "application/yaml", y)
}

func (s *Server) deleteTemplate(rc *reqCtx, k auth.Key) error {
	name, err := pathParam(rc, "name")
	if err != nil {
		return err
	}
	if err := s.analysisAccess(k); err != nil {
		return err
	}
	ifMatch, err := ifMatchVersion(rc.Request())
	if err != nil {
		return err
	}
	if err := s.an.store.DeleteTemplate(rc.Request().Context(), name, int(ifMatch)); err != nil {
		return analysisError(err, codeInvalidTemplate)
	}
	s.an.met.forgetTemplate(name)
	s.log.Info("analysis template deleted", "template", name, "actor", k.Name, "request_id", rc.id)
	return rc.NoContent(http.StatusNoContent)
}

// ---- analyses ----

// startIn is the body of POST /api/v1/analyses.
type startIn struct {
	Template      string            `json:"template"`
	BaselineScope string            `json:"baselineScope"`
	CanaryScope   string            `json:"canaryScope"`
	ExpectedSplit float64           `json:"expectedSplit"`
	Args          map[string]string `json:"args"`
}

// analysisOut is a run in responses: the run, its version, and its verdict.
type analysisOut struct {
	canary.StoredRun
	Verdict verdictOut `json:"verdict"`
}

// analysisSummary is a run in lists.
type analysisSummary struct {
	ID              string         `json:"id"`
	Template        string         `json:"template"`
	TemplateVersion int            `json:"templateVersion"`
	Phase           canary.Phase   `json:"phase"`
	Message         string         `json:"message,omitempty"`
	Verdict         string         `json:"verdict"`
	Score           canary.Float   `json:"score"`
	Steps           int            `json:"steps"`
	CreatedAt       time.Time      `json:"createdAt"`
	EndedAt         time.Time      `json:"endedAt,omitzero"`
	NextAt          time.Time      `json:"nextAt,omitzero"`
	Version         int64          `json:"version"`
	Last            canary.Verdict `json:"lastStep,omitempty"`
}

func analysisLocation(id string) string { return "/api/v1/analyses/" + url.PathEscape(id) }

func (s *Server) startAnalysis(rc *reqCtx, k auth.Key) error {
	if err := s.analysisAccess(k); err != nil {
		return err
	}
	var in startIn
	if err := s.decodeJSONBody(rc, &in); err != nil {
		return err
	}
	if in.Template == "" {
		return badRequest("template", "is required")
	}
	args := canary.Args{BaselineScope: in.BaselineScope, CanaryScope: in.CanaryScope, ExpectedSplit: in.ExpectedSplit, Values: in.Args}
	sr, err := s.an.svc.Start(rc.Request().Context(), in.Template, args)
	if err != nil {
		return analysisError(err, codeInvalidAnalysis)
	}
	s.an.met.PhaseChanged(sr.Template.Name, "", sr.Phase)
	s.log.Info("analysis started", "analysis", sr.ID, "template", sr.Template.Name, "template_version", sr.Template.Version, "actor", k.Name, "request_id", rc.id)
	rc.Response().Header().Set("Location", analysisLocation(sr.ID))
	return s.writeJSON(rc, http.StatusCreated, etagOf(sr.Version), analysisOut{StoredRun: sr, Verdict: verdictOf(&sr)})
}

// idParam reads the path's analysis run ID; one that cannot exist is a 404.
func idParam(rc *reqCtx) (string, error) { return pathID(rc, "analysis", canary.CheckRunID) }

// pathID reads the path's {id}; one that check rejects cannot exist, so it
// is a 404 saying that what (such as "rollout") with that ID does not.
func pathID(rc *reqCtx, what string, check func(string) error) (string, error) {
	id, err := pathParam(rc, "id")
	if err != nil {
		return "", err
	}
	if check(id) != nil {
		return "", newError(http.StatusNotFound, codeNotFound, fmt.Sprintf("%s %q does not exist", what, id), Detail{Field: "id", Problem: "does not exist"})
	}
	return id, nil
}

func (s *Server) getAnalysis(rc *reqCtx, k auth.Key) error {
	id, err := idParam(rc)
	if err != nil {
		return err
	}
	if err := s.analysisAccess(k); err != nil {
		return err
	}
	sr, err := s.an.store.Run(rc.Request().Context(), id)
	if err != nil {
		return analysisError(err, codeInvalidAnalysis)
	}
	return s.writeVersioned(rc, sr.Version, analysisOut{StoredRun: sr, Verdict: verdictOf(&sr)})
}

// writeVersioned answers a GET of v, stored at version: 304 with its ETag
// when the request's If-None-Match has it, else v with that ETag.
func (s *Server) writeVersioned(rc *reqCtx, version int64, v any) error {
	etag := etagOf(version)
	if notModified(rc.Request(), etag) {
		rc.Response().Header()["Etag"] = []string{etag}
		return rc.NoContent(http.StatusNotModified)
	}
	return s.writeJSON(rc, http.StatusOK, etag, v)
}

// phaseNames maps lower-cased phase names to phases.
var phaseNames = func() map[string]canary.Phase {
	m := map[string]canary.Phase{}
	for _, p := range []canary.Phase{canary.PhasePending, canary.PhaseRunning, canary.PhaseSuccessful, canary.PhaseFailed,
		canary.PhaseInconclusive, canary.PhaseError, canary.PhaseCancelled} {
		m[strings.ToLower(string(p))] = p
	}
	return m
}()

func (s *Server) listAnalyses(rc *reqCtx, k auth.Key) error {
	if err := s.analysisAccess(k); err != nil {
		return err
	}
	q := canary.RunQuery{Template: rc.QueryParam("template"), Cursor: rc.QueryParam("cursor")}
	for _, v := range rc.QueryParams()["phase"] {
		for _, p := range strings.Split(v, ",") {
			ph, ok := phaseNames[strings.ToLower(strings.TrimSpace(p))]
			if !ok {
				return badRequest("phase", fmt.Sprintf("%q is not a phase (Pending, Running, Successful, Failed, Inconclusive, Error, Cancelled)", p))
			}
			q.Phases = append(q.Phases, ph)
		}
	}
	if rc.QueryParam("active") == "true" {
		q.Phases = append(q.Phases, canary.PhasePending, canary.PhaseRunning)
	}
	if l := rc.QueryParam("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > canary.MaxRunPage {
			return badRequest("limit", fmt.Sprintf("must be a whole number from 1 to %d", canary.MaxRunPage))
		}
		q.Limit = n
	}
	if len(q.Cursor) > 256 {
		return badRequest("cursor", "is not the next value of an earlier page")
	}
	page, err := s.an.store.Runs(rc.Request().Context(), q)
	if err != nil {
		return queryError(err)
	}
	out := make([]analysisSummary, len(page.Runs))
	for i := range page.Runs {
		sr := &page.Runs[i]
		v := verdictOf(sr)
		out[i] = analysisSummary{
			ID: sr.ID, Template: sr.Template.Name, TemplateVersion: sr.Template.Version, Phase: sr.Phase, Message: sr.Message,
			Verdict: v.Verdict, Score: v.Score, Steps: sr.NextStep - 1, CreatedAt: sr.CreatedAt, EndedAt: sr.EndedAt,
			NextAt: sr.NextAt, Version: sr.Version,
		}
		if last := sr.Last(); last != nil {
			out[i].Last = last.Verdict
		}
	}
	body := map[string]any{"analyses": out}
	if page.Next != "" {
		body["next"] = page.Next
	}
	return s.writeJSON(rc, http.StatusOK, "", body)
}

func (s *Server) cancelAnalysis(rc *reqCtx, k auth.Key) error {
	id, err := idParam(rc)
	if err != nil {
		return err
	}
	if err := s.analysisAccess(k); err != nil {
		return err
	}
	var in struct {
		Reason string `json:"reason"`
	}
	if rc.Request().ContentLength != 0 && mediaType(rc.Request()) != "" {
		if err := s.decodeJSONBody(rc, &in); err != nil {
			return err
		}
	}
	reason := in.Reason
	if reason == "" {
		reason = rc.Request().Header.Get("X-Change-Reason")
	}
	if len(reason) > maxReasonLen {
		return badRequest("reason", fmt.Sprintf("must be at most %d bytes", maxReasonLen))
	}
	if reason == "" {
		reason = "cancelled by " + k.Name
	}
	sr, err := s.an.svc.Cancel(rc.Request().Context(), id, reason)
	if err != nil {
		return analysisError(err, codeInvalidAnalysis)
	}
	s.an.verdicts.forget(id)
	s.an.met.PhaseChanged(sr.Template.Name, "", sr.Phase)
	s.log.Info("analysis cancelled", "analysis", id, "actor", k.Name, "reason", reason, "request_id", rc.id)
	return s.writeJSON(rc, http.StatusOK, etagOf(sr.Version), analysisOut{StoredRun: sr, Verdict: verdictOf(&sr)})
}

func (s *Server) listMeasurements(rc *reqCtx, k auth.Key) error {
	id, err := idParam(rc)
	if err != nil {
		return err
	}
	if err := s.analysisAccess(k); err != nil {
		return err
	}
	after, limit := 0, 0
	if a := rc.QueryParam("after"); a != "" {
		if after, err = strconv.Atoi(a); err != nil || after < 0 {
			return badRequest("after", "must be a step number (0 or more)")
		}
	}
	if l := rc.QueryParam("limit"); l != "" {
		if limit, err = strconv.Atoi(l); err != nil || limit < 1 || limit > canary.MaxMeasurementPage {
			return badRequest("limit", fmt.Sprintf("must be a whole number from 1 to %d", canary.MaxMeasurementPage))
		}
	}
	steps, err := s.an.store.Measurements(rc.Request().Context(), id, after, limit)
	if err != nil {
		return queryError(err)
	}
	page := limit
	if page == 0 {
		page = canary.DefaultMeasurementPage
	}
	body := map[string]any{"measurements": steps}
	if n := len(steps); n > 0 && n == page {
		body["next"] = steps[n-1].Number // pass as ?after= for the following page
	}
	return s.writeJSON(rc, http.StatusOK, "", body)
}

// ---- verdicts ----

// verdictOut is the cheap verdict read. Verdict is pass, fail,
// inconclusive (also for runs that ended in Error or were cancelled: no
// decision was reached) or running; Final says it will not change.
type verdictOut struct {
	AnalysisID string          `json:"analysisId"`
	Verdict    string          `json:"verdict"`
	Final      bool            `json:"final"`
	Phase      canary.Phase    `json:"phase"`
	Score      canary.Float    `json:"score"`
	Reason     string          `json:"reason"`
	Steps      int             `json:"steps"`
	Version    int64           `json:"version"`
	Metrics    []metricVerdict `json:"metrics"`
}

// metricVerdict is one metric in the latest measurement.
type metricVerdict = canary.MetricSummary

// verdictOf summarises a run for orchestrators: canary's
// [canary.Run.Summary] with the run's ID, phase and version.
func verdictOf(sr *canary.StoredRun) verdictOut {
	sum := sr.Summary()
	return verdictOut{AnalysisID: sr.ID, Verdict: string(sum.Verdict), Final: sum.Final, Phase: sr.Phase, Score: sum.Score,
		Reason: sum.Reason, Steps: sum.Steps, Version: sr.Version, Metrics: sum.Metrics}
}

// verdictCache keeps each analysis's verdict body in memory: a final one
// until evicted, a running one for ttl. One store read per analysis at a
// time refreshes it; while the store is unreachable the last body is served.
type verdictCache struct {
	ttl time.Duration
	now func() time.Time
	mu  sync.Mutex
	m   map[string]*verdictEntry
}

type verdictEntry struct {
	mu      sync.Mutex // held while one request refreshes the entry
	body    []byte
	etag    string
	final   bool
	fetched time.Time
}

// fresh reports whether e can be served without asking the store.
func (c *verdictCache) fresh(e *verdictEntry) bool {
	return e.body != nil && (e.final || c.now().Sub(e.fetched) < c.ttl)
}

// get returns the verdict body and ETag of id, reading the store through
// fetch only when the cached one is missing or stale.
func (c *verdictCache) get(ctx context.Context, id string, fetch func(context.Context, string) (canary.StoredRun, error)) ([]byte, string, error) {
	c.mu.Lock()
	e := c.m[id]
	if e == nil {
		e = &verdictEntry{}
		c.m[id] = e
		c.evictLocked()
	}
	c.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if c.fresh(e) {
		return e.body, e.etag, nil
	}
	sr, err := fetch(ctx, id)
	if err != nil {
		if e.body != nil && errors.Is(err, canary.ErrUnavailable) {
			return e.body, e.etag, nil // fail static
		}
		if e.body == nil {
			c.forget(id)
		}
		return nil, "", err
	}
	body, err := json.Marshal(verdictOf(&sr))
	if err != nil {
		return nil, "", err
	}
	e.body, e.etag, e.final, e.fetched = body, etagOf(sr.Version), sr.Phase.Terminal(), c.now()
	return e.body, e.etag, nil
}

// evictLocked keeps the cache within its bound: stale running entries go
// first, then anything.
func (c *verdictCache) evictLocked() {
	if len(c.m) <= maxCachedVerdicts {
		return
	}
	now := c.now()
	for id, e := range c.m {
		if e.mu.TryLock() {
			stale := e.body == nil || (!e.final && now.Sub(e.fetched) >= c.ttl)
			e.mu.Unlock()
			if stale {
				delete(c.m, id)
			}
		}
	}
	for id := range c.m {
		if len(c.m) <= maxCachedVerdicts {
			break
		}
		delete(c.m, id)
	}
}

func (c *verdictCache) forget(id string) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}

// analysisVerdict serves the verdict from memory (a final verdict never
// changes; a running one is at most a second old), for orchestrators that
// poll it, such as Argo Rollouts' web metric provider.
func (s *Server) analysisVerdict(rc *reqCtx, k auth.Key) error {
	id, err := idParam(rc)
	if err != nil {
		return err
	}
	if err := s.analysisAccess(k); err != nil {
		return err
	}
	body, etag, err := s.an.verdicts.get(rc.Request().Context(), id, s.an.store.Run)
	if err != nil {
		return analysisError(err, codeInvalidAnalysis)
	}
	h := rc.Response().Header()
	h["Etag"] = []string{etag}
	h["Cache-Control"] = []string{"no-cache"}
	if notModified(rc.Request(), etag) {
		return rc.NoContent(http.StatusNotModified)
	}
	return rc.Blob(http.StatusOK, "application/json", body)
}
