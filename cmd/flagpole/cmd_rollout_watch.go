package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/flagpole/flagpole/canary"
)

// `flagpole rollout watch`: a live progress view of one rollout until it
// ends, with exit codes for pipelines.

// watchOpts are the options of `rollout watch` (and `rollout start --watch`).
type watchOpts struct {
	every      time.Duration
	timeout    time.Duration
	waitPaused bool
	progress   string
}

func (o *watchOpts) register(fs *pflag.FlagSet) {
	fs.DurationVar(&o.every, "every", 2*time.Second, "how often to ask the server")
	fs.DurationVar(&o.timeout, "timeout", 0, "give up watching after this long (exit 2); 0 waits until the rollout ends")
	fs.BoolVar(&o.waitPaused, "wait-paused", false, "keep watching a paused rollout until it is resumed or ends, instead of exiting 2")
	fs.StringVar(&o.progress, "progress", "auto", "progress view: tty (redrawn in place), plain (a line per change) or auto (tty on a terminal)")
}

// check reports bad values as usage errors.
func (o *watchOpts) check(cmd *cobra.Command) error {
	switch {
	case o.every <= 0:
		return usagef(cmd, "--every %s: must be positive", o.every)
	case o.timeout < 0:
		return usagef(cmd, "--timeout %s: must be positive (0: no limit)", o.timeout)
	case o.progress != "auto" && o.progress != "tty" && o.progress != "plain":
		return usagef(cmd, "--progress %q: must be auto, tty or plain", o.progress)
	}
	return nil
}

func (a *app) rolloutWatchCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	var (
		o      watchOpts
		target rolloutTarget
	)
	cmd := &cobra.Command{
		Use:   "watch (ID | --flag KEY) [--every 2s] [--timeout D]",
		Short: "Follow a rollout live until it ends; exit 0 succeeded, 1 failed or aborted, 2 paused or timed out",
		Long: `Follow a rollout live: a progress bar of the percentage served, the current
step, the gate's analysis and verdict and the time spent in the step, with a
line for every event of its history. On a terminal the view is redrawn in
place; otherwise (or with --progress plain) a line is printed for each change.
With -o json every change is printed as one JSON object per line (the rollout).

Exit codes:
  0  the rollout succeeded (the new variant serves its last step)
  1  it failed (a gate failed and it was rolled back) or was aborted; also
     any other error, such as an unknown rollout
  2  it is paused and needs someone to resume, retry or abort it (unless
     --wait-paused), or --timeout passed first

Here --timeout bounds the whole watch, not each request. Ending the watch
(Ctrl-C, --timeout) never changes the rollout.`,
		Example: `  flagpole rollout watch ro_1f2e3d --env prod
  flagpole rollout watch --flag new-checkout --env prod --timeout 2h --progress plain`,
		Args: target.args,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(cmd); err != nil {
				return err
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			envName := env.resolve(a)
			id, err := target.resolve(cmd.Context(), cl, envName, args, rolloutStates)
			if err != nil {
				return err
			}
			return a.watchRollout(cmd, cl, envName, id, &o)
		},
	}
	target.register(cmd)
	o.register(cmd.Flags())
	return cmd
}

// isTerminal says whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// watchRollout follows rollout id until it ends and returns the exit
// status the watch documents.
func (a *app) watchRollout(cmd *cobra.Command, cl *client, env, id string, o *watchOpts) error {
	w := &rolloutWatcher{
		out: a.stdout, errOut: a.stderr, cl: cl, env: env, id: id,
		every: o.every, waitPaused: o.waitPaused, json: cl.json, now: time.Now,
	}
	switch o.progress {
	case "tty":
		w.tty = true
	case "auto":
		w.tty = isTerminal(a.stdout) && a.getenv("TERM") != "dumb"
	}
	ctx := cmd.Context()
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	r, err := w.run(ctx)
	if err != nil {
		if ctx.Err() != nil && cmd.Context().Err() == nil && r != nil {
			return &exitError{code: exitInconclusive, msg: fmt.Sprintf("rollout %s: still %s at %s (%s) after --timeout %s", id, r.State, canary.FormatPercent(r.Percent), r.stepLabel(), o.timeout)}
		}
		if ctx.Err() != nil && cmd.Context().Err() == nil {
			return &exitError{code: exitInconclusive, msg: fmt.Sprintf("rollout %s: no answer from the server within --timeout %s", id, o.timeout)}
		}
		return err
	}
	switch r.State {
	case rolloutSucceeded:
		return nil
	case rolloutFailed, rolloutAborted:
		return &exitError{code: exitFail}
	}
	return &exitError{code: exitInconclusive} // paused, or holding below 100%
}

// rolloutWatcher polls one rollout and renders its progress.
type rolloutWatcher struct {
	out, errOut io.Writer
	cl          *client
	env, id     string
	every       time.Duration
	waitPaused  bool
	tty         bool // redraw the live block in place
	json        bool
	now         func() time.Time

	drawn   int    // lines of the live block on screen (tty)
	events  int    // history entries printed
	lastKey string // what the last plain line or JSON object showed
}

// run polls until the rollout ends (or pauses, unless waitPaused) or ctx
// ends. Failures to reach the server and 5xx answers are reported once and
// retried (a server restart must not end a watch); any other API error
// ends it. It returns the last rollout read (nil before the first).
func (w *rolloutWatcher) run(ctx context.Context) (*rolloutJSON, error) {
	var last *rolloutJSON
	warned := false
	for {
		var r rolloutJSON
		rep, err := w.cl.getJSON(ctx, rolloutPath(w.env, w.id), nil, &r)
		var ae *apiError
		switch {
		case ctx.Err() != nil:
			w.finishBlock()
			return last, ctx.Err()
		case errors.As(err, &ae) && ae.Status < 500:
			w.finishBlock()
			return last, err
		case err != nil:
			if !warned {
				w.finishBlock()
				fmt.Fprintf(w.errOut, "flagpole: %v; retrying every %s\n", err, w.every)
				warned = true
			}
		default:
			warned = false
			last = &r
			if err := w.show(&r, rep.body); err != nil {
				return last, err
			}
			if rolloutEnded(r.State) || (r.needsAttention() && !w.waitPaused) {
				return last, w.summary(&r)
			}
		}
		select {
		case <-ctx.Done():
			w.finishBlock()
			return last, ctx.Err()
		case <-time.After(w.every):
		}
	}
}

// show renders one reading of the rollout.
func (w *rolloutWatcher) show(r *rolloutJSON, raw []byte) error {
	if w.json {
		key := fmt.Sprintf("%d/%s/%d/%v/%s/%s", r.Version, r.State, r.Step, r.Percent, r.Verdict, r.AnalysisID)
		if key == w.lastKey {
			return nil
		}
		w.lastKey = key
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			return fmt.Errorf("the server sent invalid JSON: %w", err)
		}
		buf.WriteByte('\n')
		_, err := w.out.Write(buf.Bytes())
		return err
	}
	var b strings.Builder
	if w.tty && w.drawn > 0 {
		// Back to the first line of the block, and clear it and what follows.
		fmt.Fprintf(&b, "\r\x1b[%dF\x1b[J", w.drawn)
	}
	if w.events > len(r.History) {
		w.events = 0 // the server trimmed the history: start over
	}
	for _, e := range r.History[w.events:] {
		b.WriteString(eventLine(r.ID, e))
	}
	w.events = len(r.History)
	if w.tty {
		block := w.block(r)
		b.WriteString(block)
		w.drawn = strings.Count(block, "\n")
	} else if key := fmt.Sprintf("%s/%d/%v/%s/%s", r.State, r.Step, r.Percent, r.Verdict, r.AnalysisID); key != w.lastKey {
		w.lastKey = key
		b.WriteString(w.plainLine(r))
	}
	_, err := io.WriteString(w.out, b.String())
	return err
}

// eventLine is one history entry as a permanent line.
func eventLine(id string, e rolloutEvent) string {
	s := fmt.Sprintf("%s  %s %s: step %d at %s", e.Time.UTC().Format("15:04:05"), id, e.Event, e.Step+1, canary.FormatPercent(e.Percent))
	if e.Actor != "" {
		s += " by " + e.Actor
	}
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s + "\n"
}

// plainLine is the progress as one line, printed when it changes.
func (w *rolloutWatcher) plainLine(r *rolloutJSON) string {
	s := fmt.Sprintf("%s  %s %s %s %s %s", w.now().UTC().Format("15:04:05"), r.ID, r.stateText(), progressBar(r.Percent, 20, false), canary.FormatPercent(r.Percent), r.stepLabel())
	if r.AnalysisID != "" || r.Verdict != "" {
		s += ", gate " + gateText(r)
	}
	if r.State == rolloutScheduled {
		s += ", starts " + formatTime(r.StartAt)
	}
	return s + "\n"
}

// block is the live view redrawn in place on a terminal.
func (w *rolloutWatcher) block(r *rolloutJSON) string {
	var b strings.Builder
	fmt.Fprintf(&b, "rollout %s: %s in %s, %s → %s\n", r.ID, r.Flag, r.Env, r.From, r.Variant)
	fmt.Fprintf(&b, "  %s %6s  %s: %s\n", progressBar(r.Percent, 30, true), canary.FormatPercent(r.Percent), r.stepLabel(), r.plan(" → "))
	status := "  " + r.stateText()
	switch {
	case r.State == rolloutScheduled:
		status += ", starts " + formatTime(r.StartAt)
	case !rolloutEnded(r.State):
		status += ", in step for " + timeInStep(r, w.now())
	}
	if r.AnalysisID != "" || r.Verdict != "" {
		status += " · gate " + gateText(r)
	}
	b.WriteString(status + "\n")
	return b.String()
}

// finishBlock leaves the live block on screen as it is, so what follows
// goes below it.
func (w *rolloutWatcher) finishBlock() { w.drawn = 0 }

// summary prints the outcome once the watch ends.
func (w *rolloutWatcher) summary(r *rolloutJSON) error {
	w.finishBlock()
	if w.json {
		return nil
	}
	var s string
	switch r.State {
	case rolloutSucceeded:
		s = fmt.Sprintf("rollout %s SUCCEEDED: %s serves %s to %s", r.ID, r.Flag, r.Variant, canary.FormatPercent(r.Percent))
		if !r.EndedAt.IsZero() && !r.CreatedAt.IsZero() {
			s += fmt.Sprintf(" (in %s)", shortDuration(r.EndedAt.Sub(r.CreatedAt).Round(time.Second)))
		}
	case rolloutFailed:
		s = fmt.Sprintf("rollout %s FAILED at %s (%s): %s serves %s", r.ID, stepPercent(r), r.stepLabel(), r.Flag, servedText(r))
	case rolloutAborted:
		s = fmt.Sprintf("rollout %s ABORTED at %s (%s): %s serves %s", r.ID, stepPercent(r), r.stepLabel(), r.Flag, servedText(r))
	case rolloutRunning:
		s = fmt.Sprintf("rollout %s is HOLDING at %s (%s) until promoted: flagpole rollout promote %s --env %s", r.ID, canary.FormatPercent(r.Percent), r.stepLabel(), r.ID, w.env)
	default:
		s = fmt.Sprintf("rollout %s is PAUSED at %s (%s) and needs attention: flagpole rollout resume|retry|abort %s --env %s", r.ID, canary.FormatPercent(r.Percent), r.stepLabel(), r.ID, w.env)
	}
	if r.Reason != "" {
		s += "\n  reason: " + r.Reason
	}
	if ev := r.evidenceText(); ev != "" {
		s += "\n  evidence: " + ev
	}
	_, err := fmt.Fprintln(w.out, s)
	return err
}

// stepPercent is the percentage of the step the rollout ended at.
func stepPercent(r *rolloutJSON) string {
	if c := r.current(); c != nil {
		return canary.FormatPercent(c.Percent)
	}
	return canary.FormatPercent(r.Percent)
}

// servedText says which variant a stopped rollout left the flag serving.
func servedText(r *rolloutJSON) string {
	if r.FinalVariant != "" {
		return r.FinalVariant + " to everyone"
	}
	switch r.Percent {
	case 0:
		return r.From + " to everyone"
	case 100:
		return r.Variant + " to everyone"
	}
	return fmt.Sprintf("%s to %s", r.Variant, canary.FormatPercent(r.Percent))
}
