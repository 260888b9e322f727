package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/flagpole/flagpole/canary"
)

// Flagger webhooks.
//
// Flagger calls a Canary's webhooks with a JSON POST and acts on the status:
// 200–202 is "go", anything else (or a timeout) is "no", and the body of a
// "no" is quoted in Flagger's failed-check log and Kubernetes events. The
// hooks are served under /api/v1/deploy/flagger/{hook}, one path per hook
// type, so that a Canary lists the same base URL for each.
//
// A session is one canary revision: namespace/name/checksum (the checksum
// changes with every new revision; without one, namespace/name). Its
// analysis run has an ID derived from the session (SessionRunID), so every
// hook, and every Flagpole replica, finds the same run; the first gating
// hook to see the session starts it from the webhook's metadata:
//
//	template        the analysis template (required to start)
//	baselineScope   label matchers of the baseline (primary) pods
//	canaryScope     label matchers of the canary pods
//	expectedSplit   the canary's expected share of traffic, e.g. "0.1" (optional)
//	arg.NAME        the template argument NAME (optional, repeatable)
//	onInconclusive  "rollback" (default) or "wait": what a final inconclusive verdict does
//	token           a Flagpole API key (admin or editor); Flagger cannot send headers
//
// Answers, per hook (verdicts as in Verdict):
//
//	confirm-rollout           200 unless the session's analysis has failed (412); starts nothing
//	pre-rollout, rollout,
//	confirm-traffic-increase  start the analysis if needed; 200 while it runs or has passed;
//	                          412 when it failed (or ended inconclusive, under onInconclusive: rollback)
//	confirm-promotion         200 only once it passed; 409 while it runs; 412 as above
//	rollback                  200 (roll back now) when it failed (or ended inconclusive, under
//	                          rollback); 409 otherwise, including when there is no analysis
//	post-rollout              cancels a still-running analysis; notifies rollout.succeeded or
//	                          rollout.failed; always 200
//	event                     notifies rollout.step (rollout.failed / rollout.succeeded for those
//	                          phases); 202
//
// Bad payloads are 400, bad metadata 422 (naming the field), a missing or
// refused key 401/403, an unknown hook 404 — all "no" to Flagger. A verdict
// is never a 5xx; 503 means the store is unreachable (and, for the
// rollback hook, "do not roll back").

// FlaggerPayload is the JSON body Flagger posts to every webhook.
type FlaggerPayload struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	// Phase is the canary's: Initializing, Initialized, Waiting,
	// Progressing, WaitingPromotion, Promoting, Finalising, Succeeded,
	// Failed, Terminating, Terminated.
	Phase string `json:"phase"`
	// Checksum identifies the canary revision (Flagger ≥ 1.x).
	Checksum string            `json:"checksum"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// HookResponse is the body of every hook answer. Reason comes first, so
// that it leads the text Flagger quotes in its events.
type HookResponse struct {
	Reason     string       `json:"reason"`
	Hook       string       `json:"hook"`
	Decision   string       `json:"decision"`
	Session    string       `json:"session,omitempty"`
	AnalysisID string       `json:"analysisId,omitempty"`
	Verdict    string       `json:"verdict,omitempty"`
	Final      bool         `json:"final,omitempty"`
	Score      canary.Float `json:"score,omitzero"`
	Details    []detail     `json:"details,omitempty"`
}

// Decisions in HookResponse.
const (
	DecisionProceed    = "proceed"
	DecisionHalt       = "halt"
	DecisionWait       = "wait"
	DecisionRollback   = "rollback"
	DecisionNoRollback = "no-rollback"
	DecisionAccepted   = "accepted"
	DecisionInvalid    = "invalid"
	DecisionRefused    = "refused"
)

// The Flagger hook types.
const (
	HookConfirmRollout         = "confirm-rollout"
	HookPreRollout             = "pre-rollout"
	HookRollout                = "rollout"
	HookConfirmTrafficIncrease = "confirm-traffic-increase"
	HookConfirmPromotion       = "confirm-promotion"
	HookRollback               = "rollback"
	HookPostRollout            = "post-rollout"
	HookEvent                  = "event"
)

// FlaggerHooks lists the hook types served.
var FlaggerHooks = []string{HookConfirmRollout, HookPreRollout, HookRollout, HookConfirmTrafficIncrease, HookConfirmPromotion, HookRollback, HookPostRollout, HookEvent}

// Notifier enqueues notifications; *Sender is one.
type Notifier interface {
	Notify(ctx context.Context, n canary.Notification) (canary.Notification, []string, error)
}

// KeyChecker checks an API key; see CheckKeys. It returns nil for a key
// that may call, or an error wrapping ErrNoKey, ErrBadKey, ErrForbidden or
// canary.ErrUnavailable.
type KeyChecker func(ctx context.Context, key string) error

// FlaggerConfig configures the Flagger hooks. Analyses is required.
type FlaggerConfig struct {
	Analyses Analyses
	// Notifier, when set, receives rollout notifications (event and
	// post-rollout hooks).
	Notifier Notifier
	// CheckKey, when set, authenticates every call by the key in the
	// metadata's token (or an Authorization: Bearer / X-API-Key header).
	// Nil accepts every caller: only for tests and trusted networks.
	CheckKey KeyChecker
	// Logger receives hook decisions; nil discards them.
	Logger *slog.Logger
}

// Flagger serves Flagger's webhooks.
type Flagger struct {
	an       Analyses
	notifier Notifier
	checkKey KeyChecker
	log      *slog.Logger
}

// NewFlagger returns the Flagger hooks. Errors: a missing Analyses.
func NewFlagger(cfg FlaggerConfig) (*Flagger, error) {
	if cfg.Analyses == nil {
		return nil, errors.New("deploy: FlaggerConfig.Analyses is required")
	}
	f := &Flagger{an: cfg.Analyses, notifier: cfg.Notifier, checkKey: cfg.CheckKey, log: cfg.Logger}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	return f, nil
}

// FlaggerPath is the route pattern of the hooks.
const FlaggerPath = "/api/v1/deploy/flagger/{hook}"

// Routes returns the hook route (POST FlaggerPath, AuthNone: the handler
// checks the key itself).
func (f *Flagger) Routes() []Route {
	return []Route{{Method: http.MethodPost, Path: FlaggerPath, Auth: AuthNone, Handler: f}}
}

// ServeHTTP answers one hook; the hook type is the path value "hook".
func (f *Flagger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hook := r.PathValue("hook")
	reply := func(status int, resp HookResponse) {
		resp.Hook = hook
		writeJSON(w, status, resp)
	}
	known := false
	for _, h := range FlaggerHooks {
		known = known || h == hook
	}
	if !known {
		reply(http.StatusNotFound, HookResponse{Decision: DecisionInvalid, Reason: fmt.Sprintf("unknown Flagger hook %q; use one of %s", hook, strings.Join(FlaggerHooks, ", "))})
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		reply(http.StatusMethodNotAllowed, HookResponse{Decision: DecisionInvalid, Reason: "Flagger hooks are POST"})
		return
	}
	var p FlaggerPayload
	if e := decodeJSON(r, &p, false); e != nil {
		reply(statusOf(e), HookResponse{Decision: DecisionInvalid, Reason: e.Message, Details: e.Details})
		return
	}
	var missing []detail
	if p.Name == "" {
		missing = append(missing, detail{Field: "name", Problem: "required"})
	}
	if p.Namespace == "" {
		missing = append(missing, detail{Field: "namespace", Problem: "required"})
	}
	if len(missing) > 0 {
		reply(http.StatusBadRequest, HookResponse{Decision: DecisionInvalid, Reason: "the payload is not Flagger's: " + missing[0].Field + " is required", Details: missing})
		return
	}
	if f.checkKey != nil {
		key := keyOf(r)
		if key == "" {
			key = p.Metadata["token"]
		}
		if err := f.checkKey(r.Context(), key); err != nil {
			status, msg := keyError(err)
			reply(status, HookResponse{Decision: DecisionRefused, Reason: msg})
			return
		}
	}
	status, resp := f.answer(r.Context(), hook, p)
	resp.Session = sessionKey(p)
	f.log.Info("flagger hook", "hook", hook, "canary", p.Namespace+"/"+p.Name, "checksum", p.Checksum, "phase", p.Phase,
		"status", status, "decision", resp.Decision, "analysis", resp.AnalysisID, "verdict", resp.Verdict, "reason", resp.Reason)
	reply(status, resp)
}

func sessionKey(p FlaggerPayload) string {
	k := p.Namespace + "/" + p.Name
	if p.Checksum != "" {
		k += "/" + p.Checksum
	}
	return k
}

// FlaggerRunID is the analysis run ID of a Flagger session.
func FlaggerRunID(namespace, name, checksum string) string {
	return SessionRunID("flagger", namespace, name, checksum)
}

// flaggerArgs reads the run arguments from the metadata.
func flaggerArgs(md map[string]string) (template string, args canary.Args, problems []detail) {
	template = md["template"]
	args.BaselineScope, args.CanaryScope = md["baselineScope"], md["canaryScope"]
	if s := md["expectedSplit"]; s != "" {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			problems = append(problems, detail{Field: "metadata.expectedSplit", Problem: "must be a number between 0 and 1, such as 0.1"})
		}
		args.ExpectedSplit = v
	}
	for k, v := range md {
		if name, ok := strings.CutPrefix(k, "arg."); ok {
			if args.Values == nil {
				args.Values = map[string]string{}
			}
			args.Values[name] = v
		}
	}
	if p := md["onInconclusive"]; p != "" && p != "rollback" && p != "wait" {
		problems = append(problems, detail{Field: "metadata.onInconclusive", Problem: fmt.Sprintf("%q is not rollback or wait", p)})
	}
	return template, args, problems
}

// answer decides one hook.
func (f *Flagger) answer(ctx context.Context, hook string, p FlaggerPayload) (int, HookResponse) {
	id := FlaggerRunID(p.Namespace, p.Name, p.Checksum)
	waitOnInconclusive := p.Metadata["onInconclusive"] == "wait"
	switch hook {
	case HookEvent:
		return f.event(ctx, p, id)
	case HookPostRollout:
		return f.postRollout(ctx, p, id)
	}

	var sr canary.StoredRun
	var err error
	started := false
	switch hook {
	case HookConfirmRollout, HookRollback:
		sr, err = f.an.Run(ctx, id)
		if errors.Is(err, canary.ErrNotFound) {
			if hook == HookRollback {
				return http.StatusConflict, HookResponse{Decision: DecisionNoRollback, AnalysisID: id, Reason: "no analysis has started for this canary revision; nothing calls for a rollback"}
			}
			return http.StatusOK, HookResponse{Decision: DecisionProceed, AnalysisID: id, Reason: "no analysis yet for this canary revision; it starts with the first pre-rollout or rollout hook"}
		}
	default:
		template, args, problems := flaggerArgs(p.Metadata)
		if len(problems) > 0 {
			return http.StatusUnprocessableEntity, HookResponse{Decision: DecisionInvalid, AnalysisID: id, Reason: "the webhook's metadata is not usable: " + problems[0].Field + ": " + problems[0].Problem, Details: problems}
		}
		sr, started, err = f.an.Ensure(ctx, id, template, args)
		if d, ok := validationDetails(err); ok {
			for i := range d {
				d[i].Field = metadataField(d[i].Field)
			}
			return http.StatusUnprocessableEntity, HookResponse{Decision: DecisionInvalid, AnalysisID: id, Reason: "the analysis cannot start: " + d[0].Field + ": " + d[0].Problem, Details: d}
		}
	}
	if err != nil {
		return storeTrouble(hook, id, err)
	}
	v := VerdictOf(&sr.Run)
	resp := HookResponse{AnalysisID: id, Verdict: v.Verdict, Final: v.Final, Score: v.Score}
	failedNow := v.Verdict == VerdictFail || (v.Verdict == VerdictInconclusive && !waitOnInconclusive)
	what := fmt.Sprintf("analysis %s %s", id, describe(v))
	if started {
		what = "started " + what
	}
	switch {
	case hook == HookRollback && failedNow:
		resp.Decision, resp.Reason = DecisionRollback, what+"; roll back"
		return http.StatusOK, resp
	case hook == HookRollback:
		resp.Decision, resp.Reason = DecisionNoRollback, what+"; no rollback"
		return http.StatusConflict, resp
	case failedNow:
		resp.Decision, resp.Reason = DecisionHalt, what
		if v.Verdict == VerdictInconclusive {
			resp.Reason += " (metadata onInconclusive: wait holds the canary instead of failing it)"
		}
		return http.StatusPreconditionFailed, resp
	case hook == HookConfirmPromotion && v.Verdict != VerdictPass:
		resp.Decision, resp.Reason = DecisionWait, what+"; promotion waits for a pass"
		return http.StatusConflict, resp
	}
	resp.Decision, resp.Reason = DecisionProceed, what
	return http.StatusOK, resp
}

// describe says where an analysis is, for a reason line.
func describe(v Verdict) string {
	switch {
	case v.Verdict == VerdictRunning:
		return "is running: " + v.Reason
	case v.Verdict == VerdictPass:
		return "passed: " + v.Reason
	case v.Verdict == VerdictFail:
		return "failed: " + v.Reason
	}
	return "ended inconclusive: " + v.Reason
}

// metadataField names the metadata key behind a run-argument field.
func metadataField(field string) string {
	switch {
	case field == "template", field == "baselineScope", field == "canaryScope", field == "expectedSplit":
		return "metadata." + field
	case strings.HasPrefix(field, "values."):
		return "metadata.arg." + strings.TrimPrefix(field, "values.")
	}
	return field
}

func storeTrouble(hook, id string, err error) (int, HookResponse) {
	resp := HookResponse{AnalysisID: id, Decision: DecisionHalt, Reason: "the analysis store cannot be reached; retry"}
	if hook == HookRollback {
		resp.Decision = DecisionNoRollback
	}
	if !errors.Is(err, canary.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		resp.Reason = "the analysis could not be read: " + err.Error()
	}
	return http.StatusServiceUnavailable, resp
}

func (f *Flagger) postRollout(ctx context.Context, p FlaggerPayload, id string) (int, HookResponse) {
	resp := HookResponse{Decision: DecisionAccepted, AnalysisID: id, Reason: "canary " + strings.ToLower(p.Phase)}
	sr, err := f.an.Run(ctx, id)
	switch {
	case err == nil && !sr.Phase.Terminal():
		if _, cerr := f.an.Cancel(ctx, id, "Flagger reported the canary "+p.Phase); cerr != nil && !errors.Is(cerr, canary.ErrRunEnded) {
			f.log.Warn("could not cancel the analysis of a finished canary", "analysis", id, "error", cerr)
		} else {
			resp.Reason += "; analysis " + id + " cancelled"
		}
	case err == nil:
		v := VerdictOf(&sr.Run)
		resp.Verdict, resp.Final, resp.Score = v.Verdict, v.Final, v.Score
	}
	if ev, ok := terminalEvent(p.Phase); ok {
		f.notify(ctx, p, id, ev, "", "", "")
	}
	return http.StatusOK, resp
}

func terminalEvent(phase string) (canary.EventType, bool) {
	switch phase {
	case "Failed":
		return canary.EventRolloutFailed, true
	case "Succeeded":
		return canary.EventRolloutSucceeded, true
	}
	return "", false
}

func (f *Flagger) event(ctx context.Context, p FlaggerPayload, id string) (int, HookResponse) {
	if f.notifier == nil {
		return http.StatusAccepted, HookResponse{Decision: DecisionAccepted, Reason: "no notifications are configured; the event is dropped"}
	}
	ev, terminal := terminalEvent(p.Phase)
	if !terminal {
		ev = canary.EventRolloutStep
	}
	md := p.Metadata
	n, targets, err := f.notify(ctx, p, id, ev, md["eventMessage"], md["eventType"], md["timestamp"])
	switch {
	case err != nil:
		if d, ok := validationDetails(err); ok {
			return http.StatusBadRequest, HookResponse{Decision: DecisionInvalid, Reason: "the event cannot be notified: " + err.Error(), Details: d}
		}
		return http.StatusServiceUnavailable, HookResponse{Decision: DecisionRefused, Reason: "the notification outbox cannot be reached; retry"}
	case len(targets) == 0:
		return http.StatusAccepted, HookResponse{Decision: DecisionAccepted, Reason: "no webhook subscription wants " + string(ev)}
	}
	return http.StatusAccepted, HookResponse{Decision: DecisionAccepted, Reason: fmt.Sprintf("notification %s (%s) queued for %s", n.ID, ev, strings.Join(targets, ", "))}
}

// flaggerNotification is the payload of the rollout notifications made
// from Flagger's hooks.
type flaggerNotification struct {
	Source     string `json:"source"`
	Name       string `json:"name"`
	Namespace  string `json:"namespace"`
	Phase      string `json:"phase"`
	Checksum   string `json:"checksum,omitempty"`
	Message    string `json:"message,omitempty"`
	EventType  string `json:"eventType,omitempty"`
	Timestamp  string `json:"timestamp,omitempty"`
	AnalysisID string `json:"analysisId"`
	Verdict    string `json:"verdict,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// notify enqueues a rollout notification. A rollout.failed or
// rollout.succeeded is sent once per session, whichever hook reports it
// first; step events are deduplicated by their content.
func (f *Flagger) notify(ctx context.Context, p FlaggerPayload, runID string, ev canary.EventType, msg, eventType, ts string) (canary.Notification, []string, error) {
	if f.notifier == nil {
		return canary.Notification{}, nil, nil
	}
	body := flaggerNotification{Source: "flagger", Name: p.Name, Namespace: p.Namespace, Phase: p.Phase, Checksum: p.Checksum,
		Message: msg, EventType: eventType, Timestamp: ts, AnalysisID: runID}
	if sr, err := f.an.Run(ctx, runID); err == nil {
		v := VerdictOf(&sr.Run)
		body.Verdict, body.Reason = v.Verdict, v.Reason
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return canary.Notification{}, nil, err
	}
	h := sha256.Sum256([]byte(sessionKey(p)))
	id := "flagger." + hex.EncodeToString(h[:8]) + "." + string(ev)
	if ev == canary.EventRolloutStep {
		m := sha256.Sum256([]byte(sessionKey(p) + "\x00" + p.Phase + "\x00" + msg + "\x00" + ts))
		id = "flagger." + hex.EncodeToString(m[:12])
	}
	n := canary.Notification{ID: id, Event: ev, Subject: "flagger/" + p.Namespace + "/" + p.Name, Payload: payload}
	if ms, err := strconv.ParseInt(ts, 10, 64); err == nil && ms > 0 {
		n.Time = time.UnixMilli(ms).UTC()
	}
	out, targets, err := f.notifier.Notify(ctx, n)
	if err != nil {
		f.log.Warn("could not enqueue a rollout notification", "notification", id, "error", err)
	}
	return out, targets, err
}
