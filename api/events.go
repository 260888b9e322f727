package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/experiments"
)

// EventAppender stores tracking events and exposures (the redis package's
// EventLog is one). Append stores a batch whole or not at all; its errors
// are those of experiments.EventLog.
type EventAppender interface {
	Append(ctx context.Context, env string, events []experiments.Event) error
}

// maxEventBatch is the most events one request may carry.
const maxEventBatch = 1000

// maxEventProblems bounds the details of one refused batch.
const maxEventProblems = 20

// eventMetrics count what the events endpoint takes in.
type eventMetrics struct {
	events *prometheus.CounterVec // type: track, exposure; result: stored, refused, failed
}

func newEventMetrics(reg prometheus.Registerer) (*eventMetrics, error) {
	m := &eventMetrics{events: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flagpole_tracking_events_total",
		Help: "Tracking events received at the events endpoint, by type (track, exposure) and result (stored; refused: the batch was invalid; failed: the event log was unavailable).",
	}, []string{"type", "result"})}
	if err := reg.Register(m.events); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *eventMetrics) count(evs []experiments.Event, result string) {
	exposures := 0
	for i := range evs {
		if evs[i].IsExposure() {
			exposures++
		}
	}
	m.events.WithLabelValues("exposure", result).Add(float64(exposures))
	m.events.WithLabelValues("track", result).Add(float64(len(evs) - exposures))
}

// trackingItem is one event of a batch as sent: the fields of
// ofrep.TrackingEvent (a test keeps them in step), with the time kept raw
// so that a bad one is reported under its own name.
type trackingItem struct {
	Name         string          `json:"name"`
	TargetingKey string          `json:"targetingKey"`
	Context      map[string]any  `json:"context"`
	Value        *float64        `json:"value"`
	Details      map[string]any  `json:"details"`
	Time         json.RawMessage `json:"time"`
}

// postEvents serves POST /api/v1/environments/{env}/events: a batch of
// tracking events (ofrep.TrackingBatch) from an SDK, stored for
// experiments. The environment's sdk key, an editor key of it or an admin
// key may send. The batch is validated whole — every problem is named, as
// in events[3].name — and stored whole: 202 {"accepted": N}.
func (s *Server) postEvents(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	if !k.CanEvaluate(env) {
		if k.Role == auth.RoleSDK {
			return forbidden("this sdk key belongs to another environment")
		}
		return forbidden(fmt.Sprintf("this key may not send events for environment %q", env))
	}
	if s.events == nil {
		return newError(http.StatusServiceUnavailable, codeUnavailable, "this server does not store tracking events (no event log is configured)")
	}
	if !s.ready.Load() {
		rc.Response().Header().Set("Retry-After", "1")
		return newError(http.StatusServiceUnavailable, codeUnavailable, "flag sets are still loading; retry shortly")
	}
	if s.env(env) == nil {
		return newError(http.StatusNotFound, codeNotFound, fmt.Sprintf("environment %q does not exist", env), Detail{Field: "env", Problem: "does not exist"})
	}
	var batch struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := s.decodeJSONBody(rc, &batch); err != nil {
		return err
	}
	switch {
	case batch.Events == nil:
		return badRequest("events", "is required: an array of 1 to 1000 events")
	case len(batch.Events) == 0:
		return badRequest("events", "is empty; send 1 to 1000 events")
	case len(batch.Events) > maxEventBatch:
		return badRequest("events", fmt.Sprintf("holds %d events; send at most %d per request", len(batch.Events), maxEventBatch))
	}
	evs, problems := decodeEvents(batch.Events, s.now().UTC())
	if len(problems) > 0 {
		s.ev.count(evs, "refused")
		msg := problems[0].Field + ": " + problems[0].Problem + "; nothing was stored"
		if len(problems) > 1 {
			msg = fmt.Sprintf("%s: %s (and %d more problems); nothing was stored", problems[0].Field, problems[0].Problem, len(problems)-1)
		}
		if len(problems) > maxEventProblems {
			problems = problems[:maxEventProblems]
		}
		return newError(http.StatusBadRequest, codeInvalidRequest, msg, problems...)
	}
	if err := s.events.Append(rc.Request().Context(), env, evs); err != nil {
		var ie *experiments.InvalidEventError
		switch {
		case errors.As(err, &ie):
			s.ev.count(evs, "refused")
			d := make([]Detail, len(ie.Problems))
			for i, p := range ie.Problems {
				d[i] = Detail{Field: eventField(ie.Index, p.Path), Problem: p.Message}
			}
			return newError(http.StatusBadRequest, codeInvalidRequest, d[0].Field+": "+d[0].Problem+"; nothing was stored", d...)
		case errors.Is(err, experiments.ErrUnavailable):
			s.ev.count(evs, "failed")
			return &apiError{Status: http.StatusServiceUnavailable, Code: codeUnavailable,
				Message: "the event log is unavailable; the events may not have been stored; retry later", cause: err}
		}
		s.ev.count(evs, "failed")
		return err
	}
	s.ev.count(evs, "stored")
	return s.writeJSON(rc, http.StatusAccepted, "", map[string]int{"accepted": len(evs)})
}

// decodeEvents decodes and checks every event of a batch, giving events
// without a time the time now, and lists every problem by its field.
func decodeEvents(raw []json.RawMessage, now time.Time) ([]experiments.Event, []Detail) {
	evs := make([]experiments.Event, len(raw))
	var problems []Detail
	for i, r := range raw {
		if len(problems) > maxEventProblems {
			break
		}
		if bytes.Equal(bytes.TrimSpace(r), []byte("null")) || (len(r) > 0 && bytes.TrimSpace(r)[0] != '{') {
			problems = append(problems, Detail{Field: fmt.Sprintf("events[%d]", i), Problem: "must be an object"})
			continue
		}
		var it trackingItem
		if err := decodeJSON(r, &it); err != nil {
			var ae *apiError
			if errors.As(err, &ae) && len(ae.Details) > 0 {
				for _, d := range ae.Details {
					problems = append(problems, Detail{Field: eventField(i, d.Field), Problem: d.Problem})
				}
			} else {
				problems = append(problems, Detail{Field: fmt.Sprintf("events[%d]", i), Problem: err.Error()})
			}
			continue
		}
		ev := experiments.Event{
			Name: it.Name, TargetingKey: it.TargetingKey, Value: it.Value,
			Details: it.Details, Context: it.Context, Time: now,
		}
		if t := bytes.TrimSpace(it.Time); len(t) > 0 && !bytes.Equal(t, []byte("null")) {
			var at time.Time
			if err := json.Unmarshal(t, &at); err != nil {
				problems = append(problems, Detail{Field: eventField(i, "time"), Problem: `must be an RFC 3339 time, such as "2025-01-02T15:04:05Z"`})
				continue
			}
			if !at.IsZero() {
				ev.Time = at.UTC()
			}
		}
		if ev.IsExposure() {
			var bad []Detail
			ev.FlagKey, bad = takeString(ev.Details, "flagKey", i, bad)
			ev.Variant, bad = takeString(ev.Details, "variant", i, bad)
			if len(bad) > 0 {
				problems = append(problems, bad...)
				continue
			}
			if len(ev.Details) == 0 {
				ev.Details = nil
			}
		}
		for _, p := range ev.Validate() {
			problems = append(problems, Detail{Field: eventField(i, p.Path), Problem: p.Message})
		}
		evs[i] = ev
	}
	return evs, problems
}

// takeString moves details[name], which must be a string when present,
// out of the details of exposure i.
func takeString(details map[string]any, name string, i int, bad []Detail) (string, []Detail) {
	v, ok := details[name]
	if !ok {
		return "", bad
	}
	s, isString := v.(string)
	if !isString {
		return "", append(bad, Detail{Field: eventField(i, "details."+name), Problem: "must be a string"})
	}
	delete(details, name)
	return s, bad
}

// eventField names a field of event i as the request spells it. The
// domain's flagKey and variant of an exposure travel in its details.
func eventField(i int, path string) string {
	switch path {
	case "flagKey", "variant":
		path = "details." + path
	case "", "body":
		return fmt.Sprintf("events[%d]", i)
	}
	if strings.HasPrefix(path, "[") {
		return fmt.Sprintf("events[%d]%s", i, path)
	}
	return fmt.Sprintf("events[%d].%s", i, path)
}
