package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/flags"
)

// Progressive flag rollouts under /api/v1/environments/{env}/rollouts and
// the kill switch at /api/v1/flags/{key}/kill. Editor keys may use them in
// their environments, admin keys everywhere; sdk keys may not. A
// canary.RolloutController elsewhere (flagpole serve) moves rollouts on;
// the handlers create them and apply people's actions through
// canary.RolloutService, whose flag writes go through flags.Service.

// codeInvalidRollout is the 422 code of a rollout definition with problems.
const codeInvalidRollout = "invalid_rollout"

// rolloutRoutes registers the rollout routes on the /api/v1 group.
func (s *Server) rolloutRoutes(v1 *echo.Group) {
	v1.GET("/environments/:env/rollouts", s.withKey(s.listRollouts))
	v1.POST("/environments/:env/rollouts", s.withKey(s.createRollout))
	v1.GET("/environments/:env/rollouts/:id", s.withKey(s.getRollout))
	v1.POST("/environments/:env/rollouts/:id/:action", s.withKey(s.rolloutAction))
	v1.POST("/flags/:key/kill", s.withKey(s.killFlag))
}

// rolloutAccess checks that rollouts are configured and k may edit env.
func (s *Server) rolloutAccess(k auth.Key, env string) error {
	if err := requireEdit(k, env); err != nil {
		return err
	}
	if s.rollouts == nil {
		return newError(http.StatusServiceUnavailable, codeUnavailable, "rollouts are not configured on this server (no rollout store)")
	}
	return nil
}

// rolloutRefusals are the rollout service's refusals that blame one field
// of the request, in the order rolloutError matches them; each answers its
// status and code with the error's own text.
var rolloutRefusals = []struct {
	err            error
	status         int
	code           string
	field, problem string
}{
	{canary.ErrUnknownEnvironment, http.StatusNotFound, codeNotFound, "env", "does not exist"},
	{canary.ErrUnknownFlag, http.StatusBadRequest, codeInvalidRequest, "flag", "does not exist in the environment"},
	{canary.ErrFlagTargeted, http.StatusConflict, codeConflict, "flag.targeting", "the flag has targeting rules a rollout would overwrite"},
	{canary.ErrRolloutActive, http.StatusConflict, codeConflict, "flag", "already has an active rollout in this environment"},
	{canary.ErrRolloutState, http.StatusConflict, codeConflict, "state", "does not allow this action"},
	{canary.ErrNoSafeVariant, http.StatusBadRequest, codeInvalidRequest, "variant", "required: no environment names a safe variant"},
	{canary.ErrNotFound, http.StatusNotFound, codeNotFound, "id", "does not exist"},
}

// rolloutError maps the rollout service's errors onto the API's shape.
func rolloutError(err error) error {
	var ve *canary.ValidationError
	if errors.As(err, &ve) {
		return invalidError(err, ve, "the rollout", codeInvalidRollout, nil)
	}
	for _, r := range rolloutRefusals {
		if errors.Is(err, r.err) {
			return &apiError{Status: r.status, Code: r.code, Message: trimCanary(err), Details: []Detail{{Field: r.field, Problem: r.problem}}, cause: err}
		}
	}
	switch {
	case errors.Is(err, canary.ErrConflict):
		return &apiError{Status: http.StatusConflict, Code: codeConflict, Message: trimCanary(err) + "; the rollout keeps changing, retry", cause: err}
	case errors.Is(err, canary.ErrUnavailable):
		return &apiError{Status: http.StatusServiceUnavailable, Code: codeUnavailable, Message: "the rollout store is unavailable, so nothing was changed; retry later", cause: err}
	}
	return mapError(err)
}

func trimCanary(err error) string { return strings.ReplaceAll(err.Error(), "canary: ", "") }

// rolloutReason is the body's reason, else X-Change-Reason, checked as
// every admin write checks it (writeOptions).
func rolloutReason(rc *reqCtx, k auth.Key, body string) (string, error) {
	o, err := writeOptions(rc, k, body)
	return o.Reason, err
}

// rolloutIn is the body of POST /environments/{env}/rollouts.
type rolloutIn struct {
	Flag     string               `json:"flag"`
	Variant  string               `json:"variant"`
	From     string               `json:"from"`
	Steps    []canary.RolloutStep `json:"steps"`
	OnFail   canary.OnFail        `json:"onFail"`
	BucketBy string               `json:"bucketBy"`
	StartAt  string               `json:"startAt"`
	Reason   string               `json:"reason"`
}

func rolloutLocation(env, id string) string {
	return "/api/v1/environments/" + url.PathEscape(env) + "/rollouts/" + url.PathEscape(id)
}

func (s *Server) createRollout(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	if err := s.rolloutAccess(k, env); err != nil {
		return err
	}
	var in rolloutIn
	if err := s.decodeJSONBody(rc, &in); err != nil {
		return err
	}
	if in.Flag == "" {
		return badRequest("flag", "is required")
	}
	if err := flags.CheckFlagKey(in.Flag); err != nil {
		return badRequest("flag", err.(*flags.InputError).Problem)
	}
	var startAt time.Time
	if in.StartAt != "" {
		if startAt, err = time.Parse(time.RFC3339, in.StartAt); err != nil {
			return badRequest("startAt", fmt.Sprintf("%q is not an RFC 3339 time such as 2025-03-01T12:00:00Z", in.StartAt))
		}
	}
	reason, err := rolloutReason(rc, k, in.Reason)
	if err != nil {
		return err
	}
	req := canary.RolloutRequest{Env: env, Flag: in.Flag, Variant: in.Variant, From: in.From, Steps: in.Steps,
		OnFail: in.OnFail, BucketBy: in.BucketBy, StartAt: startAt}
	sr, err := s.rollouts.Create(rc.Request().Context(), req, k.Name, reason)
	if err != nil {
		return rolloutError(err)
	}
	s.log.Info("rollout created", "rollout", sr.ID, "env", env, "flag", sr.Flag, "state", sr.State, "actor", k.Name, "request_id", rc.id)
	rc.Response().Header().Set("Location", rolloutLocation(env, sr.ID))
	return s.writeJSON(rc, http.StatusCreated, etagOf(sr.Version), sr)
}

// rolloutStates maps state names to states.
var rolloutStates = map[string]canary.RolloutState{}

func init() {
	for _, st := range []canary.RolloutState{canary.RolloutScheduled, canary.RolloutRunning, canary.RolloutPaused,
		canary.RolloutSucceeded, canary.RolloutFailed, canary.RolloutAborted} {
		rolloutStates[string(st)] = st
	}
}

func (s *Server) listRollouts(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	if err := s.rolloutAccess(k, env); err != nil {
		return err
	}
	q := canary.RolloutQuery{Env: env, Flag: rc.QueryParam("flag")}
	for _, v := range rc.QueryParams()["state"] {
		for _, name := range strings.Split(v, ",") {
			name = strings.ToLower(strings.TrimSpace(name))
			switch st, ok := rolloutStates[name]; {
			case ok:
				q.States = append(q.States, st)
			case name == "active":
				q.States = append(q.States, canary.RolloutScheduled, canary.RolloutRunning, canary.RolloutPaused)
			default:
				return badRequest("state", fmt.Sprintf("%q is not a state (scheduled, running, paused, succeeded, failed, aborted, or active)", name))
			}
		}
	}
	if l := rc.QueryParam("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > canary.MaxRolloutPage {
			return badRequest("limit", fmt.Sprintf("must be a whole number from 1 to %d", canary.MaxRolloutPage))
		}
		q.Limit = n
	}
	list, err := s.rollouts.Store().Rollouts(rc.Request().Context(), q)
	if err != nil {
		return rolloutError(err)
	}
	return s.writeJSON(rc, http.StatusOK, "", map[string]any{"rollouts": list})
}

// rolloutID reads the path's rollout ID; one that cannot exist is a 404.
func rolloutID(rc *reqCtx) (string, error) { return pathID(rc, "rollout", canary.CheckRolloutID) }

func (s *Server) getRollout(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	id, err := rolloutID(rc)
	if err != nil {
		return err
	}
	if err := s.rolloutAccess(k, env); err != nil {
		return err
	}
	sr, err := s.rollouts.Get(rc.Request().Context(), env, id)
	if err != nil {
		return rolloutError(err)
	}
	return s.writeVersioned(rc, sr.Version, sr)
}

// reasonIn is an optional body carrying a reason.
type reasonIn struct {
	Reason string `json:"reason"`
}

// optionalReason reads an optional {"reason"} body, else X-Change-Reason.
func (s *Server) optionalReason(rc *reqCtx, k auth.Key) (string, error) {
	var in reasonIn
	if err := s.optionalJSONBody(rc, &in); err != nil {
		return "", err
	}
	return rolloutReason(rc, k, in.Reason)
}

func (s *Server) rolloutAction(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	id, err := rolloutID(rc)
	if err != nil {
		return err
	}
	action := rc.Param("action")
	known := false
	for _, a := range canary.Actions {
		known = known || a == action
	}
	if !known {
		return newError(http.StatusNotFound, codeNotFound, fmt.Sprintf("no rollout action %q (%s)", action, strings.Join(canary.Actions, ", ")),
			Detail{Field: "action", Problem: "must be one of " + strings.Join(canary.Actions, ", ")})
	}
	if err := s.rolloutAccess(k, env); err != nil {
		return err
	}
	reason, err := s.optionalReason(rc, k)
	if err != nil {
		return err
	}
	sr, err := s.rollouts.Act(rc.Request().Context(), env, id, action, k.Name, reason)
	if err != nil {
		return rolloutError(err)
	}
	s.log.Info("rollout "+action, "rollout", id, "env", env, "state", sr.State, "actor", k.Name, "reason", reason, "request_id", rc.id)
	return s.writeJSON(rc, http.StatusOK, etagOf(sr.Version), sr)
}

// killIn is the body of POST /flags/{key}/kill.
type killIn struct {
	Variant string `json:"variant"`
	Reason  string `json:"reason"`
}

func (s *Server) killFlag(rc *reqCtx, k auth.Key) error {
	key, err := pathParam(rc, "key")
	if err != nil {
		return err
	}
	if k.Role != auth.RoleAdmin && k.Role != auth.RoleEditor {
		return forbidden("an sdk key may only evaluate flags; the kill switch needs an editor or admin key")
	}
	if s.rollouts == nil {
		return newError(http.StatusServiceUnavailable, codeUnavailable, "the kill switch is not configured on this server (no rollout store)")
	}
	if err := flags.CheckFlagKey(key); err != nil {
		return newError(http.StatusNotFound, codeNotFound, fmt.Sprintf("flag %q does not exist", key), Detail{Field: "key", Problem: "does not exist"})
	}
	var in killIn
	if err := s.optionalJSONBody(rc, &in); err != nil {
		return err
	}
	reason, err := rolloutReason(rc, k, in.Reason)
	if err != nil {
		return err
	}
	res, err := s.rollouts.Kill(rc.Request().Context(), key, in.Variant, k.Name, reason, k.CanEdit)
	if errors.Is(err, canary.ErrUnknownFlag) {
		return newError(http.StatusNotFound, codeNotFound, fmt.Sprintf("flag %q exists in no environment this key may change", key), Detail{Field: "key", Problem: "does not exist"})
	}
	if err != nil {
		return rolloutError(err)
	}
	s.log.Warn("kill switch", "flag", key, "variant", in.Variant, "actor", k.Name, "reason", reason, "request_id", rc.id)
	return s.writeJSON(rc, http.StatusOK, "", res)
}
