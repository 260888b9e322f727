package deploy

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/flagpole/flagpole/canary"
)

// Argo Rollouts.
//
// Argo's web metric provider polls a URL at each measurement interval and
// judges the JSON answer with successCondition/failureCondition. Two
// endpoints serve it:
//
//   - GET /api/v1/analyses/{id}/verdict (the API's, for a run started
//     beforehand, e.g. by a CD step), and
//   - POST ArgoPath (here), which is idempotent: it starts the session's
//     analysis on its first call and answers the same run's Verdict on
//     every call, so the AnalysisTemplate needs nothing started beforehand.
//
// A session is whatever identifies the canary revision, typically
// "NAMESPACE/ROLLOUT/POD-TEMPLATE-HASH" (the hash from the Rollout's
// podTemplateHashValue: Latest), so a gate step and a background guard of
// one revision share one run. The answer is always 200 with a Verdict for a
// valid request — Argo treats any other status as a measurement Error — and
// 4xx with the API's error shape (naming the field) for a bad one.

// ArgoPath is the route of the idempotent start-and-poll endpoint.
const ArgoPath = "/api/v1/deploy/argo/analyses"

// ArgoRequest is the body of POST ArgoPath.
type ArgoRequest struct {
	// Session identifies the canary revision (required).
	Session string `json:"session"`
	// Template, BaselineScope, CanaryScope, ExpectedSplit and Args start
	// the analysis on the session's first call (see canary.Args).
	Template      string            `json:"template"`
	BaselineScope string            `json:"baselineScope"`
	CanaryScope   string            `json:"canaryScope"`
	ExpectedSplit float64           `json:"expectedSplit,omitempty"`
	Args          map[string]string `json:"args,omitempty"`
	// Inconclusive says how a final inconclusive verdict is reported:
	// "report" (default: as "inconclusive", which Argo judges neither
	// success nor failure, so the rollout pauses for a human) or "fail"
	// (as "fail", so the rollout aborts).
	Inconclusive string `json:"inconclusive,omitempty"`
}

// ArgoRunID is the analysis run ID of an Argo session.
func ArgoRunID(session string) string {
	return SessionRunID("argo", strings.Split(session, "/")...)
}

// Argo serves the Argo Rollouts endpoint.
type Argo struct {
	an  Analyses
	log *slog.Logger
}

// NewArgo returns the Argo endpoint over an. logger nil discards. Errors:
// a nil an.
func NewArgo(an Analyses, logger *slog.Logger) (*Argo, error) {
	if an == nil {
		return nil, errors.New("deploy: NewArgo needs Analyses")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Argo{an: an, log: logger}, nil
}

// Routes returns POST ArgoPath for editor (or admin) keys.
func (a *Argo) Routes() []Route {
	return []Route{{Method: http.MethodPost, Path: ArgoPath, Auth: AuthEditor, Handler: a}}
}

// ServeHTTP starts or polls the session's analysis and answers its Verdict.
func (a *Argo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req ArgoRequest
	if e := decodeJSON(r, &req, true); e != nil {
		writeError(w, statusOf(e), e.Code, e.Message, e.Details...)
		return
	}
	var bad []detail
	if strings.TrimSpace(req.Session) == "" {
		bad = append(bad, detail{Field: "session", Problem: "required: what identifies the canary revision, such as NAMESPACE/ROLLOUT/POD-TEMPLATE-HASH"})
	} else if len(req.Session) > 512 {
		bad = append(bad, detail{Field: "session", Problem: "must be at most 512 bytes"})
	}
	if req.Inconclusive != "" && req.Inconclusive != "report" && req.Inconclusive != "fail" {
		bad = append(bad, detail{Field: "inconclusive", Problem: "must be report or fail"})
	}
	if len(bad) > 0 {
		writeError(w, http.StatusBadRequest, "invalid_request", bad[0].Field+": "+bad[0].Problem, bad...)
		return
	}
	id := ArgoRunID(req.Session)
	args := canary.Args{BaselineScope: req.BaselineScope, CanaryScope: req.CanaryScope, ExpectedSplit: req.ExpectedSplit, Values: req.Args}
	sr, started, err := a.an.Ensure(r.Context(), id, req.Template, args)
	if d, ok := validationDetails(err); ok {
		for i := range d {
			if strings.HasPrefix(d[i].Field, "values.") {
				d[i].Field = "args." + strings.TrimPrefix(d[i].Field, "values.")
			}
		}
		writeError(w, http.StatusUnprocessableEntity, "invalid_request", "the analysis cannot start: "+d[0].Field+": "+d[0].Problem, d...)
		return
	}
	if err != nil {
		writeStoreError(w, a.log, err)
		return
	}
	v := VerdictOf(&sr.Run)
	if req.Inconclusive == "fail" && v.Final && v.Verdict == VerdictInconclusive {
		v.Verdict, v.Reason = VerdictFail, "ended inconclusive, reported as fail: "+v.Reason
	}
	if started {
		a.log.Info("argo session started an analysis", "session", req.Session, "analysis", id, "template", req.Template)
	}
	writeJSON(w, http.StatusOK, v)
}
