package deploy

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/flagpole/flagpole/canary"
)

// Kayenta compatibility.
//
// Argo Rollouts' kayenta metric provider (and Spinnaker) talk to Kayenta
// with three calls, served here under KayentaPrefix:
//
//	GET  {address}/canaryConfig?application=A&configurationAccountName=C
//	     → [{"id","name","updatedTimestamp","updatedTimestampIso","applications"}]
//	POST {address}/canary/{configId}?application=…&metricsAccountName=…&…
//	     {"scopes":{NAME:{"controlScope":{"scope":…},"experimentScope":{"scope":…}}},
//	      "thresholds":{"pass":P,"marginal":M}}
//	     → {"canaryExecutionId": ID}
//	GET  {address}/canary/{executionId}
//	     → {"complete":bool,"result":{"judgeResult":{"score":{"score":S,"classification":…}}}}
//
// Canary configs are Flagpole analysis templates (id = name); an execution
// is an analysis run of the template, with the control scope as the
// baseline scope, the experiment scope as the canary scope and the scope's
// extendedScopeParams as template arguments. Kayenta clients decide by
// comparing the score with the thresholds they sent, whereas Flagpole's
// score never decides; so the score reported is the verdict mapped onto
// those thresholds — pass 100, fail 0, a final inconclusive the marginal
// threshold (Argo: Inconclusive) — and Flagpole's own score and verdict are
// under "flagpole". The thresholds travel in the execution ID.
//
// The kayenta provider sends no headers, so the API key is part of the
// address: {address} = https://flagpole.example.com/api/v1/kayenta/KEY
// (an editor key; request logs show paths, so use a key made for this).

// KayentaPrefix is the route prefix of the Kayenta API; the key follows.
const KayentaPrefix = "/api/v1/kayenta/{key}"

// Kayenta serves the Kayenta-compatible API.
type Kayenta struct {
	an       Analyses
	checkKey KeyChecker
	log      *slog.Logger
}

// NewKayenta returns the Kayenta API over an. checkKey nil accepts every
// key (tests); logger nil discards. Errors: a nil an.
func NewKayenta(an Analyses, checkKey KeyChecker, logger *slog.Logger) (*Kayenta, error) {
	if an == nil {
		return nil, errors.New("deploy: NewKayenta needs Analyses")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Kayenta{an: an, checkKey: checkKey, log: logger}, nil
}

// Routes returns the three routes (AuthNone: the key is in the path).
func (k *Kayenta) Routes() []Route {
	return []Route{
		{Method: http.MethodGet, Path: KayentaPrefix + "/canaryConfig", Auth: AuthNone, Handler: k.guard(k.configs)},
		{Method: http.MethodPost, Path: KayentaPrefix + "/canary/{config}", Auth: AuthNone, Handler: k.guard(k.start)},
		{Method: http.MethodGet, Path: KayentaPrefix + "/canary/{execution}", Auth: AuthNone, Handler: k.guard(k.execution)},
	}
}

func (k *Kayenta) guard(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if k.checkKey != nil {
			if err := k.checkKey(r.Context(), r.PathValue("key")); err != nil {
				status, msg := keyError(err)
				writeError(w, status, "unauthorized", msg)
				return
			}
		}
		h(w, r)
	})
}

// kayentaConfig is one entry of the canaryConfig list.
type kayentaConfig struct {
	ID                  string   `json:"id"`
	Name                string   `json:"name"`
	UpdatedTimestamp    int64    `json:"updatedTimestamp"`
	UpdatedTimestampIso string   `json:"updatedTimestampIso"`
	Applications        []string `json:"applications"`
}

func (k *Kayenta) configs(w http.ResponseWriter, r *http.Request) {
	ts, err := k.an.Templates(r.Context())
	if err != nil {
		writeStoreError(w, k.log, err)
		return
	}
	app := r.URL.Query().Get("application")
	apps := []string{"flagpole"}
	if app != "" {
		apps = []string{app}
	}
	out := make([]kayentaConfig, 0, len(ts))
	for _, t := range ts {
		out = append(out, kayentaConfig{ID: t.Name, Name: t.Name, UpdatedTimestamp: t.UpdatedAt.UnixMilli(),
			UpdatedTimestampIso: t.UpdatedAt.UTC().Format("2006-01-02T15:04:05.000Z"), Applications: apps})
	}
	writeJSON(w, http.StatusOK, out)
}

// kayentaScope is one side of a Kayenta scope.
type kayentaScope struct {
	Scope               string            `json:"scope"`
	Location            string            `json:"location,omitempty"`
	Region              string            `json:"region,omitempty"`
	Step                int               `json:"step,omitempty"`
	Start               string            `json:"start,omitempty"`
	End                 string            `json:"end,omitempty"`
	ExtendedScopeParams map[string]string `json:"extendedScopeParams,omitempty"`
}

// KayentaExecutionRequest is the body of POST canary/{config}.
type KayentaExecutionRequest struct {
	Scopes map[string]struct {
		ControlScope    kayentaScope `json:"controlScope"`
		ExperimentScope kayentaScope `json:"experimentScope"`
	} `json:"scopes"`
	Thresholds struct {
		Pass     float64 `json:"pass"`
		Marginal float64 `json:"marginal"`
	} `json:"thresholds"`
}

var executionRE = regexp.MustCompile(`^(.+)\.p(\d{1,3})m(\d{1,3})$`)

func (k *Kayenta) start(w http.ResponseWriter, r *http.Request) {
	var req KayentaExecutionRequest
	if e := decodeJSON(r, &req, false); e != nil {
		writeError(w, statusOf(e), e.Code, e.Message, e.Details...)
		return
	}
	var bad []detail
	if len(req.Scopes) == 0 {
		bad = append(bad, detail{Field: "scopes", Problem: "required: a scope with a controlScope and an experimentScope"})
	}
	pass, marginal := req.Thresholds.Pass, req.Thresholds.Marginal
	if pass == 0 && marginal == 0 {
		pass, marginal = canary.DefaultScorePass, canary.DefaultScoreMarginal
	}
	if pass < 0 || pass > 100 || marginal < 0 || marginal > pass {
		bad = append(bad, detail{Field: "thresholds", Problem: "need 0 <= marginal <= pass <= 100"})
	}
	if len(bad) > 0 {
		writeError(w, http.StatusBadRequest, "invalid_request", bad[0].Field+": "+bad[0].Problem, bad...)
		return
	}
	// One scope decides: "default" when present, else the first by name.
	names := make([]string, 0, len(req.Scopes))
	for n := range req.Scopes {
		names = append(names, n)
	}
	slices.Sort(names)
	name := names[0]
	if _, ok := req.Scopes["default"]; ok {
		name = "default"
	}
	sc := req.Scopes[name]
	values := map[string]string{}
	for _, p := range []map[string]string{sc.ControlScope.ExtendedScopeParams, sc.ExperimentScope.ExtendedScopeParams} {
		for key, v := range p {
			values[key] = v
		}
	}
	if len(values) == 0 {
		values = nil
	}
	config := r.PathValue("config")
	runID := canary.NewRunID(config)
	if len(runID) > 110 {
		runID = canary.NewRunID("kayenta")
	}
	sr, _, err := k.an.Ensure(r.Context(), runID, config, canary.Args{BaselineScope: sc.ControlScope.Scope, CanaryScope: sc.ExperimentScope.Scope, Values: values})
	if d, ok := validationDetails(err); ok {
		for i := range d {
			switch {
			case d[i].Field == "template":
				d[i].Field = "configId"
			case d[i].Field == "baselineScope":
				d[i].Field = "scopes." + name + ".controlScope.scope"
			case d[i].Field == "canaryScope":
				d[i].Field = "scopes." + name + ".experimentScope.scope"
			case strings.HasPrefix(d[i].Field, "values."):
				d[i].Field = "scopes." + name + ".extendedScopeParams." + strings.TrimPrefix(d[i].Field, "values.")
			}
		}
		status := http.StatusBadRequest
		if d[0].Field == "configId" {
			status = http.StatusNotFound
		}
		writeError(w, status, "invalid_request", "the canary cannot start: "+d[0].Field+": "+d[0].Problem, d...)
		return
	}
	if err != nil {
		writeStoreError(w, k.log, err)
		return
	}
	id := fmt.Sprintf("%s.p%dm%d", sr.ID, int(pass), int(marginal))
	k.log.Info("kayenta canary started", "execution", id, "config", config, "scope", name)
	writeJSON(w, http.StatusOK, map[string]string{"canaryExecutionId": id})
}

// kayentaExecution is the answer of GET canary/{execution}.
type kayentaExecution struct {
	CanaryExecutionID string         `json:"canaryExecutionId"`
	Complete          bool           `json:"complete"`
	ExecutionStatus   string         `json:"executionStatus"`
	Result            *kayentaResult `json:"result,omitempty"`
	Flagpole          Verdict        `json:"flagpole"`
}

type kayentaResult struct {
	JudgeResult struct {
		Score kayentaScore `json:"score"`
	} `json:"judgeResult"`
}

type kayentaScore struct {
	Score          float64 `json:"score"`
	Classification string  `json:"classification"`
	Reason         string  `json:"classificationReason"`
}

func (k *Kayenta) execution(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("execution")
	m := executionRE.FindStringSubmatch(id)
	if m == nil {
		writeError(w, http.StatusNotFound, "not_found", "no canary execution is named "+strconv.Quote(id))
		return
	}
	pass, _ := strconv.Atoi(m[2])
	marginal, _ := strconv.Atoi(m[3])
	sr, err := k.an.Run(r.Context(), m[1])
	if err != nil {
		writeStoreError(w, k.log, err)
		return
	}
	v := VerdictOf(&sr.Run)
	out := kayentaExecution{CanaryExecutionID: id, Complete: v.Final, ExecutionStatus: "RUNNING", Flagpole: v}
	if v.Final {
		out.ExecutionStatus = "SUCCEEDED"
		out.Result = &kayentaResult{}
		s := &out.Result.JudgeResult.Score
		s.Reason = v.Reason
		switch v.Verdict {
		case VerdictPass:
			s.Score, s.Classification = 100, "Pass"
		case VerdictFail:
			s.Score, s.Classification = 0, "Fail"
		default:
			s.Score, s.Classification = float64(marginal), "Marginal"
			if marginal >= pass { // no room between the thresholds: not a pass
				s.Score = float64(max(marginal-1, 0))
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}
