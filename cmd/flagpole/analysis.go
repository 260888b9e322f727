package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/flagpole/flagpole/api"
	"github.com/flagpole/flagpole/canary"
	promsource "github.com/flagpole/flagpole/canary/prometheus"
)

// Canary analysis in the CLI: serve's runner wiring (--prometheus-url), the
// `templates` and `analysis` client commands, and the CD gate.

// Environment variables of the analysis options of `flagpole serve`.
const (
	envPrometheusURL   = "FLAGPOLE_PROMETHEUS_URL"
	envPrometheusToken = "FLAGPOLE_PROMETHEUS_TOKEN"
)

// Exit codes of `analysis gate` and `analysis watch` (1 is also every other
// failure of the CLI).
const (
	exitPass         = 0
	exitFail         = 1
	exitInconclusive = 2
)

// exitError ends the command with a specific exit code; msg, when set, is
// printed to stderr like any error.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// ---- serve wiring ----

// analysisServeFlags are serve's options for executing analyses.
type analysisServeFlags struct {
	prometheusURL string
	promTimeout   time.Duration
	poll          time.Duration
	leaseTTL      time.Duration
	parallel      int
}

// addAnalysisServeFlags registers serve's analysis flags.
func addAnalysisServeFlags(fs *pflag.FlagSet, o *analysisServeFlags) {
	fs.StringVar(&o.prometheusURL, "prometheus-url", "", "Prometheus base URL; this replica then executes canary analyses ($"+envPrometheusURL+")")
	fs.DurationVar(&o.promTimeout, "prometheus-timeout", promsource.DefaultTimeout, "time limit of each Prometheus query attempt")
	fs.DurationVar(&o.poll, "analysis-poll", canary.DefaultPoll, "how often the analysis runner looks for due measurements")
	fs.DurationVar(&o.leaseTTL, "analysis-lease-ttl", canary.DefaultLeaseTTL, "how long a replica's claim on a running analysis lasts unless renewed")
	fs.IntVar(&o.parallel, "analysis-parallel", canary.DefaultParallel, "measurements taken at once")
	_ = fs.MarkHidden("analysis-poll")
	_ = fs.MarkHidden("analysis-lease-ttl")
	_ = fs.MarkHidden("analysis-parallel")
}

// resolveAnalysisServeFlags fills --prometheus-url from the environment
// and checks the values; problems are usage errors naming the flag.
func (a *app) resolveAnalysisServeFlags(cmd *cobra.Command, o *analysisServeFlags) error {
	if !cmd.Flags().Changed("prometheus-url") {
		if v := a.getenv(envPrometheusURL); v != "" {
			o.prometheusURL = v
		}
	}
	if o.prometheusURL != "" {
		u, err := url.Parse(o.prometheusURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usagef(cmd, "--prometheus-url %q: must be an http:// or https:// URL with a host, such as http://prometheus:9090", o.prometheusURL)
		}
	}
	switch {
	case o.promTimeout <= 0:
		return usagef(cmd, "--prometheus-timeout %s: must be positive", o.promTimeout)
	case o.poll <= 0:
		return usagef(cmd, "--analysis-poll %s: must be positive", o.poll)
	case o.leaseTTL <= 0:
		return usagef(cmd, "--analysis-lease-ttl %s: must be positive", o.leaseTTL)
	case o.parallel < 1:
		return usagef(cmd, "--analysis-parallel %d: must be at least 1", o.parallel)
	}
	return nil
}

// startAnalysisRunner starts executing analyses on wg until ctx ends, when
// --prometheus-url is set; without it, this replica serves the analysis API
// but leaves execution to replicas that have one.
func (a *app) startAnalysisRunner(ctx context.Context, wg *sync.WaitGroup, o *analysisServeFlags, store canary.Store,
	server *api.Server, reg prometheus.Registerer, log *slog.Logger) error {
	if o.prometheusURL == "" {
		log.Info("canary analysis runner off: no --prometheus-url")
		return nil
	}
	src, err := promsource.New(promsource.Config{
		URL: o.prometheusURL, Timeout: o.promTimeout, BearerToken: a.getenv(envPrometheusToken),
		Logger: log.With("component", "prometheus"), Registerer: reg,
	})
	if err != nil {
		return fmt.Errorf("--prometheus-url: %w", err)
	}
	runner, err := canary.NewRunner(canary.RunnerConfig{
		Store: store, Source: src, Logger: log.With("component", "analysis"), Metrics: server.AnalysisMetrics(),
		Owner: replicaName(), Poll: o.poll, LeaseTTL: o.leaseTTL, Parallel: o.parallel,
	})
	if err != nil {
		return fmt.Errorf("configuring the analysis runner: %w", err)
	}
	log.Info("canary analysis runner on", "prometheus", redactURL(o.prometheusURL), "owner", runner.Owner())
	wg.Go(func() { _ = runner.Run(ctx) })
	return nil
}

// replicaName names this process in analysis leases: host, pid and a
// random suffix (a restarted process is a new owner).
func replicaName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "flagpole"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// redactURL drops credentials from a URL for the log.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}

// ---- client types ----

// verdictReply is GET /api/v1/analyses/{id}/verdict.
type verdictReply struct {
	AnalysisID string       `json:"analysisId"`
	Verdict    string       `json:"verdict"`
	Final      bool         `json:"final"`
	Phase      canary.Phase `json:"phase"`
	Score      canary.Float `json:"score"`
	Reason     string       `json:"reason"`
	Steps      int          `json:"steps"`
	Version    int64        `json:"version"`
}

// analysisReply is an analysis as the API returns it.
type analysisReply struct {
	canary.StoredRun
	Verdict verdictReply `json:"verdict"`
}

func analysisPath(id string, parts ...string) string {
	p := "/api/v1/analyses/" + url.PathEscape(id)
	for _, s := range parts {
		p += "/" + s
	}
	return p
}

func templatePath(name string) string { return "/api/v1/analysis-templates/" + url.PathEscape(name) }

// fmtScore renders a score, "-" when there is none.
func fmtScore(f canary.Float) string {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// ---- templates ----

func (a *app) templatesCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "templates",
		Short: "Apply, list, show and delete canary analysis templates",
		Long: `Manage canary analysis templates: named, versioned descriptions of what to
measure in Prometheus for a canary and its baseline, how to judge it and on
what schedule. Templates are YAML or JSON; 'apply' creates or replaces them
(each apply is a new version; running analyses keep the version they started
with).`,
		Args: unknownSubcommand,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cf := a.addClientFlags(cmd)
	cmd.AddCommand(a.templatesApplyCommand(cf), a.templatesListCommand(cf), a.templatesGetCommand(cf), a.templatesDeleteCommand(cf))
	return cmd
}

func (a *app) templatesApplyCommand(cf *clientFlags) *cobra.Command {
	var ifMatch int64
	cmd := &cobra.Command{
		Use:   "apply FILE...",
		Short: "Create or replace templates from YAML or JSON files ('-' reads standard input)",
		Long: `Create or replace analysis templates from YAML or JSON files, each holding one
template with its name. Every file is checked here first: a file with
problems is reported with each problem's field, and nothing is sent.`,
		Example: `  flagpole templates apply canary/http-canary.yaml
  flagpole templates apply - < template.json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef(cmd, "missing argument FILE")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if ifMatch < 0 {
				return usagef(cmd, "--if-match %d: must be a positive version", ifMatch)
			}
			if ifMatch > 0 && len(args) > 1 {
				return usagef(cmd, "--if-match applies to one file; give one")
			}
			type file struct {
				path string
				data []byte
				tpl  *canary.Template
			}
			var files []file
			for _, p := range args {
				data, err := a.readInput(p)
				if err != nil {
					return err
				}
				tpl, err := canary.ParseTemplate(data)
				if err != nil {
					return fmt.Errorf("%s: %w", p, describeTemplateError(err))
				}
				files = append(files, file{p, data, tpl})
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			var replies [][]byte
			for _, f := range files {
				h := http.Header{}
				if ifMatch > 0 {
					h.Set("If-Match", `"`+strconv.FormatInt(ifMatch, 10)+`"`)
				}
				r, err := cl.do(cmd.Context(), call{method: http.MethodPut, path: templatePath(f.tpl.Name), header: h, body: f.data, ctype: "application/yaml"})
				if err != nil {
					return fmt.Errorf("%s: %w", f.path, err)
				}
				var st canary.StoredTemplate
				if err := decodeReply(r, &st); err != nil {
					return err
				}
				replies = append(replies, r.body)
				if !cl.json {
					verb := "updated"
					if r.status == http.StatusCreated {
						verb = "created"
					}
					fmt.Fprintf(a.stdout, "template %s %s (version %d)\n", st.Name, verb, st.Version)
				}
			}
			if cl.json {
				return printRaw(a.stdout, []byte("["+string(bytes.Join(replies, []byte(",")))+"]"))
			}
			return nil
		},
	}
	cmd.Flags().Int64Var(&ifMatch, "if-match", 0, "only replace the template if it is still at this version")
	return cmd
}

// describeTemplateError lists a template's problems one per line.
func describeTemplateError(err error) error {
	var ve *canary.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "the template is invalid (%d problems)", len(ve.Problems))
	for _, p := range ve.Problems {
		b.WriteString("\n  " + p.String())
	}
	return errors.New(b.String())
}

func (a *app) templatesListCommand(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List analysis templates",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			var out struct {
				Templates []canary.StoredTemplate `json:"templates"`
			}
			r, err := cl.getJSON(cmd.Context(), "/api/v1/analysis-templates", nil, &out)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "NAME\tVERSION\tMETRICS\tINTERVAL\tUPDATED\tDESCRIPTION")
			for _, t := range out.Templates {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\n", t.Name, t.Version, len(t.Metrics), t.Schedule.Interval.D(), formatTime(t.UpdatedAt), t.Description)
			}
			return tw.Flush()
		},
	}
}

func (a *app) templatesGetCommand(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get NAME",
		Short: "Print a template as YAML (as JSON with -o json)",
		Long: `Print a template as YAML, ready to edit and apply again; with -o json, as JSON
with its version and update time.`,
		Args: exactArgs("name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			if cl.json {
				r, err := cl.getJSON(cmd.Context(), templatePath(args[0]), nil, nil)
				if err != nil {
					return err
				}
				return printRaw(a.stdout, r.body)
			}
			r, err := cl.do(cmd.Context(), call{method: http.MethodGet, path: templatePath(args[0]), header: http.Header{"Accept": {"application/yaml"}}})
			if err != nil {
				return err
			}
			_, err = a.stdout.Write(r.body)
			return err
		},
	}
}

func (a *app) templatesDeleteCommand(cf *clientFlags) *cobra.Command {
	var ifMatch int64
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a template (running analyses keep their copy)",
		Args:  exactArgs("name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ifMatch < 0 {
				return usagef(cmd, "--if-match %d: must be a positive version", ifMatch)
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			if _, err := cl.sendJSON(cmd.Context(), http.MethodDelete, templatePath(args[0]), writeOpts{ifMatch: ifMatch}, nil, nil); err != nil {
				return err
			}
			if cl.json {
				return printJSON(a.stdout, map[string]any{"deleted": args[0]})
			}
			_, err = fmt.Fprintf(a.stdout, "template %s deleted\n", args[0])
			return err
		},
	}
	cmd.Flags().Int64Var(&ifMatch, "if-match", 0, "only delete the template if it is still at this version")
	return cmd
}

// ---- analyses ----

func (a *app) analysisCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "analysis",
		Short: "Start, follow and cancel canary analyses; gate a deployment on one",
		Long: `Canary analyses compare a canary with its baseline on the metrics of a
template, measured in Prometheus on the template's schedule by the server
(a replica started with --prometheus-url), and end Successful (pass), Failed
(fail), Inconclusive, Error or Cancelled.

  flagpole analysis start --template T --baseline-scope S --canary-scope S
  flagpole analysis watch ID      follow it live
  flagpole analysis gate ...      start, follow, exit 0 pass / 1 fail / 2 inconclusive

Scopes are PromQL label matchers that fill {{ .scope }} in the template's
queries, such as 'app="checkout",track="canary"'.`,
		Args: unknownSubcommand,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cf := a.addClientFlags(cmd)
	cmd.AddCommand(a.analysisStartCommand(cf), a.analysisGetCommand(cf), a.analysisListCommand(cf),
		a.analysisCancelCommand(cf), a.analysisWatchCommand(cf), a.analysisGateCommand(cf))
	return cmd
}

// startOpts are the options that start an analysis.
type startOpts struct {
	template      string
	baselineScope string
	canaryScope   string
	split         float64
	args          []string
}

func addStartFlags(cmd *cobra.Command, o *startOpts) {
	fs := cmd.Flags()
	fs.StringVarP(&o.template, "template", "t", "", "analysis template name (required)")
	fs.StringVar(&o.baselineScope, "baseline-scope", "", `label matchers of the baseline, e.g. 'app="checkout",track="stable"' (required)`)
	fs.StringVar(&o.canaryScope, "canary-scope", "", `label matchers of the canary, e.g. 'app="checkout",track="canary"' (required)`)
	fs.Float64Var(&o.split, "split", 0, "the canary's expected share of traffic, e.g. 0.1; enables the sample-ratio check")
	fs.StringArrayVar(&o.args, "arg", nil, "template argument NAME=VALUE (repeatable)")
}

// body checks the options and builds the start request; problems are
// usage errors naming the flag.
func (o *startOpts) body(cmd *cobra.Command) (map[string]any, error) {
	switch {
	case o.template == "":
		return nil, usagef(cmd, "--template: required")
	case o.baselineScope == "":
		return nil, usagef(cmd, "--baseline-scope: required")
	case o.canaryScope == "":
		return nil, usagef(cmd, "--canary-scope: required")
	case o.split < 0 || o.split >= 1:
		return nil, usagef(cmd, "--split %v: must be between 0 and 1 (0 skips the sample-ratio check)", o.split)
	}
	args := map[string]string{}
	for _, kv := range o.args {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usagef(cmd, "--arg %q: must be NAME=VALUE", kv)
		}
		if _, dup := args[k]; dup {
			return nil, usagef(cmd, "--arg: %q is given twice", k)
		}
		args[k] = v
	}
	body := map[string]any{"template": o.template, "baselineScope": o.baselineScope, "canaryScope": o.canaryScope, "args": args}
	if o.split > 0 {
		body["expectedSplit"] = o.split
	}
	return body, nil
}

func (a *app) analysisStartCommand(cf *clientFlags) *cobra.Command {
	var o startOpts
	cmd := &cobra.Command{
		Use:   "start --template T --baseline-scope S --canary-scope S [--split F] [--arg NAME=VALUE]...",
		Short: "Start an analysis and print its ID",
		Example: `  flagpole analysis start -t http-canary --arg service=checkout \
    --baseline-scope 'track="stable"' --canary-scope 'track="canary"' --split 0.1`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := o.body(cmd)
			if err != nil {
				return err
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			var out analysisReply
			r, err := cl.sendJSON(cmd.Context(), http.MethodPost, "/api/v1/analyses", writeOpts{}, body, &out)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			_, err = fmt.Fprintf(a.stdout, "analysis %s started (template %s version %d); follow it with: flagpole analysis watch %s\n",
				out.ID, out.Template.Name, out.Template.Version, out.ID)
			return err
		},
	}
	addStartFlags(cmd, &o)
	return cmd
}

func (a *app) analysisGetCommand(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show an analysis: phase, verdict, score and the latest measurement",
		Args:  exactArgs("id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			var out analysisReply
			r, err := cl.getJSON(cmd.Context(), analysisPath(args[0]), nil, &out)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			tw := newTable(a.stdout)
			fmt.Fprintf(tw, "id:\t%s\n", out.ID)
			fmt.Fprintf(tw, "template:\t%s (version %d)\n", out.Template.Name, out.Template.Version)
			fmt.Fprintf(tw, "phase:\t%s\n", out.Phase)
			fmt.Fprintf(tw, "verdict:\t%s\n", out.Verdict.Verdict)
			fmt.Fprintf(tw, "score:\t%s\n", fmtScore(out.Verdict.Score))
			fmt.Fprintf(tw, "measurements:\t%d\n", out.NextStep-1)
			fmt.Fprintf(tw, "baseline:\t%s\n", out.Args.BaselineScope)
			fmt.Fprintf(tw, "canary:\t%s\n", out.Args.CanaryScope)
			fmt.Fprintf(tw, "created:\t%s\n", formatTime(out.CreatedAt))
			if !out.Phase.Terminal() {
				fmt.Fprintf(tw, "next:\t%s\n", formatTime(out.NextAt))
			} else {
				fmt.Fprintf(tw, "ended:\t%s\n", formatTime(out.EndedAt))
			}
			fmt.Fprintf(tw, "reason:\t%s\n", out.Verdict.Reason)
			if err := tw.Flush(); err != nil {
				return err
			}
			if last := out.Last(); last != nil {
				fmt.Fprintln(a.stdout)
				tw = newTable(a.stdout)
				fmt.Fprintln(tw, "METRIC\tVERDICT\tREASON")
				for _, m := range last.Metrics {
					name := m.Metric
					if m.Critical {
						name += " (critical)"
					}
					if m.DryRun {
						name += " (dry run)"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", name, m.Verdict, m.Reason)
				}
				return tw.Flush()
			}
			return nil
		},
	}
}

func (a *app) analysisListCommand(cf *clientFlags) *cobra.Command {
	var (
		template string
		phases   []string
		active   bool
		limit    int
	)
	cmd := &cobra.Command{
		Use:   "list [--template T] [--phase P]... [--active] [--limit N]",
		Short: "List analyses, newest first",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 || limit > canary.MaxRunPage {
				return usagef(cmd, "--limit %d: must be between 1 and %d", limit, canary.MaxRunPage)
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			if template != "" {
				q.Set("template", template)
			}
			for _, p := range phases {
				q.Add("phase", p)
			}
			if active {
				q.Set("active", "true")
			}
			var out struct {
				Analyses []struct {
					ID       string       `json:"id"`
					Template string       `json:"template"`
					Phase    canary.Phase `json:"phase"`
					Verdict  string       `json:"verdict"`
					Score    canary.Float `json:"score"`
					Steps    int          `json:"steps"`
					Created  time.Time    `json:"createdAt"`
				} `json:"analyses"`
			}
			r, err := cl.getJSON(cmd.Context(), "/api/v1/analyses", q, &out)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "ID\tTEMPLATE\tPHASE\tVERDICT\tSCORE\tSTEPS\tCREATED")
			for _, x := range out.Analyses {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", x.ID, x.Template, x.Phase, x.Verdict, fmtScore(x.Score), x.Steps, formatTime(x.Created))
			}
			return tw.Flush()
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&template, "template", "t", "", "only analyses of this template")
	fs.StringArrayVar(&phases, "phase", nil, "only analyses in this phase (repeatable): Pending, Running, Successful, Failed, Inconclusive, Error, Cancelled")
	fs.BoolVar(&active, "active", false, "only analyses still Pending or Running")
	fs.IntVar(&limit, "limit", 50, "how many to show")
	return cmd
}

func (a *app) analysisCancelCommand(cf *clientFlags) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "cancel ID [--reason R]",
		Short: "Cancel an analysis",
		Args:  exactArgs("id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := (writeOpts{reason: reason}).check(cmd); err != nil {
				return err
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			var in any
			if reason != "" {
				in = map[string]string{"reason": reason}
			}
			var out analysisReply
			r, err := cl.sendJSON(cmd.Context(), http.MethodPost, analysisPath(args[0], "cancel"), writeOpts{}, in, &out)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			_, err = fmt.Fprintf(a.stdout, "analysis %s cancelled\n", out.ID)
			return err
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept as the analysis's message)")
	return cmd
}

func (a *app) analysisWatchCommand(cf *clientFlags) *cobra.Command {
	var every time.Duration
	cmd := &cobra.Command{
		Use:   "watch ID [--every 2s]",
		Short: "Follow an analysis live until it ends",
		Long: `Follow an analysis live: a line for each new measurement (verdict, score and
each metric's verdict) and for each phase change, until it ends. It exits 0
if the analysis passed, 1 if it failed, 2 if it ended without a decision
(inconclusive, error or cancelled). With -o json each change is printed as
one JSON object per line (the verdict resource).`,
		Args: exactArgs("id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if every <= 0 {
				return usagef(cmd, "--every %s: must be positive", every)
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			v, err := a.follow(cmd.Context(), cl, args[0], every)
			if err != nil {
				return err
			}
			return verdictExit(v)
		},
	}
	cmd.Flags().DurationVar(&every, "every", 2*time.Second, "how often to ask the server")
	return cmd
}

// verdictExit maps a final verdict onto the exit codes of watch and gate.
func verdictExit(v verdictReply) error {
	switch v.Verdict {
	case "pass":
		return nil
	case "fail":
		return &exitError{code: exitFail}
	}
	return &exitError{code: exitInconclusive}
}

// follow polls the analysis's verdict (the cheap, cached read), printing
// each change, until it is final or ctx ends: every new measurement (read
// from the measurements list, so none is missed between two polls) and
// every phase change. Failures to reach the server are reported and retried
// (a server restart must not end a watch); an analysis that does not exist
// ends it with the error.
func (a *app) follow(ctx context.Context, cl *client, id string, every time.Duration) (verdictReply, error) {
	var last verdictReply
	seen := false
	warned := false
	for {
		var v verdictReply
		r, err := cl.getJSON(ctx, analysisPath(id, "verdict"), nil, &v)
		var ae *apiError
		switch {
		case ctx.Err() != nil:
			return last, ctx.Err()
		case errors.As(err, &ae) && ae.Status < 500:
			return last, err
		case err == nil && (!seen || v.Steps != last.Steps || v.Phase != last.Phase):
			err = a.printProgress(ctx, cl, last, v, r.body, seen)
			if err == nil {
				seen, last = true, v
			}
		}
		if err != nil && ctx.Err() == nil {
			if !warned {
				fmt.Fprintf(a.stderr, "flagpole: %v; retrying every %s\n", err, every)
				warned = true
			}
		} else {
			warned = false
		}
		if seen && last.Final {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(every):
		}
	}
}

// printProgress prints what changed from prev to v: the measurements taken
// since, then the phase. With -o json it prints the verdict (raw) as one
// JSON line.
func (a *app) printProgress(ctx context.Context, cl *client, prev, v verdictReply, raw []byte, seen bool) error {
	if cl.json {
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return fmt.Errorf("the server sent invalid JSON: %w", err)
		}
		buf.WriteByte('\n')
		_, err := a.stdout.Write(buf.Bytes())
		return err
	}
	if v.Steps > prev.Steps {
		q := url.Values{"after": {strconv.Itoa(prev.Steps)}, "limit": {strconv.Itoa(min(v.Steps-prev.Steps, canary.MaxMeasurementPage))}}
		var page struct {
			Measurements []canary.Step `json:"measurements"`
		}
		if _, err := cl.getJSON(ctx, analysisPath(v.AnalysisID, "measurements"), q, &page); err != nil {
			return err
		}
		for _, s := range page.Measurements {
			a.printStep(v.AnalysisID, &s)
		}
	}
	now := time.Now().UTC().Format("15:04:05")
	switch {
	case v.Final:
		fmt.Fprintf(a.stdout, "%s  %s %s: %s (score %s)\n", now, v.AnalysisID, strings.ToUpper(v.Verdict), v.Reason, fmtScore(v.Score))
	case !seen || v.Phase != prev.Phase:
		fmt.Fprintf(a.stdout, "%s  %s %s: %s\n", now, v.AnalysisID, v.Phase, v.Reason)
	}
	return nil
}

// printStep prints one measurement: its verdict and each metric's.
func (a *app) printStep(id string, s *canary.Step) {
	rep := &s.Report
	fmt.Fprintf(a.stdout, "%s  %s step %d: %s (score %s): %s\n", s.At.UTC().Format("15:04:05"), id, s.Number, rep.Verdict, fmtScore(rep.Score), rep.Reason)
	ms := slices.Clone(rep.Metrics)
	sort.SliceStable(ms, func(i, j int) bool { return ms[i].Critical && !ms[j].Critical })
	for _, m := range ms {
		tag := ""
		if m.DryRun {
			tag = " (dry run)"
		}
		fmt.Fprintf(a.stdout, "          %-13s %s%s: %s\n", string(m.Verdict), m.Metric, tag, m.Reason)
	}
}

func (a *app) analysisGateCommand(cf *clientFlags) *cobra.Command {
	var (
		o       startOpts
		timeout time.Duration
		every   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "gate --template T --baseline-scope S --canary-scope S [--arg NAME=VALUE]... [--timeout 30m]",
		Short: "Start an analysis, follow it, and exit 0 on pass, 1 on fail, 2 otherwise (a CD gate)",
		Long: `Start an analysis, follow it live, and exit with its verdict, for CD pipelines:

  0  pass: the canary is within every margin
  1  fail: the canary is worse beyond a margin (also: bad options, or the
     server refused to start the analysis)
  2  inconclusive, error or cancelled, or --timeout passed first (the
     analysis is then cancelled)

Here --timeout bounds the whole gate, not each request. Interrupting the
gate (Ctrl-C) cancels the analysis too.`,
		Example: `  flagpole analysis gate -t http-canary --arg service=checkout \
    --baseline-scope 'track="stable"' --canary-scope 'track="canary"' --timeout 30m`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := o.body(cmd)
			if err != nil {
				return err
			}
			if timeout <= 0 {
				return usagef(cmd, "--timeout %s: must be positive", timeout)
			}
			if every <= 0 {
				return usagef(cmd, "--every %s: must be positive", every)
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			var started analysisReply
			if _, err := cl.sendJSON(cmd.Context(), http.MethodPost, "/api/v1/analyses", writeOpts{}, body, &started); err != nil {
				return err
			}
			if !cl.json {
				fmt.Fprintf(a.stdout, "analysis %s started (template %s version %d)\n", started.ID, started.Template.Name, started.Template.Version)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			v, err := a.follow(ctx, cl, started.ID, every)
			if err == nil {
				return verdictExit(v)
			}
			if ctx.Err() == nil {
				return err
			}
			// Timed out or interrupted: stop the analysis so it does not run on.
			why := fmt.Sprintf("the gate's --timeout %s passed", timeout)
			if cmd.Context().Err() != nil {
				why = "the gate was interrupted"
			}
			cctx, ccancel := context.WithTimeout(context.WithoutCancel(cmd.Context()), 10*time.Second)
			defer ccancel()
			if _, cerr := cl.sendJSON(cctx, http.MethodPost, analysisPath(started.ID, "cancel"), writeOpts{}, map[string]string{"reason": why}, nil); cerr != nil {
				fmt.Fprintf(a.stderr, "flagpole: could not cancel analysis %s: %v\n", started.ID, cerr)
			}
			return &exitError{code: exitInconclusive, msg: fmt.Sprintf("analysis %s: no verdict: %s; it was cancelled", started.ID, why)}
		},
	}
	addStartFlags(cmd, &o)
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "how long to wait for a verdict before giving up (exit 2)")
	cmd.Flags().DurationVar(&every, "every", 5*time.Second, "how often to ask the server")
	return cmd
}
