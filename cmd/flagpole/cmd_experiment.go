package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/flagpole/flagpole/experiments"
)

// The `experiment` client commands: A/B experiments on flag variants
// (docs/experiments.md).

// experimentReply is an experiment as the API returns it.
type experimentReply struct {
	experiments.Experiment
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// resultsReply is GET .../experiments/{key}/results.
type resultsReply struct {
	experiments.Results
	GeneratedAt time.Time `json:"generatedAt"`
}

func experimentPath(env string, parts ...string) string {
	return envPath(env, append([]string{"experiments"}, parts...)...)
}

func (a *app) experimentCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "experiment",
		Aliases: []string{"experiments"},
		Short:   "Create, run, stop and read A/B experiments on flag variants",
		Long: `Manage A/B experiments: an experiment names a flag, its control and treatment
variants, the traffic in the experiment and the metrics (defined on tracking
events) that judge it. Lifecycle: create (draft) → start (running: the flag's
targeting is written through the audited flag write) → stop with a decision
(ship a variant, roll back or none) → archive. 'results' shows every metric's
effect with its interval, the health checks and the recommendation.`,
		Example: `  flagpole experiment create -f checkout-test.yaml
  flagpole experiment start checkout-test --reason "Q3 checkout test"
  flagpole experiment results checkout-test --svg effects.svg
  flagpole experiment stop checkout-test --decision ship --variant new`,
		Args: unknownSubcommand,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cf := a.addClientFlags(cmd)
	env := a.addEnvFlag(cmd, true)
	cmd.AddCommand(
		a.experimentCreateCommand(cf, env),
		a.experimentListCommand(cf, env),
		a.experimentGetCommand(cf, env),
		a.experimentActionCommand(cf, env, "start", "Start a draft experiment: write its targeting to the flag", "started"),
		a.experimentStopCommand(cf, env),
		a.experimentRestartCommand(cf, env),
		a.experimentActionCommand(cf, env, "archive", "Archive a draft or stopped experiment", "archived"),
		a.experimentDeleteCommand(cf, env),
		a.experimentResultsCommand(cf, env),
	)
	return cmd
}

func (a *app) experimentCreateCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	var file string
	var o writeOpts
	cmd := &cobra.Command{
		Use:   "create -f FILE",
		Short: "Create a draft experiment from a YAML or JSON file ('-' reads standard input)",
		Long: `Create a draft experiment from a YAML or JSON file holding one experiment:
key, flagKey, hypothesis, control, treatments, weights (optional, control
first), traffic (optional percentage), metrics and analysis (optional). The
file is checked here first: its problems are listed with their fields and
nothing is sent.`,
		Example: `  flagpole experiment create -f checkout-test.yaml -e prod`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return usagef(cmd, "missing --file (-f): the experiment's YAML or JSON file, or - for standard input")
			}
			if err := o.check(cmd); err != nil {
				return err
			}
			doc, err := a.readDocument(file)
			if err != nil {
				return err
			}
			var e experiments.Experiment
			dec := json.NewDecoder(bytes.NewReader(doc))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&e); err != nil {
				var te *json.UnmarshalTypeError
				if errors.As(err, &te) && te.Value == "bool" && formatOf(file) != "json" {
					return fmt.Errorf("%s: not an experiment: %w (YAML reads on, off, yes and no as booleans: quote variant names such as \"on\")", file, err)
				}
				return fmt.Errorf("%s: not an experiment: %w", file, err)
			}
			if err := e.Validate(); err != nil {
				return fmt.Errorf("%s: %w", file, describeExperimentError(err))
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			r, err := cl.do(cmd.Context(), call{method: http.MethodPost, path: experimentPath(env.resolve(a)), header: o.header(), body: doc})
			if err != nil {
				return err
			}
			return a.reportExperiment(cl, r, "created")
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the experiment's YAML or JSON file ('-' for standard input)")
	addWriteFlags(cmd, &o)
	return cmd
}

// describeExperimentError lists an experiment's problems one per line.
func describeExperimentError(err error) error {
	var ve *experiments.ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) == 0 {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "the experiment is invalid (%d problems)", len(ve.Problems))
	for _, p := range ve.Problems {
		b.WriteString("\n  " + p.String())
	}
	return errors.New(b.String())
}

// reportExperiment prints a written experiment: the reply for -o json, a
// line otherwise.
func (a *app) reportExperiment(cl *client, r reply, verb string) error {
	if cl.json {
		return printRaw(a.stdout, r.body)
	}
	var x experimentReply
	if err := decodeReply(r, &x); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "experiment %s %s (%s, version %d)\n", x.Key, verb, x.Status, x.Version)
	return nil
}

func (a *app) experimentListCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	var status string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List experiments (optionally of one status)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch experiments.Status(status) {
			case "", experiments.StatusDraft, experiments.StatusRunning, experiments.StatusStopped, experiments.StatusArchived:
			default:
				return usagef(cmd, "--status %q: must be draft, running, stopped or archived", status)
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			var q url.Values
			if status != "" {
				q = url.Values{"status": {status}}
			}
			var out struct {
				Experiments []experimentReply `json:"experiments"`
			}
			r, err := cl.getJSON(cmd.Context(), experimentPath(env.resolve(a)), q, &out)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "KEY\tSTATUS\tFLAG\tARMS\tTRAFFIC\tMETRICS\tSTARTED\tDECISION")
			for _, x := range out.Experiments {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", x.Key, x.Status, x.FlagKey, strings.Join(x.Arms(), ","),
					fmtTraffic(x.Traffic), len(x.Metrics), fmtTimePtr(x.StartedAt), fmtDecision(x.Decision))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&status, "status", "", "only experiments with this status: draft, running, stopped or archived")
	return cmd
}

func (a *app) experimentGetCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	return &cobra.Command{
		Use:   "get KEY",
		Short: "Show an experiment",
		Args:  exactArgs("key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			var x experimentReply
			r, err := cl.getJSON(cmd.Context(), experimentPath(env.resolve(a), args[0]), nil, &x)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			return printExperiment(a.stdout, &x)
		},
	}
}

func printExperiment(w io.Writer, x *experimentReply) error {
	tw := newTable(w)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("Key:", x.Key)
	row("Flag:", x.FlagKey)
	row("Status:", string(x.Status))
	row("Version:", strconv.FormatInt(x.Version, 10))
	if x.Hypothesis != "" {
		row("Hypothesis:", x.Hypothesis)
	}
	weights := x.SplitWeights()
	var arms []string
	for i, arm := range x.Arms() {
		role := "treatment"
		if i == 0 {
			role = "control"
		}
		if i < len(weights) {
			arms = append(arms, fmt.Sprintf("%s (%s, weight %d)", arm, role, weights[i]))
		}
	}
	row("Arms:", strings.Join(arms, ", "))
	row("Traffic:", fmtTraffic(x.Traffic))
	an := x.Analysis
	an.Defaults()
	row("Analysis:", fmt.Sprintf("%s, alpha %s, power %s, %s correction, minimum effect %s", an.Mode, fmtG(an.Alpha), fmtG(an.Power), an.Correction, fmtRel(an.MinimumEffect, false)))
	row("Salt:", x.Salt)
	if x.Restarts > 0 {
		row("Restarts:", strconv.Itoa(x.Restarts))
	}
	row("Started:", fmtTimePtr(x.StartedAt))
	if x.StoppedAt != nil {
		row("Stopped:", fmtTimePtr(x.StoppedAt))
	}
	if x.Decision != nil {
		row("Decision:", fmtDecision(x.Decision))
	}
	if x.ArchivedAt != nil {
		row("Archived:", fmtTimePtr(x.ArchivedAt))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = newTable(w)
	fmt.Fprintln(tw, "METRIC\tKIND\tEVENT\tROLE\tDIRECTION\tCAP")
	for _, m := range x.Metrics {
		event := m.Event
		if m.Numerator != nil && m.Denominator != nil {
			event = fmt.Sprintf("%s(%s) / %s(%s)", m.Numerator.Aggregate, m.Numerator.Event, m.Denominator.Aggregate, m.Denominator.Event)
		}
		dir := m.Direction
		if dir == "" {
			dir = experiments.HigherIsBetter
		}
		capText := "-"
		if m.Cap > 0 {
			capText = fmtG(m.Cap)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Key, m.Kind, event, m.Role, dir, capText)
	}
	return tw.Flush()
}

// experimentActionCommand is start and archive: a POST without a body.
func (a *app) experimentActionCommand(cf *clientFlags, env *envFlag, action, short, verb string) *cobra.Command {
	var o writeOpts
	cmd := &cobra.Command{
		Use:   action + " KEY",
		Short: short,
		Args:  exactArgs("key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(cmd); err != nil {
				return err
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			r, err := cl.do(cmd.Context(), call{method: http.MethodPost, path: experimentPath(env.resolve(a), args[0], action), header: o.header()})
			if err != nil {
				return err
			}
			return a.reportExperiment(cl, r, verb)
		},
	}
	addWriteFlags(cmd, &o)
	return cmd
}

func (a *app) experimentStopCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	var o writeOpts
	var decision, variant string
	cmd := &cobra.Command{
		Use:   "stop KEY --decision ship|rollback|none [--variant V]",
		Short: "Stop a running experiment with a decision",
		Long: `Stop a running experiment and record the decision:

  ship      serve --variant (a treatment, or the control) to everyone
  rollback  serve the control to everyone
  none      serve the control to everyone, recording that nothing was decided

The flag's experiment targeting and its "experiment" metadata are removed in
the same audited flag write. --reason is kept with the decision.`,
		Example: `  flagpole experiment stop checkout-test --decision ship --variant new --reason "+4% conversion"`,
		Args:    exactArgs("key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(cmd); err != nil {
				return err
			}
			switch experiments.Outcome(decision) {
			case experiments.OutcomeShip:
				if variant == "" {
					return usagef(cmd, "--decision ship needs --variant: the variant to serve to everyone")
				}
			case experiments.OutcomeRollback, experiments.OutcomeNone:
				if variant != "" {
					return usagef(cmd, "--variant applies to --decision ship only")
				}
			case "":
				return usagef(cmd, "missing --decision: ship, rollback or none")
			default:
				return usagef(cmd, "--decision %q: must be ship, rollback or none", decision)
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			type decisionIn struct {
				Action  string `json:"action"`
				Variant string `json:"variant,omitempty"`
				Reason  string `json:"reason,omitempty"`
			}
			body := map[string]decisionIn{"decision": {Action: decision, Variant: variant, Reason: o.reason}}
			r, err := cl.sendJSON(cmd.Context(), http.MethodPost, experimentPath(env.resolve(a), args[0], "stop"), o, body, nil)
			if err != nil {
				return err
			}
			return a.reportExperiment(cl, r, "stopped")
		},
	}
	cmd.Flags().StringVar(&decision, "decision", "", "ship, rollback or none")
	cmd.Flags().StringVar(&variant, "variant", "", "the variant to ship (with --decision ship)")
	addWriteFlags(cmd, &o)
	return cmd
}

func (a *app) experimentRestartCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	var o writeOpts
	var salt string
	cmd := &cobra.Command{
		Use:   "restart KEY [--salt S]",
		Short: "Restart a running experiment: new assignment salt, statistics reset",
		Long: `Restart a running experiment: users are randomised again with a new salt
(derived from the restart count unless --salt is given) and the statistics
start over; exposures and events before the restart no longer count.`,
		Args: exactArgs("key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(cmd); err != nil {
				return err
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			var body any
			if salt != "" {
				body = map[string]string{"salt": salt}
			}
			r, err := cl.sendJSON(cmd.Context(), http.MethodPost, experimentPath(env.resolve(a), args[0], "restart"), o, body, nil)
			if err != nil {
				return err
			}
			return a.reportExperiment(cl, r, "restarted")
		},
	}
	cmd.Flags().StringVar(&salt, "salt", "", "the new assignment salt (default: derived from the restart count)")
	addWriteFlags(cmd, &o)
	return cmd
}

func (a *app) experimentDeleteCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	var o writeOpts
	cmd := &cobra.Command{
		Use:   "delete KEY",
		Short: "Delete a draft or archived experiment and its statistics",
		Args:  exactArgs("key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(cmd); err != nil {
				return err
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			if _, err := cl.do(cmd.Context(), call{method: http.MethodDelete, path: experimentPath(env.resolve(a), args[0]), header: o.header()}); err != nil {
				return err
			}
			if cl.json {
				return printJSON(a.stdout, map[string]any{"deleted": args[0]})
			}
			fmt.Fprintf(a.stdout, "experiment %s deleted\n", args[0])
			return nil
		},
	}
	addWriteFlags(cmd, &o)
	return cmd
}

func (a *app) experimentResultsCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	var svg string
	cmd := &cobra.Command{
		Use:   "results KEY [--svg FILE]",
		Short: "Show an experiment's results: effects, health and the recommendation",
		Long: `Show an experiment's results: for every metric and treatment the control and
treatment values, the absolute and relative effect with its interval (a
confidence sequence in the default sequential mode, a confidence interval in
fixed mode, a credible interval in Bayesian mode), the p-value (adjusted
across goal metrics) or the chance to win, and the verdict; then the health
checks (sample ratio mismatch, crossover users, power) and the
recommendation. --svg also saves the effect chart ('-' writes it to
standard output instead of the table).`,
		Example: `  flagpole experiment results checkout-test
  flagpole experiment results checkout-test -o json
  flagpole experiment results checkout-test --svg effects.svg`,
		Args: exactArgs("key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			envName := env.resolve(a)
			if svg != "" {
				r, err := cl.do(cmd.Context(), call{method: http.MethodGet, path: experimentPath(envName, args[0], "results.svg"),
					header: http.Header{"Accept": {"image/svg+xml"}}})
				if err != nil {
					return err
				}
				if svg == "-" {
					_, err := a.stdout.Write(r.body)
					return err
				}
				if err := writeFileAtomic(svg, r.body); err != nil {
					return fmt.Errorf("--svg: %w", err)
				}
			}
			var res resultsReply
			r, err := cl.getJSON(cmd.Context(), experimentPath(envName, args[0], "results"), nil, &res)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			if err := printResults(a.stdout, &res); err != nil {
				return err
			}
			if svg != "" {
				fmt.Fprintf(a.stdout, "\nChart saved to %s\n", svg)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&svg, "svg", "", "also save the effect chart (SVG) to FILE ('-': write it to standard output)")
	return cmd
}

// printResults writes the results table, the health checks and the
// recommendation.
func printResults(w io.Writer, r *resultsReply) error {
	interval := "95% confidence sequence"
	level := "95%"
	if r.Alpha > 0 && r.Alpha < 1 {
		level = strconv.FormatFloat((1-r.Alpha)*100, 'f', -1, 64) + "%"
	}
	mode := "sequential (anytime-valid)"
	switch r.Mode {
	case experiments.ModeFixed:
		interval, mode = level+" confidence interval", "fixed-horizon"
	case experiments.ModeBayesian:
		interval, mode = level+" credible interval", "Bayesian"
	default:
		interval = level + " confidence sequence"
	}
	fmt.Fprintf(w, "Experiment %s: %s analysis, %ss", r.Experiment, mode, interval)
	if r.Mode != experiments.ModeBayesian && r.Correction != "" {
		fmt.Fprintf(w, ", %s correction across goals", r.Correction)
	}
	fmt.Fprintln(w)
	var arms []string
	for _, at := range r.Arms {
		arms = append(arms, fmt.Sprintf("%s %s (%s, expected %s)", at.Variant, fmtCount(at.Users), fmtRel(at.Share, false), fmtRel(at.ExpectedShare, false)))
	}
	fmt.Fprintf(w, "Users: %s", fmtCount(r.Users))
	if len(arms) > 0 {
		fmt.Fprintf(w, " — %s", strings.Join(arms, ", "))
	}
	fmt.Fprintln(w)
	if !r.GeneratedAt.IsZero() {
		fmt.Fprintf(w, "As of %s\n", formatTime(r.GeneratedAt))
	}
	fmt.Fprintln(w)

	tw := newTable(w)
	fmt.Fprintln(tw, "METRIC\tROLE\tTREATMENT\tCONTROL\tTREATMENT VALUE\tABSOLUTE EFFECT [INTERVAL]\tRELATIVE EFFECT [INTERVAL]\tP-VALUE / CHANCE TO WIN\tVERDICT")
	for _, m := range r.Metrics {
		var control experiments.ArmSummary
		byVariant := map[string]experiments.ArmSummary{}
		for i, arm := range m.Arms {
			if i == 0 {
				control = arm
			}
			byVariant[arm.Variant] = arm
		}
		role := string(m.Role)
		if m.Direction == experiments.LowerIsBetter {
			role += " (lower is better)"
		}
		for _, c := range m.Comparisons {
			t := byVariant[c.Treatment]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Key, role, c.Treatment,
				armValue(control), armValue(t), fmtEstimate(c.Absolute, false), fmtEstimate(c.Relative, true), fmtEvidence(&m, &c), fmtVerdict(c.Verdict))
		}
	}
	if len(r.Metrics) == 0 {
		fmt.Fprintln(tw, "(no metrics)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	h := r.Health
	fmt.Fprintln(w)
	status := map[experiments.HealthStatus]string{experiments.HealthOK: "healthy", experiments.HealthUnhealthy: "UNHEALTHY", experiments.HealthNoData: "no data yet"}[h.Status]
	if status == "" {
		status = string(h.Status)
	}
	fmt.Fprintf(w, "Health: %s\n", status)
	srm := "no mismatch"
	if h.SRM.Mismatch {
		srm = "MISMATCH: the arms' sizes do not match the configured split"
	}
	fmt.Fprintf(w, "  Sample ratio:  χ² = %s (df %d), p %s — %s\n", fmtG(h.SRM.ChiSquare), h.SRM.DF, fmtP(h.SRM.PValue), srm)
	fmt.Fprintf(w, "  Crossovers:    %s users seen in more than one arm (%s, excluded)\n", fmtCount(r.Crossovers), fmtRel(h.CrossoverRate, false))
	fmt.Fprintf(w, "  Power:         %s\n", powerLine(r))
	for _, p := range h.Problems {
		fmt.Fprintf(w, "  ! %s\n", p)
	}

	rec := r.Recommendation
	fmt.Fprintln(w)
	head := strings.ToUpper(strings.ReplaceAll(string(rec.Action), "_", " "))
	if rec.Action == experiments.ActionShip && rec.Variant != "" {
		head += " " + rec.Variant
	}
	fmt.Fprintf(w, "Recommendation: %s\n  %s\n", head, rec.Reason)
	if rec.RemainingUsers > 0 {
		line := fmt.Sprintf("  About %s more users", fmtCount(rec.RemainingUsers))
		if rec.RemainingSeconds > 0 {
			line += fmt.Sprintf(" (about %s at the current rate)", fmtDuration(rec.RemainingSeconds))
		}
		fmt.Fprintln(w, line+".")
	}
	return nil
}

// powerLine reports the minimum detectable effect of the primary (first)
// goal metric.
func powerLine(r *resultsReply) string {
	for _, m := range r.Metrics {
		if m.Role != experiments.RoleGoal {
			continue
		}
		for _, c := range m.Comparisons {
			prefix := ""
			if r.Health.Underpowered {
				prefix = "UNDERPOWERED: "
			}
			if c.RelativeMDE != nil {
				return fmt.Sprintf("%sthe minimum detectable effect is now %s in %s (%s vs control)", prefix, fmtRel(*c.RelativeMDE, false), m.Key, c.Treatment)
			}
			if c.MDE != nil {
				return fmt.Sprintf("%sthe minimum detectable effect is now %s in %s (absolute, %s vs control)", prefix, fmtG(*c.MDE), m.Key, c.Treatment)
			}
		}
		break
	}
	if r.Health.Underpowered {
		return "underpowered"
	}
	return "no estimate yet"
}

func armValue(s experiments.ArmSummary) string {
	if !s.Estimable {
		return "-"
	}
	return fmtG(s.Value)
}

func fmtEstimate(e *experiments.Estimate, relative bool) string {
	if e == nil || !finite(e.Value) {
		return "-"
	}
	f := func(v float64) string { return fmtSigned(v) }
	if relative {
		f = func(v float64) string { return fmtRel(v, true) }
	}
	return fmt.Sprintf("%s [%s, %s]", f(e.Value), f(e.Lower), f(e.Upper))
}

func fmtEvidence(m *experiments.MetricResult, c *experiments.Comparison) string {
	switch {
	case c.ChanceToWin != nil:
		return fmtRel(*c.ChanceToWin, false) + " chance to win"
	case m.Role == experiments.RoleGuardrail && c.HarmPValue != nil:
		return "harm p " + fmtP(*c.HarmPValue)
	case c.AdjustedPValue != nil:
		s := "p " + fmtP(*c.AdjustedPValue)
		if c.PValue != nil && *c.PValue != *c.AdjustedPValue {
			s += " (adjusted; raw p " + fmtP(*c.PValue) + ")"
		}
		return s
	case c.PValue != nil:
		return "p " + fmtP(*c.PValue)
	}
	return "-"
}

func fmtVerdict(v experiments.Verdict) string {
	switch v {
	case experiments.VerdictBetter:
		return "better"
	case experiments.VerdictWorse:
		return "WORSE"
	case experiments.VerdictInconclusive:
		return "inconclusive"
	}
	return "insufficient data"
}

func fmtDecision(d *experiments.StopDecision) string {
	if d == nil {
		return "-"
	}
	s := string(d.Outcome)
	if d.Variant != "" {
		s += " " + d.Variant
	}
	if d.Note != "" {
		s += ": " + d.Note
	}
	return s
}

func fmtTraffic(t float64) string {
	if t == 0 {
		t = 100
	}
	return strconv.FormatFloat(t, 'f', -1, 64) + "%"
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return formatTime(*t)
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// fmtG formats a number with up to four significant digits.
func fmtG(v float64) string {
	if !finite(v) {
		return "-"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

func fmtSigned(v float64) string {
	s := fmtG(v)
	if finite(v) && v > 0 {
		s = "+" + s
	}
	return s
}

// fmtRel formats a share or relative effect as a percentage.
func fmtRel(v float64, signed bool) string {
	if !finite(v) {
		return "-"
	}
	p := v * 100
	digits := 1
	if a := math.Abs(p); a != 0 && a < 1 {
		digits = 2
	}
	s := strconv.FormatFloat(p, 'f', digits, 64)
	if strings.Trim(s, "-0.") == "" {
		s = "0"
	}
	if signed && p > 0 && s != "0" {
		s = "+" + s
	}
	return s + "%"
}

// fmtP formats a p-value with its relation: "= 0.031", "< 0.0001".
func fmtP(p float64) string {
	switch {
	case !finite(p):
		return "-"
	case p < 0.0001:
		return "< 0.0001"
	case p < 0.01:
		return "= " + strconv.FormatFloat(p, 'f', 4, 64)
	}
	return "= " + strconv.FormatFloat(p, 'f', 3, 64)
}

func fmtCount(n int64) string {
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	if strings.HasPrefix(s, "-") {
		b.WriteByte('-')
		s = s[1:]
	}
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func fmtDuration(seconds float64) string {
	d := time.Duration(seconds * float64(time.Second))
	switch {
	case d >= 48*time.Hour:
		return strconv.FormatFloat(d.Hours()/24, 'f', 1, 64) + " days"
	case d >= 2*time.Hour:
		return strconv.FormatFloat(d.Hours(), 'f', 1, 64) + " hours"
	}
	return d.Round(time.Minute).String()
}
