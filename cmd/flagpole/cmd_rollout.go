package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flagpole/flagpole/canary"
)

// Progressive flag rollouts in the CLI: `flagpole rollout ...` and the kill
// switch `flagpole kill`, clients of /api/v1/environments/{env}/rollouts
// and /api/v1/flags/{key}/kill (docs/rollouts.md).

// The rollout states.
const (
	rolloutScheduled = "scheduled"
	rolloutRunning   = "running"
	rolloutPaused    = "paused"
	rolloutSucceeded = "succeeded"
	rolloutFailed    = "failed"
	rolloutAborted   = "aborted"
)

// rolloutStates lists every state, in lifecycle order.
var rolloutStates = []string{rolloutScheduled, rolloutRunning, rolloutPaused, rolloutSucceeded, rolloutFailed, rolloutAborted}

// activeRolloutStates are the states of a rollout that still owns its flag.
var activeRolloutStates = []string{rolloutScheduled, rolloutRunning, rolloutPaused}

// rolloutEnded says whether state is final.
func rolloutEnded(state string) bool {
	return state == rolloutSucceeded || state == rolloutFailed || state == rolloutAborted
}

// ---- wire types ----

// rolloutStep is one step of a rollout, as sent and as returned.
type rolloutStep struct {
	Percent     float64          `json:"percent"`
	MinDuration wireDuration     `json:"minDuration,omitempty"`
	Analysis    *rolloutAnalysis `json:"analysis,omitempty"`
}

// rolloutAnalysis is a step's analysis gate.
type rolloutAnalysis struct {
	Template string            `json:"template"`
	Values   map[string]string `json:"values,omitempty"`
}

// wireDuration is a Go duration string on the wire. It decodes leniently
// (a number is taken as seconds) so that a server's choice of form does not
// make the CLI unable to show a rollout.
type wireDuration string

func (d *wireDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*d = wireDuration(s)
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return errors.New("minDuration: must be a duration string")
	}
	*d = wireDuration((time.Duration(f * float64(time.Second))).String())
	return nil
}

// String renders the duration compactly ("10m", not "10m0s").
func (d wireDuration) String() string {
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return string(d)
	}
	return shortDuration(v)
}

// rolloutEvent is one entry of a rollout's history.
type rolloutEvent struct {
	Time    time.Time `json:"time"`
	Event   string    `json:"event"`
	Step    int       `json:"step"`
	Percent float64   `json:"percent"`
	Actor   string    `json:"actor"`
	Reason  string    `json:"reason"`
}

// rolloutJSON is a rollout as the API returns it.
type rolloutJSON struct {
	ID            string          `json:"id"`
	Env           string          `json:"env"`
	Flag          string          `json:"flag"`
	Variant       string          `json:"variant"`
	From          string          `json:"from"`
	Steps         []rolloutStep   `json:"steps"`
	OnFail        string          `json:"onFail"`
	BucketBy      string          `json:"bucketBy"`
	State         string          `json:"state"`
	Step          int             `json:"step"`
	Percent       float64         `json:"percent"`
	StepStartedAt time.Time       `json:"stepStartedAt"`
	StartAt       time.Time       `json:"startAt"`
	AnalysisID    string          `json:"analysisId"`
	Verdict       string          `json:"verdict"`
	Reason        string          `json:"reason"`
	Evidence      json.RawMessage `json:"evidence"`
	History       []rolloutEvent  `json:"history"`
	Version       int64           `json:"version"`
	CreatedAt     time.Time       `json:"createdAt"`
	UpdatedAt     time.Time       `json:"updatedAt"`
	EndedAt       time.Time       `json:"endedAt"`
	// Holding: the last step (below 100%) is done; the rollout stays there
	// until promoted. PausedOnFail: paused by a gate, not by someone.
	Holding      bool   `json:"holding"`
	PausedOnFail bool   `json:"pausedOnFail"`
	FinalVariant string `json:"finalVariant"`
}

// stateText is the state with what qualifies it: "running (holding until
// promoted)", "paused (by a failed gate)".
func (r *rolloutJSON) stateText() string {
	switch {
	case r.Holding && !rolloutEnded(r.State):
		return r.State + " (holding until promoted)"
	case r.PausedOnFail && r.State == rolloutPaused:
		return r.State + " (by its gate)"
	}
	return r.State
}

// needsAttention says whether the rollout waits for someone: paused, or
// holding at a last step below 100%.
func (r *rolloutJSON) needsAttention() bool {
	return r.State == rolloutPaused || (r.Holding && r.State == rolloutRunning)
}

// current is the step the rollout is at, or nil when the index is out of range.
func (r *rolloutJSON) current() *rolloutStep {
	if r.Step < 0 || r.Step >= len(r.Steps) {
		return nil
	}
	return &r.Steps[r.Step]
}

// stepLabel is "step 2 of 5", or "done" once succeeded (a promotion
// skips the remaining steps without moving the step index).
func (r *rolloutJSON) stepLabel() string {
	if r.State == rolloutSucceeded {
		return "done"
	}
	if len(r.Steps) == 0 {
		return "-"
	}
	return fmt.Sprintf("step %d of %d", min(r.Step+1, len(r.Steps)), len(r.Steps))
}

// plan renders the steps as "1% → 5% → [25%] → 100%", the current one
// bracketed while the rollout is active.
func (r *rolloutJSON) plan(arrow string) string {
	parts := make([]string, len(r.Steps))
	for i, s := range r.Steps {
		parts[i] = canary.FormatPercent(s.Percent)
		if i == r.Step && !rolloutEnded(r.State) && r.State != rolloutScheduled {
			parts[i] = "[" + parts[i] + "]"
		}
	}
	return strings.Join(parts, arrow)
}

// evidenceText summarises the evidence of a failed gate, whatever its
// shape: a string, an object's reason (and its failing metrics), or the
// compact JSON.
func (r *rolloutJSON) evidenceText() string {
	raw := bytes.TrimSpace(r.Evidence)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	type metric struct {
		Metric  string `json:"metric"`
		Name    string `json:"name"`
		Verdict string `json:"verdict"`
		Reason  string `json:"reason"`
	}
	var obj struct {
		Reason     string   `json:"reason"`
		Message    string   `json:"message"`
		AnalysisID string   `json:"analysisId"`
		Metrics    []metric `json:"metrics"`
		Report     *struct {
			Reason  string   `json:"reason"`
			Metrics []metric `json:"metrics"`
		} `json:"report"`
	}
	if json.Unmarshal(raw, &obj) == nil {
		reason, metrics := obj.Reason, obj.Metrics
		if obj.Report != nil {
			reason = cmp.Or(reason, obj.Report.Reason)
			metrics = append(metrics, obj.Report.Metrics...)
		}
		reason = cmp.Or(reason, obj.Message)
		if reason != "" {
			var b strings.Builder
			if obj.AnalysisID != "" {
				b.WriteString("analysis " + obj.AnalysisID + ": ")
			}
			b.WriteString(reason)
			for _, m := range metrics {
				if m.Verdict == "fail" && !strings.Contains(reason, m.Reason) {
					fmt.Fprintf(&b, "; %s: %s", cmp.Or(m.Metric, m.Name), m.Reason)
				}
			}
			return b.String()
		}
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return string(raw)
	}
	s = buf.String()
	if len(s) > 300 {
		s = s[:297] + "..."
	}
	return s
}

// shortDuration renders d without zero units: 10m, 1h30m, 2.5s, 0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func rolloutPath(env string, parts ...string) string {
	return envPath(env, append([]string{"rollouts"}, parts...)...)
}

// ---- commands ----

func (a *app) rolloutCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Ramp a flag's new variant up step by step, gated by canary analysis",
		Long: `A rollout serves a flag's new variant to a growing share of users, step by step
(for example 1% → 5% → 25% → 50% → 100%), each step held for a minimum time
and/or until an analysis gate passes, and rolls back to the old variant at
once when a gate fails (or pauses, with --on-fail pause). Users keep their
bucket as the share grows: they only ever move from the old variant to the new.

  flagpole rollout start --flag F --variant on --from off --steps 1,5,25,50,100 \
      --step-duration 10m --template http-errors
  flagpole rollout watch ID       live progress; exit 0 succeeded, 1 failed or
                                  aborted, 2 paused or --timeout
  flagpole rollout pause|resume|promote|abort|retry ID
  flagpole kill FLAG              the safe variant everywhere, now

Commands that take an ID also take --flag KEY instead: the flag's active
rollout (for retry: its latest failed or paused one). See docs/rollouts.md.`,
		Args: unknownSubcommand,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cf := a.addClientFlags(cmd)
	env := a.addEnvFlag(cmd, true)
	cmd.AddCommand(
		a.rolloutStartCommand(cf, env),
		a.rolloutStatusCommand(cf, env),
		a.rolloutListCommand(cf, env),
		a.rolloutActionCommand(cf, env, "pause", "paused", "Pause a rollout at its current step (the flag keeps serving it)", activeRolloutStates),
		a.rolloutActionCommand(cf, env, "resume", "resumed", "Resume a paused rollout", []string{rolloutPaused}),
		a.rolloutActionCommand(cf, env, "promote", "promoted", "Skip the remaining steps: serve the new variant to everyone", activeRolloutStates),
		a.rolloutActionCommand(cf, env, "abort", "aborted", "Stop a rollout and serve the old variant to everyone again", activeRolloutStates),
		a.rolloutActionCommand(cf, env, "retry", "retried", "Restart a failed or paused rollout at its step (the one that failed), with a new analysis", []string{rolloutFailed, rolloutPaused}),
		a.rolloutWatchCommand(cf, env),
	)
	return cmd
}

// rolloutStartOpts are the options of `rollout start`.
type rolloutStartOpts struct {
	file         string
	flag         string
	variant      string
	from         string
	steps        string
	stepDuration time.Duration
	template     string
	values       []string
	onFail       string
	startAt      string
	reason       string
	watch        watchOpts
	follow       bool
}

// fieldFlags are the options that describe the rollout, which -f replaces.
var rolloutFieldFlags = []string{"flag", "variant", "from", "steps", "step-duration", "template", "values", "on-fail", "start-at"}

func (a *app) rolloutStartCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	var o rolloutStartOpts
	cmd := &cobra.Command{
		Use:   "start --flag F --variant V --from V --steps 1,5,25,50,100 (--step-duration D | --template T) | -f FILE",
		Short: "Start (or schedule) a rollout and print its ID",
		Long: `Start a rollout of the flag's variant --variant, replacing --from, through the
percentages of --steps. Every step below 100% is held for --step-duration
and/or until an analysis of --template passes (the analysis compares the new
variant's users with the old variant's: see the metric label convention in
docs/rollouts.md); the rollout succeeds once it serves 100%. A step may give
its own duration as PERCENT:DURATION (5:30m). If the last step is below
100%, the rollout holds there until promoted.

--on-fail rollback (default) serves the old variant to everyone again when a
gate fails; --on-fail pause keeps the current percentage and waits for
someone to retry, resume or abort. --start-at schedules the start (RFC 3339,
or +DURATION from now).

-f FILE gives the whole request body instead (JSON or YAML, - for stdin):
{"flag","variant","from","steps":[{"percent","minDuration","analysis":
{"template","values"}}],"onFail","startAt","reason"}.`,
		Example: `  flagpole rollout start --env prod --flag new-checkout --variant on --from off \
    --steps 1,5,25,50,100 --step-duration 10m --template http-errors --values service=checkout
  flagpole rollout start --env prod --flag new-checkout --variant on --from off \
    --steps 10:5m,50:30m,100 --on-fail pause --start-at +2h --reason "launch"
  flagpole rollout start --env prod -f rollout.yaml --watch`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := a.rolloutStartBody(cmd, &o)
			if err != nil {
				return err
			}
			if o.follow {
				if err := o.watch.check(cmd); err != nil {
					return err
				}
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			envName := env.resolve(a)
			var out rolloutJSON
			r, err := cl.sendJSON(cmd.Context(), http.MethodPost, rolloutPath(envName), writeOpts{}, body, &out)
			if err != nil {
				return err
			}
			if cl.json {
				if err := printRaw(a.stdout, r.body); err != nil {
					return err
				}
			} else {
				a.printStarted(&out, envName, o.follow)
			}
			if !o.follow {
				return nil
			}
			return a.watchRollout(cmd, cl, envName, out.ID, &o.watch)
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.file, "file", "f", "", "the whole request body, JSON or YAML (- for stdin)")
	fs.StringVar(&o.flag, "flag", "", "the flag to roll out (required)")
	fs.StringVar(&o.variant, "variant", "", "the variant being rolled out (required)")
	fs.StringVar(&o.from, "from", "", "the variant it replaces (required)")
	fs.StringVar(&o.steps, "steps", "", "percentages, increasing, each optionally PERCENT:DURATION, e.g. 1,5,25,50,100 (required)")
	fs.DurationVar(&o.stepDuration, "step-duration", 0, "minimum time at each step below 100%")
	fs.StringVarP(&o.template, "template", "t", "", "analysis template gating each step below 100%")
	fs.StringArrayVar(&o.values, "values", nil, "template argument NAME=VALUE (repeatable)")
	fs.StringVar(&o.onFail, "on-fail", "rollback", "when a gate fails: rollback or pause")
	fs.StringVar(&o.startAt, "start-at", "", "start later: RFC 3339 time or +DURATION")
	fs.StringVar(&o.reason, "reason", "", "why: recorded in the flag's audit log with every step")
	fs.BoolVarP(&o.follow, "watch", "w", false, "then follow it as 'rollout watch' does (and exit as it does)")
	o.watch.register(fs)
	return cmd
}

// rolloutStartBody checks the options and builds the request body;
// problems are usage errors naming the option.
func (a *app) rolloutStartBody(cmd *cobra.Command, o *rolloutStartOpts) (any, error) {
	if err := (writeOpts{reason: o.reason}).check(cmd); err != nil {
		return nil, err
	}
	fs := cmd.Flags()
	if o.file != "" {
		var given []string
		for _, n := range rolloutFieldFlags {
			if fs.Changed(n) {
				given = append(given, "--"+n)
			}
		}
		if len(given) > 0 {
			return nil, usagef(cmd, "--file gives the whole rollout; it cannot be combined with %s", strings.Join(given, ", "))
		}
		doc, err := a.readDocument(o.file)
		if err != nil {
			return nil, err
		}
		var body map[string]json.RawMessage
		if err := json.Unmarshal(doc, &body); err != nil || body == nil {
			return nil, fmt.Errorf("%s: a rollout must be a JSON or YAML object", o.file)
		}
		if o.reason != "" {
			if _, ok := body["reason"]; !ok {
				b, _ := json.Marshal(o.reason)
				body["reason"] = b
			}
		}
		return body, nil
	}
	switch {
	case o.flag == "":
		return nil, usagef(cmd, "--flag: required (or give the whole rollout with -f FILE)")
	case o.variant == "":
		return nil, usagef(cmd, "--variant: required (the variant being rolled out)")
	case o.from == "":
		return nil, usagef(cmd, "--from: required (the variant it replaces)")
	case o.variant == o.from:
		return nil, usagef(cmd, "--variant and --from are both %q: a rollout replaces one variant with another", o.variant)
	case o.steps == "":
		return nil, usagef(cmd, "--steps: required, e.g. 1,5,25,50,100")
	case o.onFail != "rollback" && o.onFail != "pause":
		return nil, usagef(cmd, "--on-fail %q: must be rollback or pause", o.onFail)
	case o.stepDuration < 0:
		return nil, usagef(cmd, "--step-duration %s: must be positive", o.stepDuration)
	case o.template == "" && len(o.values) > 0:
		return nil, usagef(cmd, "--values: fill a template's arguments; give --template too")
	}
	values := map[string]string{}
	for _, kv := range o.values {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usagef(cmd, "--values %q: must be NAME=VALUE", kv)
		}
		if _, dup := values[k]; dup {
			return nil, usagef(cmd, "--values: %q is given twice", k)
		}
		values[k] = v
	}
	steps, err := parseSteps(o.steps, o.stepDuration, o.template, values)
	if err != nil {
		return nil, usagef(cmd, "--steps %q: %v", o.steps, err)
	}
	body := map[string]any{"flag": o.flag, "variant": o.variant, "from": o.from, "steps": steps, "onFail": o.onFail}
	if o.startAt != "" {
		at, err := parseStartAt(o.startAt, time.Now())
		if err != nil {
			return nil, usagef(cmd, "--start-at %q: %v", o.startAt, err)
		}
		body["startAt"] = at.UTC().Format(time.RFC3339)
	}
	if o.reason != "" {
		body["reason"] = o.reason
	}
	return body, nil
}

// parseSteps reads "1,5:30m,25,100": percentages in (0, 100], strictly
// increasing, at most two decimals, each optionally with its own minimum
// duration. Every step below 100% gets the default duration (when it has
// none of its own) and the template's gate; a step without either is an
// error, since nothing would hold it.
func parseSteps(spec string, dur time.Duration, template string, values map[string]string) ([]rolloutStep, error) {
	var steps []rolloutStep
	for i, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		pct, ds, hasDur := strings.Cut(item, ":")
		pct = strings.TrimSuffix(strings.TrimSpace(pct), "%")
		p, err := strconv.ParseFloat(pct, 64)
		if err != nil || math.IsNaN(p) || math.IsInf(p, 0) {
			return nil, fmt.Errorf("step %d: %q is not a percentage", i+1, item)
		}
		if p <= 0 || p > 100 {
			return nil, fmt.Errorf("step %d: %s%% must be more than 0 and at most 100", i+1, pct)
		}
		if _, frac, ok := strings.Cut(pct, "."); ok && len(frac) > 2 {
			return nil, fmt.Errorf("step %d: %s%% has more than two decimals", i+1, pct)
		}
		if n := len(steps); n > 0 && p <= steps[n-1].Percent {
			return nil, fmt.Errorf("step %d: %s%% must be more than the step before (%s)", i+1, pct, canary.FormatPercent(steps[n-1].Percent))
		}
		s := rolloutStep{Percent: p}
		if hasDur {
			d, err := time.ParseDuration(strings.TrimSpace(ds))
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("step %d: %q is not a positive duration such as 10m", i+1, ds)
			}
			s.MinDuration = wireDuration(d.String())
		}
		if p < 100 {
			if s.MinDuration == "" && dur > 0 {
				s.MinDuration = wireDuration(dur.String())
			}
			if template != "" {
				s.Analysis = &rolloutAnalysis{Template: template}
				if len(values) > 0 {
					s.Analysis.Values = values
				}
			}
			if s.MinDuration == "" && s.Analysis == nil {
				return nil, fmt.Errorf("step %d (%s) needs a minimum duration or an analysis gate: give --step-duration, --template or %s:DURATION", i+1, canary.FormatPercent(p), pct)
			}
		}
		steps = append(steps, s)
	}
	return steps, nil
}

// parseStartAt reads an RFC 3339 time or +DURATION from now.
func parseStartAt(s string, now time.Time) (time.Time, error) {
	if rest, ok := strings.CutPrefix(s, "+"); ok {
		d, err := time.ParseDuration(rest)
		if err != nil || d <= 0 {
			return time.Time{}, errors.New("must be an RFC 3339 time (2025-06-01T09:00:00Z) or +DURATION (+2h)")
		}
		return now.Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, errors.New("must be an RFC 3339 time (2025-06-01T09:00:00Z) or +DURATION (+2h)")
	}
	return t, nil
}

// printStarted reports a new rollout.
func (a *app) printStarted(r *rolloutJSON, env string, following bool) {
	verb := "started"
	if r.State == rolloutScheduled {
		verb = "scheduled for " + formatTime(r.StartAt)
	}
	fmt.Fprintf(a.stdout, "rollout %s %s in %s: %s %s → %s, %s (on fail: %s)\n",
		r.ID, verb, env, r.Flag, r.From, r.Variant, r.plan(" → "), orDash(r.OnFail))
	if !following {
		fmt.Fprintf(a.stdout, "follow it with: flagpole rollout watch %s --env %s\n", r.ID, env)
	}
}

// rolloutTarget is the ID argument or --flag of the commands that act on one rollout.
type rolloutTarget struct{ flag string }

func (t *rolloutTarget) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&t.flag, "flag", "", "act on this flag's rollout instead of giving an ID")
}

// args accepts either an ID or --flag, not both.
func (t *rolloutTarget) args(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) > 1:
		return usagef(cmd, "unexpected argument %q", args[1])
	case len(args) == 1 && t.flag != "":
		return usagef(cmd, "give a rollout ID or --flag, not both")
	case len(args) == 0 && t.flag == "":
		return usagef(cmd, "missing argument ID (or --flag KEY)")
	}
	return nil
}

// resolve returns the rollout ID: the argument, or the newest rollout of
// --flag whose state is one of states.
func (t *rolloutTarget) resolve(ctx context.Context, cl *client, env string, args []string, states []string) (string, error) {
	if len(args) == 1 {
		return args[0], nil
	}
	var out struct {
		Rollouts []rolloutJSON `json:"rollouts"`
	}
	if _, err := cl.getJSON(ctx, rolloutPath(env), url.Values{"flag": {t.flag}}, &out); err != nil {
		return "", err
	}
	for _, r := range out.Rollouts { // newest first
		if slices.Contains(states, r.State) {
			return r.ID, nil
		}
	}
	return "", fmt.Errorf("flag %s has no %s rollout in %s", t.flag, strings.Join(states, " or "), env)
}

func (a *app) rolloutStatusCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	var target rolloutTarget
	cmd := &cobra.Command{
		Use:   "status (ID | --flag KEY)",
		Short: "Show a rollout: state, progress, gate, steps and history",
		Args:  target.args,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			envName := env.resolve(a)
			id, err := target.resolve(cmd.Context(), cl, envName, args, rolloutStates)
			if err != nil {
				return err
			}
			var out rolloutJSON
			r, err := cl.getJSON(cmd.Context(), rolloutPath(envName, id), nil, &out)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			return a.printRollout(&out, time.Now())
		},
	}
	target.register(cmd)
	return cmd
}

// printRollout prints a rollout in full for `status`.
func (a *app) printRollout(r *rolloutJSON, now time.Time) error {
	tw := newTable(a.stdout)
	fmt.Fprintf(tw, "id:\t%s\n", r.ID)
	fmt.Fprintf(tw, "flag:\t%s in %s\n", r.Flag, r.Env)
	fmt.Fprintf(tw, "variant:\t%s replacing %s\n", r.Variant, r.From)
	fmt.Fprintf(tw, "state:\t%s\n", r.stateText())
	fmt.Fprintf(tw, "progress:\t%s %s (%s)\n", progressBar(r.Percent, 20, false), canary.FormatPercent(r.Percent), r.stepLabel())
	switch {
	case r.State == rolloutScheduled:
		fmt.Fprintf(tw, "starts:\t%s\n", formatTime(r.StartAt))
	case !rolloutEnded(r.State):
		fmt.Fprintf(tw, "in step:\t%s\n", timeInStep(r, now))
	}
	if r.AnalysisID != "" || r.Verdict != "" {
		fmt.Fprintf(tw, "gate:\t%s\n", gateText(r))
	}
	fmt.Fprintf(tw, "on fail:\t%s\n", orDash(r.OnFail))
	if r.BucketBy != "" {
		fmt.Fprintf(tw, "bucket by:\t%s\n", r.BucketBy)
	}
	if r.Reason != "" {
		fmt.Fprintf(tw, "reason:\t%s\n", r.Reason)
	}
	if ev := r.evidenceText(); ev != "" {
		fmt.Fprintf(tw, "evidence:\t%s\n", ev)
	}
	fmt.Fprintf(tw, "created:\t%s\n", formatTime(r.CreatedAt))
	fmt.Fprintf(tw, "updated:\t%s (version %d)\n", formatTime(r.UpdatedAt), r.Version)
	if !r.EndedAt.IsZero() {
		fmt.Fprintf(tw, "ended:\t%s\n", formatTime(r.EndedAt))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(a.stdout)
	tw = newTable(a.stdout)
	fmt.Fprintln(tw, "  STEP\tPERCENT\tMIN DURATION\tANALYSIS")
	for i, s := range r.Steps {
		mark := " "
		if i == r.Step && !rolloutEnded(r.State) && r.State != rolloutScheduled {
			mark = ">"
		}
		gate := "-"
		if s.Analysis != nil {
			gate = s.Analysis.Template
			if len(s.Analysis.Values) > 0 {
				var kv []string
				for _, k := range slices.Sorted(mapKeys(s.Analysis.Values)) {
					kv = append(kv, k+"="+s.Analysis.Values[k])
				}
				gate += " (" + strings.Join(kv, ", ") + ")"
			}
		}
		fmt.Fprintf(tw, "%s %d\t%s\t%s\t%s\n", mark, i+1, canary.FormatPercent(s.Percent), orDash(s.MinDuration.String()), gate)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.History) == 0 {
		return nil
	}
	fmt.Fprintln(a.stdout)
	tw = newTable(a.stdout)
	fmt.Fprintln(tw, "TIME\tEVENT\tSTEP\tPERCENT\tACTOR\tREASON")
	for _, e := range r.History {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", formatTime(e.Time), e.Event, e.Step+1, canary.FormatPercent(e.Percent), orDash(e.Actor), orDash(e.Reason))
	}
	return tw.Flush()
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// gateText describes the current step's analysis and its last verdict.
func gateText(r *rolloutJSON) string {
	v := r.Verdict
	if v == "" {
		v = "running"
	}
	if r.AnalysisID == "" {
		return v
	}
	return "analysis " + r.AnalysisID + ": " + v
}

// timeInStep is how long the rollout has been at its step, with the step's
// minimum duration: "2m10s (min 10m)".
func timeInStep(r *rolloutJSON, now time.Time) string {
	if r.StepStartedAt.IsZero() {
		return "-"
	}
	s := shortDuration(max(now.Sub(r.StepStartedAt), 0).Truncate(time.Second))
	if c := r.current(); c != nil && c.MinDuration != "" {
		s += " (min " + c.MinDuration.String() + ")"
	}
	return s
}

// progressBar draws percent as a bar of width cells.
func progressBar(percent float64, width int, unicode bool) string {
	full, empty := "#", "."
	if unicode {
		full, empty = "█", "░"
	}
	n := int(math.Round(math.Min(math.Max(percent, 0), 100) / 100 * float64(width)))
	if n == 0 && percent > 0 {
		n = 1 // a started rollout shows on the bar
	}
	return "[" + strings.Repeat(full, n) + strings.Repeat(empty, width-n) + "]"
}

func (a *app) rolloutListCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	var flag, state string
	cmd := &cobra.Command{
		Use:   "list [--flag KEY] [--state S]",
		Short: "List an environment's rollouts, newest first",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if state != "" && !slices.Contains(rolloutStates, state) {
				return usagef(cmd, "--state %q: must be one of %s", state, strings.Join(rolloutStates, ", "))
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			q := url.Values{}
			if flag != "" {
				q.Set("flag", flag)
			}
			if state != "" {
				q.Set("state", state)
			}
			var out struct {
				Rollouts []rolloutJSON `json:"rollouts"`
			}
			r, err := cl.getJSON(cmd.Context(), rolloutPath(env.resolve(a)), q, &out)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "ID\tFLAG\tVARIANT\tSTATE\tSTEP\tPERCENT\tVERDICT\tUPDATED")
			for _, x := range out.Rollouts {
				fmt.Fprintf(tw, "%s\t%s\t%s→%s\t%s\t%d/%d\t%s\t%s\t%s\n", x.ID, x.Flag, x.From, x.Variant, x.State,
					min(x.Step+1, len(x.Steps)), len(x.Steps), canary.FormatPercent(x.Percent), orDash(x.Verdict), formatTime(x.UpdatedAt))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&flag, "flag", "", "only rollouts of this flag")
	cmd.Flags().StringVar(&state, "state", "", "only rollouts in this state: "+strings.Join(rolloutStates, ", "))
	return cmd
}

// rolloutActionCommand is pause, resume, promote, abort or retry: POST
// .../rollouts/{id}/{action}. states are those --flag looks for.
func (a *app) rolloutActionCommand(cf *clientFlags, env *envFlag, action, done, short string, states []string) *cobra.Command {
	var (
		target rolloutTarget
		reason string
	)
	cmd := &cobra.Command{
		Use:     action + " (ID | --flag KEY) [--reason R]",
		Short:   short,
		Example: "  flagpole rollout " + action + " ro_1f2e3d --env prod --reason \"...\"\n  flagpole rollout " + action + " --flag new-checkout --env prod",
		Args:    target.args,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := (writeOpts{reason: reason}).check(cmd); err != nil {
				return err
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			envName := env.resolve(a)
			id, err := target.resolve(cmd.Context(), cl, envName, args, states)
			if err != nil {
				return err
			}
			body := map[string]string{}
			if reason != "" {
				body["reason"] = reason
			}
			var out rolloutJSON
			r, err := cl.sendJSON(cmd.Context(), http.MethodPost, rolloutPath(envName, id, action), writeOpts{}, body, &out)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			_, err = fmt.Fprintf(a.stdout, "rollout %s %s: %s is %s at %s (%s)\n", out.ID, done, out.Flag, out.State, canary.FormatPercent(out.Percent), out.stepLabel())
			return err
		},
	}
	target.register(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why: kept in the rollout's history and the flag's audit log")
	return cmd
}

// ---- kill switch ----

// killReply is POST /api/v1/flags/{key}/kill.
type killReply struct {
	Flag         string `json:"flag"`
	Environments []struct {
		Name            string   `json:"name"`
		Variant         string   `json:"variant"`
		Version         int64    `json:"version"`
		AbortedRollouts []string `json:"abortedRollouts"`
		Error           string   `json:"error"`
		Warning         string   `json:"warning"`
	} `json:"environments"`
}

func (a *app) killCommand() *cobra.Command {
	var variant, reason string
	var cf *clientFlags
	cmd := &cobra.Command{
		Use:   "kill FLAG [--variant V] [--reason R]",
		Short: "Kill switch: serve a flag's safe variant to everyone, in every environment, now",
		Long: `Turn a flag to its safe variant in every environment this key may change
(every environment for an admin key): the default variant becomes the safe
one, targeting is removed, and the flag's active rollouts are aborted.

The safe variant is --variant, else the flag's metadata "safeVariant", else
the variant its active rollout replaces. An environment where that variant
does not exist is left unchanged and reported; the command then exits 1.`,
		Example: `  flagpole kill new-checkout --reason "checkout errors, incident 4711"
  flagpole kill new-checkout --variant off`,
		Args: exactArgs("flag"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := (writeOpts{reason: reason}).check(cmd); err != nil {
				return err
			}
			if cmd.Flags().Changed("variant") && strings.TrimSpace(variant) == "" {
				return usagef(cmd, "--variant: give a variant name")
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			body := map[string]string{}
			if variant != "" {
				body["variant"] = variant
			}
			if reason != "" {
				body["reason"] = reason
			}
			var out killReply
			r, err := cl.sendJSON(cmd.Context(), http.MethodPost, "/api/v1/flags/"+url.PathEscape(args[0])+"/kill", writeOpts{}, body, &out)
			if err != nil {
				return err
			}
			var failed []string
			for _, e := range out.Environments {
				if e.Error != "" {
					failed = append(failed, e.Name)
				}
			}
			if cl.json {
				if err := printRaw(a.stdout, r.body); err != nil {
					return err
				}
			} else {
				tw := newTable(a.stdout)
				fmt.Fprintln(tw, "ENVIRONMENT\tVARIANT\tVERSION\tABORTED ROLLOUTS\tERROR")
				for _, e := range out.Environments {
					version := "-"
					if e.Version > 0 {
						version = strconv.FormatInt(e.Version, 10)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Name, orDash(e.Variant), version, orDash(strings.Join(e.AbortedRollouts, ",")), orDash(e.Error))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			for _, e := range out.Environments {
				if e.Warning != "" {
					fmt.Fprintf(a.stderr, "warning: %s: %s\n", e.Name, e.Warning)
				}
			}
			switch {
			case len(out.Environments) == 0:
				return fmt.Errorf("flag %s was not changed: no environment this key may change has it", args[0])
			case len(failed) > 0:
				return fmt.Errorf("flag %s was not killed in %d of %d environments: %s", args[0], len(failed), len(out.Environments), strings.Join(failed, ", "))
			}
			if !cl.json {
				_, err = fmt.Fprintf(a.stdout, "flag %s killed in %d environments\n", args[0], len(out.Environments))
			}
			return err
		},
	}
	cf = a.addClientFlags(cmd)
	cmd.Flags().StringVar(&variant, "variant", "", "the safe variant (default: the flag's metadata safeVariant, else its rollout's old variant)")
	cmd.Flags().StringVar(&reason, "reason", "", "why: recorded in every environment's audit log")
	return cmd
}
