package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/flagpole/flagpole/canary"
)

// The verdicts orchestrators see.
const (
	VerdictPass         = "pass"
	VerdictFail         = "fail"
	VerdictInconclusive = "inconclusive"
	VerdictRunning      = "running"
)

// Verdict is an analysis's answer for orchestrators: Argo Rollouts reads it
// with its web provider (successCondition result.verdict == "pass",
// failureCondition result.verdict == "fail"), Flagger's hooks and CD gates
// act on it. Final reports that the analysis has ended and the verdict
// will not change.
//
// Phases map onto verdicts as [canary.Run.Summary] says: Pending and Running
// are "running" (the latest look's score and metrics are shown); Successful
// is "pass"; Failed is "fail"; Inconclusive, Error (the metrics could not be
// measured) and Cancelled are a final "inconclusive" — never a pass.
//
// The JSON is the shape of the API's GET /api/v1/analyses/{id}/verdict, so
// that AnalysisTemplates may poll either.
type Verdict struct {
	AnalysisID string       `json:"analysisId"`
	Verdict    string       `json:"verdict"`
	Final      bool         `json:"final"`
	Phase      canary.Phase `json:"phase"`
	Score      canary.Float `json:"score"`
	Reason     string       `json:"reason"`
	// Steps counts the measurements taken.
	Steps   int             `json:"steps"`
	Metrics []MetricSummary `json:"metrics"`
}

// MetricSummary is one metric's latest verdict with its effect estimate.
type MetricSummary = canary.MetricSummary

// VerdictOf summarises a run for orchestrators: canary's
// [canary.Run.Summary] with the run's ID and phase. It never fails.
func VerdictOf(r *canary.Run) Verdict {
	sum := r.Summary()
	return Verdict{AnalysisID: r.ID, Verdict: string(sum.Verdict), Final: sum.Final, Phase: r.Phase, Score: sum.Score,
		Reason: sum.Reason, Steps: sum.Steps, Metrics: sum.Metrics}
}

// Analyses is what the orchestrator endpoints need from canary analysis:
// a run per orchestrator session, started on first sight.
type Analyses interface {
	// Ensure returns the run with ID id, starting it from the named
	// template with args when there is none (started reports which).
	// Concurrent calls for one ID start one run. Errors: a
	// *canary.ValidationError naming "template" (no such template) or the
	// bad arguments; canary.ErrUnavailable (wrapped).
	Ensure(ctx context.Context, id, template string, args canary.Args) (run canary.StoredRun, started bool, err error)
	// Run returns a run. Errors: canary.ErrNotFound, canary.ErrUnavailable.
	Run(ctx context.Context, id string) (canary.StoredRun, error)
	// Cancel ends a run as Cancelled. Errors: canary.ErrNotFound,
	// canary.ErrRunEnded, canary.ErrUnavailable.
	Cancel(ctx context.Context, id, reason string) (canary.StoredRun, error)
	// Templates lists the analysis templates.
	Templates(ctx context.Context) ([]canary.StoredTemplate, error)
}

// NewAnalyses adapts a canary.Service: runs get the caller's IDs (derived
// from the orchestrator's session), so that every replica, and every hook
// of one session, finds the same run. now nil means time.Now.
func NewAnalyses(svc *canary.Service, now func() time.Time) Analyses {
	if now == nil {
		now = time.Now
	}
	return &serviceAnalyses{svc: svc, now: now}
}

type serviceAnalyses struct {
	svc *canary.Service
	now func() time.Time
}

func (a *serviceAnalyses) Ensure(ctx context.Context, id, template string, args canary.Args) (canary.StoredRun, bool, error) {
	store := a.svc.Store()
	sr, err := store.Run(ctx, id)
	if err == nil || !errors.Is(err, canary.ErrNotFound) {
		return sr, false, err
	}
	if template == "" {
		return canary.StoredRun{}, false, &canary.ValidationError{Problems: []canary.FieldError{{Field: "template", Message: "required to start the analysis"}}}
	}
	st, err := store.Template(ctx, template)
	if errors.Is(err, canary.ErrNotFound) {
		return canary.StoredRun{}, false, &canary.ValidationError{Problems: []canary.FieldError{{Field: "template", Message: fmt.Sprintf("no analysis template is named %q", template)}}}
	}
	if err != nil {
		return canary.StoredRun{}, false, err
	}
	r, err := canary.NewRun(id, &st.Template, args, a.now().UTC())
	if err != nil {
		return canary.StoredRun{}, false, err
	}
	sr, err = store.CreateRun(ctx, r)
	if errors.Is(err, canary.ErrExists) {
		// Another replica (or hook) started it first.
		sr, err = store.Run(ctx, id)
		return sr, false, err
	}
	return sr, err == nil, err
}

func (a *serviceAnalyses) Run(ctx context.Context, id string) (canary.StoredRun, error) {
	return a.svc.Store().Run(ctx, id)
}

func (a *serviceAnalyses) Cancel(ctx context.Context, id, reason string) (canary.StoredRun, error) {
	return a.svc.Cancel(ctx, id, reason)
}

func (a *serviceAnalyses) Templates(ctx context.Context) ([]canary.StoredTemplate, error) {
	return a.svc.Store().Templates(ctx)
}

// SessionRunID derives the analysis run ID of an orchestrator session:
// source ("flagger", "argo"), then readable parts (lower-cased, other
// characters replaced by '-', each at most 40, 115 in all), then 12
// hexadecimal digits
// of a SHA-256 of every part, so that distinct sessions get distinct IDs.
// The result always passes canary.CheckRunID.
func SessionRunID(source string, parts ...string) string {
	h := sha256.New()
	h.Write([]byte(source))
	var b strings.Builder
	b.WriteString(slug(source, 20))
	for _, p := range parts {
		h.Write([]byte{0})
		h.Write([]byte(p))
		if s := slug(p, 40); s != "" {
			b.WriteString("-" + s)
		}
	}
	prefix := b.String()
	if len(prefix) > 115 {
		prefix = strings.TrimRight(prefix[:115], "-")
	}
	return prefix + "-" + hex.EncodeToString(h.Sum(nil))[:12]
}

func slug(s string, most int) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
		if b.Len() >= most {
			break
		}
	}
	return strings.TrimRight(b.String(), "-")
}
