package api

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/experiments"
)

// A/B experiments under /api/v1/environments/{env}/experiments: create,
// read, change, start, stop, restart, archive and delete experiments, and
// read their results as JSON or as an SVG chart. Any key of the environment
// may read; editor and admin keys may write. Starting, restarting and
// stopping write the flag through flags.Service (validated and audited as
// "experiment:<key>"). Statistics are folded by a consumer elsewhere
// (redis.ExperimentConsumer, run by flagpole serve).

// codeInvalidExperiment is the 422 code of an invalid experiment.
const codeInvalidExperiment = "invalid_experiment"

// newExperiments builds the experiment service; a nil store leaves the
// routes answering 503.
func newExperiments(s *Server, store experiments.Store) (*experiments.Service, error) {
	if store == nil {
		return nil, nil
	}
	return experiments.NewService(experiments.ServiceConfig{
		Store: store, Flags: s.svc, FlagSets: s.store,
		Now:            func() time.Time { return s.now() },
		AfterFlagWrite: s.applyWrite,
	})
}

// experimentRoutes registers the experiment routes on the /api/v1 group.
func (s *Server) experimentRoutes(v1 *echo.Group) {
	const base = "/environments/:env/experiments"
	v1.GET(base, s.withKey(s.listExperiments))
	v1.POST(base, s.withKey(s.createExperiment))
	v1.GET(base+"/:key", s.withKey(s.getExperiment))
	v1.PUT(base+"/:key", s.withKey(s.putExperiment))
	v1.DELETE(base+"/:key", s.withKey(s.deleteExperiment))
	v1.POST(base+"/:key/start", s.withKey(s.experimentAction("start")))
	v1.POST(base+"/:key/stop", s.withKey(s.experimentAction("stop")))
	v1.POST(base+"/:key/restart", s.withKey(s.experimentAction("restart")))
	v1.POST(base+"/:key/archive", s.withKey(s.experimentAction("archive")))
	v1.GET(base+"/:key/results", s.withKey(s.experimentResults))
	v1.GET(base+"/:key/results.svg", s.withKey(s.experimentChart))
}

// experimentAccess reads the environment and checks the key: any key of
// the environment may read, editor and admin keys may write.
func (s *Server) experimentAccess(rc *reqCtx, k auth.Key, write bool) (string, error) {
	env, err := envParam(rc)
	if err != nil {
		return "", err
	}
	if write {
		if err := requireEdit(k, env); err != nil {
			return "", err
		}
	} else if !k.CanEdit(env) && !k.CanEvaluate(env) {
		return "", forbidden("this key may not read environment " + fmt.Sprintf("%q", env))
	}
	if s.xp == nil {
		return "", newError(http.StatusServiceUnavailable, codeUnavailable, "experiments are not configured on this server (no experiment store)")
	}
	return env, nil
}

// experimentTarget is experimentAccess plus the experiment key of the
// path.
func (s *Server) experimentTarget(rc *reqCtx, k auth.Key, write bool) (env, key string, err error) {
	if env, err = s.experimentAccess(rc, k, write); err != nil {
		return "", "", err
	}
	if key, err = pathParam(rc, "key"); err != nil {
		return "", "", err
	}
	return env, key, nil
}

// experimentError maps experiments errors onto the API's shape.
func experimentError(err error, env, key string) error {
	var (
		ve *experiments.ValidationError
		rr *experiments.RestartRequiredError
		te *experiments.TransitionError
		fu *experiments.FlagInUseError
	)
	switch {
	case errors.As(err, &ve):
		details := make([]Detail, len(ve.Problems))
		for i, p := range ve.Problems {
			details[i] = Detail{Field: apiField(p.Path), Problem: p.Message}
		}
		msg := fmt.Sprintf("the experiment is invalid (%d problems); nothing was changed", len(details))
		if len(details) == 1 {
			msg = fmt.Sprintf("the experiment is invalid: %s: %s; nothing was changed", details[0].Field, details[0].Problem)
		}
		return &apiError{Status: http.StatusUnprocessableEntity, Code: codeInvalidExperiment, Message: msg, Details: details, cause: err}
	case errors.As(err, &rr):
		details := make([]Detail, len(rr.Fields))
		for i, f := range rr.Fields {
			f, _, _ = strings.Cut(f, " ")
			details[i] = Detail{Field: f, Problem: "changing it while the experiment runs biases the results; send ?restart=true to restart with it"}
		}
		return &apiError{Status: http.StatusConflict, Code: codeConflict, Message: rr.Error(), Details: details, cause: err}
	case errors.As(err, &te):
		return &apiError{Status: http.StatusConflict, Code: codeConflict, Message: te.Error(), Details: []Detail{{Field: "status", Problem: "is " + string(te.From)}}, cause: err}
	case errors.As(err, &fu):
		return &apiError{Status: http.StatusConflict, Code: codeConflict, Message: fu.Error(), Details: []Detail{{Field: "flagKey", Problem: "is in experiment " + fmt.Sprintf("%q", fu.Experiment)}}, cause: err}
	case errors.Is(err, experiments.ErrFlagTargeted):
		return &apiError{Status: http.StatusConflict, Code: codeConflict, Message: err.Error(),
			Details: []Detail{{Field: "flagKey", Problem: "the flag's targeting was not written by an experiment; remove it before starting"}}, cause: err}
	case errors.Is(err, experiments.ErrNotFound):
		if key == "" || errors.Is(err, experiments.ErrUnknownEnvironment) {
			return &apiError{Status: http.StatusNotFound, Code: codeNotFound, Message: fmt.Sprintf("environment %q does not exist", env), Details: []Detail{{Field: "env", Problem: "does not exist"}}, cause: err}
		}
		return &apiError{Status: http.StatusNotFound, Code: codeNotFound, Message: fmt.Sprintf("experiment %q does not exist in environment %q", key, env), Details: []Detail{{Field: "key", Problem: "does not exist"}}, cause: err}
	case errors.Is(err, experiments.ErrExists):
		return &apiError{Status: http.StatusConflict, Code: codeConflict, Message: fmt.Sprintf("experiment %q already exists in environment %q", key, env), Details: []Detail{{Field: "key", Problem: "already exists"}}, cause: err}
	case errors.Is(err, experiments.ErrConflict):
		return &apiError{Status: http.StatusPreconditionFailed, Code: codePreconditionFailed,
			Message: err.Error() + "; re-read the experiment and retry with its current ETag", cause: err}
	case errors.Is(err, experiments.ErrUnavailable):
		return &apiError{Status: http.StatusServiceUnavailable, Code: codeUnavailable, Message: "the experiment store is unavailable, so nothing was changed; retry later", cause: err}
	}
	return err
}

// experimentWriteError maps the error of a write made with o: a conflict
// with a concurrent write is a 412 only when the client sent If-Match (its
// precondition failed); without one it is a 409.
func experimentWriteError(err error, env, key string, o experiments.WriteOptions) error {
	if o.IfMatch == 0 && errors.Is(err, experiments.ErrConflict) {
		return &apiError{Status: http.StatusConflict, Code: codeConflict,
			Message: err.Error() + "; another write came first: re-read the experiment and retry", cause: err}
	}
	return experimentError(err, env, key)
}

// apiField renames domain paths to the API's names (a stop decision's
// outcome and note are its action and reason).
func apiField(p string) string {
	switch p {
	case "decision.outcome":
		return "decision.action"
	case "decision.note":
		return "decision.reason"
	}
	return p
}

// experimentIn is an experiment as a client sends it: the definition, and
// the read-only fields of a GET, which are ignored, so a read can be sent back.
type experimentIn struct {
	experiments.Experiment
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// decodeExperiment decodes an experiment body; the fields of the embedded
// experiment are named as the client sent them.
func (s *Server) decodeExperiment(rc *reqCtx, in *experimentIn) error {
	err := s.decodeJSONBody(rc, in)
	var ae *apiError
	if errors.As(err, &ae) {
		for i := range ae.Details {
			ae.Details[i].Field = strings.TrimPrefix(ae.Details[i].Field, "Experiment.")
		}
		ae.Message = strings.Replace(ae.Message, "Experiment.", "", 1)
	}
	return err
}

func experimentLocation(env, key string) string {
	return "/api/v1/environments/" + url.PathEscape(env) + "/experiments/" + url.PathEscape(key)
}

func xoptions(rc *reqCtx, k auth.Key) (experiments.WriteOptions, error) {
	o, err := writeOptions(rc, k, "")
	if err != nil {
		return experiments.WriteOptions{}, err
	}
	return experiments.WriteOptions{Actor: o.Actor, Reason: o.Reason, IfMatch: o.IfMatch}, nil
}

func (s *Server) listExperiments(rc *reqCtx, k auth.Key) error {
	env, err := s.experimentAccess(rc, k, false)
	if err != nil {
		return err
	}
	status := experiments.Status(rc.QueryParam("status"))
	list, err := s.xp.List(rc.Request().Context(), env, status)
	if err != nil {
		var ve *experiments.ValidationError
		if errors.As(err, &ve) && len(ve.Problems) > 0 {
			return badRequest(ve.Problems[0].Path, ve.Problems[0].Message)
		}
		return experimentError(err, env, "")
	}
	return s.writeJSON(rc, http.StatusOK, "", map[string]any{"experiments": list})
}

func (s *Server) createExperiment(rc *reqCtx, k auth.Key) error {
	env, err := s.experimentAccess(rc, k, true)
	if err != nil {
		return err
	}
	var in experimentIn
	if err := s.decodeExperiment(rc, &in); err != nil {
		return err
	}
	o, err := xoptions(rc, k)
	if err != nil {
		return err
	}
	st, err := s.xp.Create(rc.Request().Context(), env, in.Experiment, o)
	if err != nil {
		return experimentWriteError(err, env, in.Key, o)
	}
	s.log.Info("experiment created", "env", env, "experiment", st.Key, "actor", k.Name, "request_id", rc.id)
	rc.Response().Header().Set("Location", experimentLocation(env, st.Key))
	return s.writeJSON(rc, http.StatusCreated, st.ETag(), st)
}

func (s *Server) getExperiment(rc *reqCtx, k auth.Key) error {
	env, key, err := s.experimentTarget(rc, k, false)
	if err != nil {
		return err
	}
	st, err := s.xp.Get(rc.Request().Context(), env, key)
	if err != nil {
		return experimentError(err, env, key)
	}
	return s.writeVersioned(rc, st.Version, st)
}

func (s *Server) putExperiment(rc *reqCtx, k auth.Key) error {
	env, key, err := s.experimentTarget(rc, k, true)
	if err != nil {
		return err
	}
	restart := false
	switch r := rc.QueryParam("restart"); r {
	case "", "false":
	case "true":
		restart = true
	default:
		return badRequest("restart", `must be "true" or "false"`)
	}
	var in experimentIn
	if err := s.decodeExperiment(rc, &in); err != nil {
		return err
	}
	if in.Key != "" && in.Key != key {
		return badRequest("key", fmt.Sprintf("%q differs from the experiment named in the path, %q", in.Key, key))
	}
	o, err := xoptions(rc, k)
	if err != nil {
		return err
	}
	st, err := s.xp.Update(rc.Request().Context(), env, key, in.Experiment, restart, o)
	if err != nil {
		return experimentWriteError(err, env, key, o)
	}
	s.log.Info("experiment updated", "env", env, "experiment", key, "restart", restart, "actor", k.Name, "request_id", rc.id)
	return s.writeJSON(rc, http.StatusOK, st.ETag(), st)
}

func (s *Server) deleteExperiment(rc *reqCtx, k auth.Key) error {
	env, key, err := s.experimentTarget(rc, k, true)
	if err != nil {
		return err
	}
	o, err := xoptions(rc, k)
	if err != nil {
		return err
	}
	if err := s.xp.Delete(rc.Request().Context(), env, key, o); err != nil {
		return experimentWriteError(err, env, key, o)
	}
	s.log.Info("experiment deleted", "env", env, "experiment", key, "actor", k.Name, "request_id", rc.id)
	return rc.NoContent(http.StatusNoContent)
}

// stopIn is the body of .../stop.
type stopIn struct {
	Decision *struct {
		Action  experiments.Outcome `json:"action"`
		Variant string              `json:"variant"`
		Reason  string              `json:"reason"`
	} `json:"decision"`
}

// restartIn is the optional body of .../restart.
type restartIn struct {
	Salt string `json:"salt"`
}

// experimentAction handles start, stop, restart and archive.
func (s *Server) experimentAction(action string) keyHandler {
	return func(rc *reqCtx, k auth.Key) error {
		env, key, err := s.experimentTarget(rc, k, true)
		if err != nil {
			return err
		}
		o, err := xoptions(rc, k)
		if err != nil {
			return err
		}
		ctx := rc.Request().Context()
		var st experiments.Stored
		switch action {
		case "start":
			st, err = s.xp.Start(ctx, env, key, o)
		case "archive":
			st, err = s.xp.Archive(ctx, env, key, o)
		case "restart":
			var in restartIn
			if err := s.optionalJSONBody(rc, &in); err != nil {
				return err
			}
			st, err = s.xp.Restart(ctx, env, key, in.Salt, o)
		case "stop":
			var in stopIn
			if err := s.decodeJSONBody(rc, &in); err != nil {
				return err
			}
			if in.Decision == nil {
				return badRequest("decision", `is required: {"action": "ship", "variant": "..."}, {"action": "rollback"} or {"action": "none"}`)
			}
			switch in.Decision.Action {
			case "":
				return badRequest("decision.action", "is required: ship, rollback or none")
			case experiments.OutcomeShip, experiments.OutcomeRollback, experiments.OutcomeNone:
			default:
				return badRequest("decision.action", fmt.Sprintf("%q is not an action: ship, rollback or none", in.Decision.Action))
			}
			if in.Decision.Reason != "" {
				o.Reason = in.Decision.Reason
			}
			st, err = s.xp.Stop(ctx, env, key, experiments.StopDecision{Outcome: in.Decision.Action, Variant: in.Decision.Variant, Note: in.Decision.Reason}, o)
		}
		if err != nil {
			return experimentWriteError(err, env, key, o)
		}
		s.log.Info("experiment "+action, "env", env, "experiment", key, "status", st.Status, "actor", k.Name, "request_id", rc.id)
		return s.writeJSON(rc, http.StatusOK, st.ETag(), st)
	}
}

// optionalJSONBody decodes a JSON body when there is one.
func (s *Server) optionalJSONBody(rc *reqCtx, v any) error {
	r := rc.Request()
	data, err := readBody(r, s.bodyLimit)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if mt := mediaType(r); !isJSONType(mt) {
		return unsupportedType(r, "application/json")
	}
	return decodeJSON(data, v)
}

// resultsOut is the results JSON: experiments.Results and when it was computed.
type resultsOut struct {
	experiments.Results
	GeneratedAt time.Time `json:"generatedAt"`
}

func (s *Server) readResults(rc *reqCtx, k auth.Key) (experiments.Results, error) {
	env, key, err := s.experimentTarget(rc, k, false)
	if err != nil {
		return experiments.Results{}, err
	}
	r, _, err := s.xp.Results(rc.Request().Context(), env, key)
	if err != nil {
		return experiments.Results{}, experimentError(err, env, key)
	}
	return r, nil
}

func (s *Server) experimentResults(rc *reqCtx, k auth.Key) error {
	r, err := s.readResults(rc, k)
	if err != nil {
		return err
	}
	return s.writeJSON(rc, http.StatusOK, "", resultsOut{Results: r, GeneratedAt: s.now().UTC()})
}

func (s *Server) experimentChart(rc *reqCtx, k auth.Key) error {
	r, err := s.readResults(rc, k)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := experiments.EffectChart(&buf, r); err != nil {
		return err
	}
	h := rc.Response().Header()
	h["Cache-Control"] = hvNoStore
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	return rc.Blob(http.StatusOK, "image/svg+xml", buf.Bytes())
}
