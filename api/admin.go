package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flagpole/flagpole/api/ofrep"
	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/flags"
)

// The admin REST API under /api/v1. Every handler authenticates the caller
// (withKey), checks the role, validates input into 4xx errors that name the
// field, and writes through flags.Service. Reads go to the store; when it is
// unreachable they fall back to what this replica serves from memory.

const maxReasonLen = 1024

// envInfo is an environment in responses.
type envInfo struct {
	Name      string    `json:"name"`
	Version   int64     `json:"version"`
	UpdatedAt time.Time `json:"updatedAt"`
	FlagCount *int      `json:"flagCount,omitempty"`
}

// flagOut is a flag definition with its key, as responses show it.
type flagOut struct {
	Key            string          `json:"key"`
	State          flags.State     `json:"state"`
	Variants       map[string]any  `json:"variants"`
	DefaultVariant *string         `json:"defaultVariant"`
	Targeting      json.RawMessage `json:"targeting"`
	Metadata       map[string]any  `json:"metadata"`
}

func toFlagOut(key string, f *flags.Flag) flagOut {
	out := flagOut{Key: key, State: f.State, Variants: f.Variants, DefaultVariant: f.DefaultVariant, Targeting: f.Targeting, Metadata: f.Metadata}
	if len(out.Targeting) == 0 {
		out.Targeting = json.RawMessage("{}")
	}
	if out.Metadata == nil {
		out.Metadata = map[string]any{}
	}
	if out.Variants == nil {
		out.Variants = map[string]any{}
	}
	return out
}

// flagIn is a flag definition in a request body: the flagd fields plus the
// key (required on create) and an optional change reason.
type flagIn struct {
	Key            string          `json:"key"`
	State          flags.State     `json:"state"`
	Variants       map[string]any  `json:"variants"`
	DefaultVariant *string         `json:"defaultVariant"`
	Targeting      json.RawMessage `json:"targeting"`
	Metadata       map[string]any  `json:"metadata"`
	Reason         string          `json:"reason"`
}

func (f *flagIn) flag() *flags.Flag {
	t := f.Targeting
	if s := strings.TrimSpace(string(t)); s == "null" || s == "{}" {
		t = nil
	}
	return &flags.Flag{State: f.State, Variants: f.Variants, DefaultVariant: f.DefaultVariant, Targeting: t, Metadata: f.Metadata}
}

// writeOptions builds the service's write options: the key's name as actor,
// the reason from the body or X-Change-Reason, and If-Match.
func writeOptions(rc *reqCtx, k auth.Key, bodyReason string) (flags.WriteOptions, error) {
	reason := bodyReason
	if reason == "" {
		reason = rc.Request().Header.Get("X-Change-Reason")
	}
	if len(reason) > maxReasonLen {
		return flags.WriteOptions{}, badRequest("reason", fmt.Sprintf("must be at most %d bytes", maxReasonLen))
	}
	ifMatch, err := ifMatchVersion(rc.Request())
	if err != nil {
		return flags.WriteOptions{}, err
	}
	return flags.WriteOptions{Actor: k.Name, Reason: reason, IfMatch: ifMatch}, nil
}

// ifMatchVersion reads If-Match: absent or "*" is 0 (no precondition); an
// ETag must be a strong `"<version>"`, anything else can never match (412).
func ifMatchVersion(r *http.Request) (int64, error) {
	h := r.Header.Get("If-Match")
	if h == "" {
		return 0, nil
	}
	tags := ofrep.ParseETags(h)
	if len(tags) == 1 && tags[0] == "*" {
		return 0, nil
	}
	if len(tags) != 1 {
		return 0, badRequest("If-Match", `must be one ETag, like "12"`)
	}
	t := tags[0]
	if strings.HasPrefix(t, "W/") {
		return 0, newError(http.StatusPreconditionFailed, codePreconditionFailed, "If-Match uses strong comparison; a weak ETag never matches",
			Detail{Field: "If-Match", Problem: "weak ETag"})
	}
	v, err := strconv.ParseInt(strings.Trim(t, `"`), 10, 64)
	if err != nil || v <= 0 {
		return 0, newError(http.StatusPreconditionFailed, codePreconditionFailed, fmt.Sprintf("If-Match %s is not an ETag this API issued; nothing was changed", t),
			Detail{Field: "If-Match", Problem: "not a version ETag"})
	}
	return v, nil
}

// notModified reports whether If-None-Match matches etag (weak comparison).
func notModified(r *http.Request, etag string) bool {
	inm := r.Header.Get("If-None-Match")
	return inm != "" && ofrep.MatchesETag(inm, etag)
}

func (s *Server) writeJSON(rc *reqCtx, status int, etag string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	h := rc.Response().Header()
	if etag != "" {
		h["Etag"] = []string{etag}
	}
	h["Cache-Control"] = hvNoStore
	return rc.Blob(status, "application/json", b)
}

// readSnapshot reads env's snapshot from the store, or from memory when the
// store is unreachable and this replica serves env.
func (s *Server) readSnapshot(ctx context.Context, env string) (flags.Snapshot, error) {
	snap, err := s.store.Snapshot(ctx, env)
	if errors.Is(err, flags.ErrUnavailable) {
		if st := s.env(env); st != nil {
			return st.snapshot(), nil
		}
	}
	if errors.Is(err, flags.ErrNotFound) {
		return snap, newError(http.StatusNotFound, codeNotFound, fmt.Sprintf("environment %q does not exist", env), Detail{Field: "env", Problem: "does not exist"})
	}
	return snap, err
}

func envParam(rc *reqCtx) (string, error) {
	env, err := pathParam(rc, "env")
	rc.env = env
	return env, err
}

// applyWrite serves a snapshot a write returned at once, so that this
// replica's evaluations see the write before the response is sent.
func (s *Server) applyWrite(snap flags.Snapshot) {
	if snap.Env != "" {
		_ = s.loadSnapshot(snap)
	}
}

// ---- environments ----

func (s *Server) listEnvironments(rc *reqCtx, k auth.Key) error {
	if k.Role == auth.RoleSDK {
		return requireAdmin(k)
	}
	envs, err := s.store.Environments(rc.Request().Context())
	if errors.Is(err, flags.ErrUnavailable) {
		envs, err = s.servedEnvironments(), nil
	}
	if err != nil {
		return err
	}
	out := make([]envInfo, 0, len(envs))
	for _, e := range envs {
		if k.CanEdit(e.Name) {
			out = append(out, envInfo{Name: e.Name, Version: e.Version, UpdatedAt: e.UpdatedAt})
		}
	}
	return s.writeJSON(rc, http.StatusOK, "", map[string]any{"environments": out})
}

func (s *Server) servedEnvironments() []flags.Environment {
	m := *s.envs.Load()
	out := make([]flags.Environment, 0, len(m))
	for _, st := range m {
		out = append(out, flags.Environment{Name: st.name, Version: st.version, UpdatedAt: st.updated})
	}
	slices.SortFunc(out, func(a, b flags.Environment) int { return strings.Compare(a.Name, b.Name) })
	return out
}

type createEnvIn struct {
	Name   string          `json:"name"`
	Flags  json.RawMessage `json:"flags"`
	Reason string          `json:"reason"`
}

func (s *Server) createEnvironment(rc *reqCtx, k auth.Key) error {
	if err := requireAdmin(k); err != nil {
		return err
	}
	var in createEnvIn
	if err := s.decodeJSONBody(rc, &in); err != nil {
		return err
	}
	if err := flags.CheckEnvName(in.Name); err != nil {
		return err
	}
	rc.env = in.Name
	var doc *flags.Document
	if t := strings.TrimSpace(string(in.Flags)); t != "" && t != "null" {
		d, err := parseDocument(in.Flags, "flags")
		if err != nil {
			return underField(err, "flags")
		}
		doc = d
	}
	o, err := writeOptions(rc, k, in.Reason)
	if err != nil {
		return err
	}
	o.IfMatch = 0
	snap, err := s.svc.CreateEnvironment(rc.Request().Context(), in.Name, doc, o)
	if err != nil {
		return underField(err, "flags")
	}
	s.applyWrite(snap)
	rc.Response().Header().Set("Location", "/api/v1/environments/"+url.PathEscape(in.Name))
	return s.writeJSON(rc, http.StatusCreated, snap.ETag(), envInfo{Name: snap.Env, Version: snap.Version, UpdatedAt: snap.UpdatedAt})
}

// parseDocument parses a flagd document. Structural problems are a 422
// listing them (a *flags.ValidationError); anything else is a 400.
func parseDocument(data []byte, field string) (*flags.Document, error) {
	doc, err := flags.Parse(data)
	if err == nil {
		return doc, nil
	}
	var ve *flags.ValidationError
	if errors.As(err, &ve) {
		return nil, err
	}
	return nil, badRequest(field, err.Error())
}

// underField prefixes the problem paths of a *flags.ValidationError with
// the request member that held the flag set.
func underField(err error, field string) error {
	var ve *flags.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	probs := make([]flags.Problem, len(ve.Problems))
	for i, p := range ve.Problems {
		probs[i] = flags.Problem{Path: field + "." + p.Path, Message: p.Message}
		if p.Path == "" || p.Path == "(root)" {
			probs[i].Path = field
		}
	}
	return &flags.ValidationError{Problems: probs}
}

func (s *Server) getEnvironment(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	if err := requireEdit(k, env); err != nil {
		return err
	}
	snap, err := s.readSnapshot(rc.Request().Context(), env)
	if err != nil {
		return err
	}
	if notModified(rc.Request(), snap.ETag()) {
		rc.Response().Header()["Etag"] = []string{snap.ETag()}
		return rc.NoContent(http.StatusNotModified)
	}
	var doc struct {
		Flags map[string]json.RawMessage `json:"flags"`
	}
	if err := json.Unmarshal(snap.Document, &doc); err != nil {
		return fmt.Errorf("environment %q: stored document unreadable: %w", env, err)
	}
	n := len(doc.Flags)
	return s.writeJSON(rc, http.StatusOK, snap.ETag(), envInfo{Name: snap.Env, Version: snap.Version, UpdatedAt: snap.UpdatedAt, FlagCount: &n})
}

func (s *Server) deleteEnvironment(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	if err := requireAdmin(k); err != nil {
		return err
	}
	ctx := rc.Request().Context()
	want, err := ifMatchVersion(rc.Request())
	if err != nil {
		return err
	}
	// The store checks the version and deletes in one step, so a write that
	// lands after the client read its ETag makes this a 412, never a loss.
	if err := s.store.DeleteEnvironment(ctx, env, want); err != nil {
		switch {
		case errors.Is(err, flags.ErrNotFound):
			return newError(http.StatusNotFound, codeNotFound, fmt.Sprintf("environment %q does not exist", env), Detail{Field: "env", Problem: "does not exist"})
		case errors.Is(err, flags.ErrConflict):
			return &apiError{Status: http.StatusPreconditionFailed, Code: codePreconditionFailed,
				Message: err.Error() + "; re-read the environment and retry with its current ETag",
				Details: []Detail{{Field: "If-Match", Problem: "does not match the current version"}}, cause: err}
		}
		return err
	}
	s.removeEnv(env)
	s.log.Info("environment deleted", "environment", env, "actor", k.Name, "request_id", rc.id)
	return rc.NoContent(http.StatusNoContent)
}

// ---- flags ----

// docOf parses a stored snapshot's document.
func docOf(snap flags.Snapshot) (*flags.Document, error) {
	doc, err := flags.Parse(snap.Document)
	if err != nil {
		return nil, fmt.Errorf("environment %q holds an unreadable flag set: %w", snap.Env, err)
	}
	return doc, nil
}

func (s *Server) listFlags(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	if err := requireEdit(k, env); err != nil {
		return err
	}
	snap, err := s.readSnapshot(rc.Request().Context(), env)
	if err != nil {
		return err
	}
	if notModified(rc.Request(), snap.ETag()) {
		rc.Response().Header()["Etag"] = []string{snap.ETag()}
		return rc.NoContent(http.StatusNotModified)
	}
	doc, err := docOf(snap)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(doc.Flags))
	for key := range doc.Flags {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	out := make([]flagOut, len(keys))
	for i, key := range keys {
		out[i] = toFlagOut(key, doc.Flags[key])
	}
	return s.writeJSON(rc, http.StatusOK, snap.ETag(), map[string]any{"version": snap.Version, "flags": out})
}

// flagResponse writes the flag key as the snapshot holds it.
func (s *Server) flagResponse(rc *reqCtx, status int, snap flags.Snapshot, key string) error {
	doc, err := docOf(snap)
	if err != nil {
		return err
	}
	f := doc.Flags[key]
	if f == nil {
		return flagNotFound(snap.Env, key)
	}
	return s.writeJSON(rc, status, snap.ETag(), toFlagOut(key, f))
}

func flagNotFound(env, key string) error {
	return newError(http.StatusNotFound, codeNotFound, fmt.Sprintf("flag %q does not exist in environment %q", key, env), Detail{Field: "key", Problem: "does not exist"})
}

func (s *Server) createFlag(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	if err := requireEdit(k, env); err != nil {
		return err
	}
	var in flagIn
	if err := s.decodeJSONBody(rc, &in); err != nil {
		return err
	}
	if in.Key == "" {
		return badRequest("key", "is required")
	}
	o, err := writeOptions(rc, k, in.Reason)
	if err != nil {
		return err
	}
	snap, err := s.svc.CreateFlag(rc.Request().Context(), env, in.Key, in.flag(), o)
	if err != nil {
		return flagWriteError(err, env, in.Key)
	}
	s.applyWrite(snap)
	rc.Response().Header().Set("Location", "/api/v1/environments/"+url.PathEscape(env)+"/flags/"+url.PathEscape(in.Key))
	return s.flagResponse(rc, http.StatusCreated, snap, in.Key)
}

// flagWriteError makes the service's not-found and exists errors name what
// was missing or present.
func flagWriteError(err error, env, key string) error {
	var ae *apiError
	if errors.As(err, &ae) {
		return err
	}
	if errors.Is(err, flags.ErrExists) {
		return &apiError{Status: http.StatusConflict, Code: codeConflict, Message: fmt.Sprintf("flag %q already exists in environment %q", key, env),
			Details: []Detail{{Field: "key", Problem: "already exists"}}, cause: err}
	}
	if errors.Is(err, flags.ErrNotFound) {
		e := mapError(err)
		e.Details = []Detail{{Field: "env", Problem: "does not exist"}}
		if strings.Contains(err.Error(), "flag ") {
			e.Details = []Detail{{Field: "key", Problem: "does not exist"}}
		}
		return e
	}
	return err
}

func (s *Server) getFlag(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	key, err := pathParam(rc, "key")
	if err != nil {
		return err
	}
	if err := requireEdit(k, env); err != nil {
		return err
	}
	snap, err := s.readSnapshot(rc.Request().Context(), env)
	if err != nil {
		return err
	}
	if notModified(rc.Request(), snap.ETag()) {
		rc.Response().Header()["Etag"] = []string{snap.ETag()}
		return rc.NoContent(http.StatusNotModified)
	}
	return s.flagResponse(rc, http.StatusOK, snap, key)
}

func (s *Server) putFlag(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	key, err := pathParam(rc, "key")
	if err != nil {
		return err
	}
	if err := requireEdit(k, env); err != nil {
		return err
	}
	var in flagIn
	if err := s.decodeJSONBody(rc, &in); err != nil {
		return err
	}
	f := in.flag()
	f.Key = in.Key
	o, err := writeOptions(rc, k, in.Reason)
	if err != nil {
		return err
	}
	snap, err := s.svc.PutFlag(rc.Request().Context(), env, key, f, o)
	if err != nil {
		return flagWriteError(err, env, key)
	}
	s.applyWrite(snap)
	return s.flagResponse(rc, http.StatusOK, snap, key)
}

// patchIn is a PATCH body: every member optional.
type patchIn struct {
	State          *flags.State    `json:"state"`
	DefaultVariant json.RawMessage `json:"defaultVariant"`
	Targeting      json.RawMessage `json:"targeting"`
	Variants       map[string]any  `json:"variants"`
	Metadata       map[string]any  `json:"metadata"`
	Reason         string          `json:"reason"`
}

func (s *Server) patchFlag(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	key, err := pathParam(rc, "key")
	if err != nil {
		return err
	}
	if err := requireEdit(k, env); err != nil {
		return err
	}
	var in patchIn
	if err := s.decodeJSONBody(rc, &in); err != nil {
		return err
	}
	if in.State == nil && in.DefaultVariant == nil && in.Targeting == nil && in.Variants == nil && in.Metadata == nil {
		return badRequest("body", `nothing to change: send at least one of "state", "defaultVariant", "targeting", "variants", "metadata"`)
	}
	if in.Targeting != nil {
		if t := strings.TrimSpace(string(in.Targeting)); t != "null" && !strings.HasPrefix(t, "{") {
			return badRequest("targeting", "must be a JSON object or null")
		}
	}
	o, err := writeOptions(rc, k, in.Reason)
	if err != nil {
		return err
	}
	p := flags.FlagPatch{State: in.State, DefaultVariant: in.DefaultVariant, Targeting: in.Targeting, Variants: in.Variants, Metadata: in.Metadata}
	snap, err := s.svc.PatchFlag(rc.Request().Context(), env, key, p, o)
	if err != nil {
		return flagWriteError(err, env, key)
	}
	s.applyWrite(snap)
	return s.flagResponse(rc, http.StatusOK, snap, key)
}

func (s *Server) deleteFlag(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	key, err := pathParam(rc, "key")
	if err != nil {
		return err
	}
	if err := requireEdit(k, env); err != nil {
		return err
	}
	o, err := writeOptions(rc, k, "")
	if err != nil {
		return err
	}
	snap, err := s.svc.DeleteFlag(rc.Request().Context(), env, key, o)
	if err != nil {
		return flagWriteError(err, env, key)
	}
	s.applyWrite(snap)
	rc.Response().Header()["Etag"] = []string{snap.ETag()}
	return rc.NoContent(http.StatusNoContent)
}

// ---- flag sets ----

// exportFlagset serves the flagd document, from memory when this replica
// serves the environment (so polling clients never reach the store). An sdk
// key may read its own environment's set: it is what an in-process SDK
// evaluates.
func (s *Server) exportFlagset(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	if !k.CanEdit(env) && !(k.Role == auth.RoleSDK && k.CanEvaluate(env)) {
		if k.Role == auth.RoleSDK {
			return forbidden("this sdk key belongs to another environment")
		}
		return requireEdit(k, env)
	}
	format := rc.QueryParam("format")
	switch format {
	case "":
		if acceptsYAML(rc.Request().Header.Get("Accept")) {
			format = "yaml"
		} else {
			format = "json"
		}
	case "json", "yaml":
	default:
		return badRequest("format", `must be "json" or "yaml"`)
	}
	var snap flags.Snapshot
	if st := s.env(env); st != nil {
		snap = st.snapshot()
	} else if snap, err = s.readSnapshot(rc.Request().Context(), env); err != nil {
		return err
	}
	h := rc.Response().Header()
	h["Vary"] = append(h["Vary"], "Accept")
	h["Etag"] = []string{snap.ETag()}
	h["Cache-Control"] = []string{"no-cache"}
	if notModified(rc.Request(), snap.ETag()) {
		return rc.NoContent(http.StatusNotModified)
	}
	if format == "json" {
		return rc.Blob(http.StatusOK, "application/json", snap.Document)
	}
	doc, err := docOf(snap)
	if err != nil {
		return err
	}
	y, err := doc.YAML()
	if err != nil {
		return err
	}
	return rc.Blob(http.StatusOK, "application/yaml", y)
}

// acceptsYAML reports whether an Accept header prefers YAML over JSON.
func acceptsYAML(accept string) bool {
	if accept == "" {
		return false
	}
	yaml, jsonAt := -1, -1
	for i, part := range strings.Split(accept, ",") {
		mt := strings.TrimSpace(strings.SplitN(part, ";", 2)[0])
		switch {
		case isYAMLType(strings.ToLower(mt)) && yaml < 0:
			yaml = i
		case strings.EqualFold(mt, "application/json") && jsonAt < 0:
			jsonAt = i
		}
	}
	return yaml >= 0 && (jsonAt < 0 || yaml < jsonAt)
}

func (s *Server) importFlagset(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	if err := requireEdit(k, env); err != nil {
		return err
	}
	r := rc.Request()
	mt := mediaType(r)
	if !isJSONType(mt) && !isYAMLType(mt) {
		return unsupportedType(r, "application/json or application/yaml")
	}
	data, err := readBody(r, s.bodyLimit)
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(data)) == "" {
		return badRequest("body", "a flag set document is required")
	}
	doc, err := parseDocument(data, "body")
	if err != nil {
		return err
	}
	o, err := writeOptions(rc, k, "")
	if err != nil {
		return err
	}
	snap, err := s.svc.Import(r.Context(), env, doc, o)
	if err != nil {
		if errors.Is(err, flags.ErrNotFound) {
			return newError(http.StatusNotFound, codeNotFound, fmt.Sprintf("environment %q does not exist", env), Detail{Field: "env", Problem: "does not exist"})
		}
		return err
	}
	s.applyWrite(snap)
	return s.writeJSON(rc, http.StatusOK, snap.ETag(), envInfo{Name: snap.Env, Version: snap.Version, UpdatedAt: snap.UpdatedAt})
}

// ---- audit ----

func (s *Server) listAudit(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	if err := requireEdit(k, env); err != nil {
		return err
	}
	q := flags.AuditQuery{Flag: rc.QueryParam("flag"), Cursor: rc.QueryParam("cursor")}
	if l := rc.QueryParam("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 500 {
			return badRequest("limit", "must be a whole number from 1 to 500")
		}
		q.Limit = n
	}
	if len(q.Cursor) > 256 {
		return badRequest("cursor", "is not a cursor this API issued")
	}
	page, err := s.store.Audit(rc.Request().Context(), env, q)
	if err != nil {
		if errors.Is(err, flags.ErrNotFound) {
			return newError(http.StatusNotFound, codeNotFound, fmt.Sprintf("environment %q does not exist", env), Detail{Field: "env", Problem: "does not exist"})
		}
		return err
	}
	if page.Entries == nil {
		page.Entries = []flags.AuditEntry{}
	}
	return s.writeJSON(rc, http.StatusOK, "", page)
}

// ---- keys ----

type createKeyIn struct {
	Name         string    `json:"name"`
	Role         auth.Role `json:"role"`
	Environments []string  `json:"environments"`
}

// createdKey is the one response that shows a key's secret.
type createdKey struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	Role         auth.Role `json:"role"`
	Environments []string  `json:"environments"`
	Prefix       string    `json:"prefix"`
	CreatedAt    time.Time `json:"createdAt"`
	Secret       string    `json:"secret"`
}

// secretPrefixLen is how much of a secret is kept to recognise the key:
// the role marker and four random characters.
const secretPrefixLen = 4

func (s *Server) createKey(rc *reqCtx, k auth.Key) error {
	if err := requireAdmin(k); err != nil {
		return err
	}
	var in createKeyIn
	if err := s.decodeJSONBody(rc, &in); err != nil {
		return err
	}
	nk := auth.Key{ID: auth.NewID(), Name: strings.TrimSpace(in.Name), Role: in.Role, Envs: in.Environments, CreatedAt: s.now().UTC().Truncate(time.Millisecond)}
	if len(nk.Name) > 200 {
		return badRequest("name", "must be at most 200 characters")
	}
	if field, problem := nk.Validate(); field != "" {
		return badRequest(field, problem)
	}
	for i, env := range nk.Envs {
		if err := flags.CheckEnvName(env); err != nil {
			var ie *flags.InputError
			if errors.As(err, &ie) {
				return badRequest(fmt.Sprintf("environments[%d]", i), ie.Problem)
			}
			return err
		}
	}
	secret, hash := auth.NewSecret(nk.Role)
	nk.Hash = hash
	nk.Prefix = secret[:len("fp_")+len(nk.Role)+1+secretPrefixLen]
	if err := s.keysStore().CreateKey(rc.Request().Context(), nk); err != nil {
		return err
	}
	s.log.Info("API key created", "key_id", nk.ID, "key_name", nk.Name, "role", string(nk.Role), "actor", k.Name, "request_id", rc.id)
	rc.Response().Header().Set("Location", "/api/v1/keys/"+nk.ID)
	envs := nk.Envs
	if envs == nil {
		envs = []string{}
	}
	return s.writeJSON(rc, http.StatusCreated, "", createdKey{ID: nk.ID, Name: nk.Name, Role: nk.Role, Environments: envs, Prefix: nk.Prefix, CreatedAt: nk.CreatedAt, Secret: secret})
}

func (s *Server) listKeys(rc *reqCtx, k auth.Key) error {
	if err := requireAdmin(k); err != nil {
		return err
	}
	keys, err := s.keysStore().Keys(rc.Request().Context())
	if err != nil {
		return err
	}
	if keys == nil {
		keys = []auth.Key{}
	}
	return s.writeJSON(rc, http.StatusOK, "", map[string]any{"keys": keys})
}

func (s *Server) revokeKey(rc *reqCtx, k auth.Key) error {
	if err := requireAdmin(k); err != nil {
		return err
	}
	id, err := pathParam(rc, "id")
	if err != nil {
		return err
	}
	if err := s.keysStore().RevokeKey(rc.Request().Context(), id, s.now().UTC()); err != nil {
		if errors.Is(err, auth.ErrNotFound) {
			return newError(http.StatusNotFound, codeNotFound, fmt.Sprintf("API key %q does not exist", id), Detail{Field: "id", Problem: "does not exist"})
		}
		return err
	}
	s.keys.revoked(id)
	s.log.Info("API key revoked", "key_id", id, "actor", k.Name, "request_id", rc.id)
	return rc.NoContent(http.StatusNoContent)
}

func (s *Server) keysStore() auth.Store { return s.keys.store }
