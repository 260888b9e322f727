package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/flagpole/flagpole/flags"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// envFlag is the --env flag of the commands that work in one environment.
type envFlag struct{ name string }

func (a *app) addEnvFlag(cmd *cobra.Command, persistent bool) *envFlag {
	e := &envFlag{}
	fs := cmd.Flags()
	if persistent {
		fs = cmd.PersistentFlags()
	}
	fs.StringVarP(&e.name, "env", "e", "", "environment (default $"+envEnv+" or \"default\")")
	return e
}

// resolve returns --env, else $FLAGPOLE_ENV, else "default".
func (e *envFlag) resolve(a *app) string {
	if e.name != "" {
		return e.name
	}
	if v := a.getenv(envEnv); v != "" {
		return v
	}
	return "default"
}

func (a *app) flagsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "flags",
		Short: "List, show, change and delete flags; import and export flag sets",
		Args:  unknownSubcommand,
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cf := a.addClientFlags(cmd)
	env := a.addEnvFlag(cmd, true)
	cmd.AddCommand(
		a.flagsListCommand(cf, env),
		a.flagsGetCommand(cf, env),
		a.flagsSetCommand(cf, env),
		a.flagsStateCommand(cf, env, "enable", flags.Enabled),
		a.flagsStateCommand(cf, env, "disable", flags.Disabled),
		a.flagsDeleteCommand(cf, env),
		a.flagsImportCommand(cf, env),
		a.flagsExportCommand(cf, env),
	)
	return cmd
}

// flagJSON is a flag as the API returns it.
type flagJSON struct {
	Key            string                     `json:"key"`
	State          flags.State                `json:"state"`
	Variants       map[string]json.RawMessage `json:"variants"`
	DefaultVariant *string                    `json:"defaultVariant"`
	Targeting      json.RawMessage            `json:"targeting"`
	Metadata       map[string]any             `json:"metadata"`
}

// valueType names the type shared by the variants' values, as flagd does.
func (f flagJSON) valueType() string {
	t := ""
	for _, v := range f.Variants {
		var vt string
		switch s := strings.TrimSpace(string(v)); {
		case s == "true" || s == "false":
			vt = "boolean"
		case strings.HasPrefix(s, `"`):
			vt = "string"
		case strings.HasPrefix(s, "{") || strings.HasPrefix(s, "["):
			vt = "object"
		default:
			vt = "number"
		}
		if t != "" && t != vt {
			return "mixed"
		}
		t = vt
	}
	if t == "" {
		return "-"
	}
	return t
}

func (f flagJSON) hasTargeting() bool {
	s := strings.TrimSpace(string(f.Targeting))
	return s != "" && s != "null" && s != "{}"
}

func (a *app) flagsListCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the flags of an environment",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			var out struct {
				Version int64      `json:"version"`
				Flags   []flagJSON `json:"flags"`
			}
			r, err := cl.getJSON(cmd.Context(), envPath(env.resolve(a), "flags"), nil, &out)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "KEY\tSTATE\tTYPE\tDEFAULT\tVARIANTS\tTARGETING")
			for _, f := range out.Flags {
				def := "(code default)"
				if f.DefaultVariant != nil {
					def = *f.DefaultVariant
				}
				names := make([]string, 0, len(f.Variants))
				for n := range f.Variants {
					names = append(names, n)
				}
				slices.Sort(names)
				targeting := "-"
				if f.hasTargeting() {
					targeting = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Key, f.State, f.valueType(), def, strings.Join(names, ","), targeting)
			}
			return tw.Flush()
		},
	}
}

func (a *app) flagsGetCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	return &cobra.Command{
		Use:   "get KEY",
		Short: "Show one flag's definition (YAML; -o json for JSON)",
		Args:  exactArgs("key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			r, err := cl.getJSON(cmd.Context(), envPath(env.resolve(a), "flags", args[0]), nil, nil)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			y, err := yaml.JSONToYAML(r.body)
			if err != nil {
				return fmt.Errorf("the server sent invalid JSON: %w", err)
			}
			_, err = a.stdout.Write(y)
			return err
		},
	}
}

// setFlags are the options of `flags set`.
type setFlags struct {
	file        string
	variants    []string
	def         string
	noDef       bool
	state       string
	targeting   string
	noTargeting bool
	metadata    []string
	w           writeOpts
}

func (a *app) flagsSetCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	var o setFlags
	cmd := &cobra.Command{
		Use:   "set KEY (--file FLAG.yaml | [--variant NAME=VALUE]... [--default NAME] [--state S] [--targeting JSON|@FILE])",
		Short: "Create or change a flag",
		Long: `Create or change a flag.

With --file, the file holds the flag's whole definition (JSON or YAML, flagd
format: state, variants, defaultVariant, targeting, metadata); the flag is
created or replaced by it.

Otherwise the options change only what they name, in an existing flag:
  --variant NAME=VALUE   (repeatable) replaces the whole variants map; VALUE is
                         read as JSON when it is valid JSON (true, 42, {"a":1},
                         "quoted") and as a plain string otherwise
  --default NAME         sets the default variant; --no-default clears it, so
                         the caller's code default applies
  --state S              ENABLED or DISABLED
  --targeting JSON       replaces the targeting rule (JsonLogic); @FILE reads it
                         from a JSON or YAML file; --no-targeting removes it
  --metadata NAME=VALUE  (repeatable) replaces the flag's metadata
If the flag does not exist yet and --variant is given, it is created (state
ENABLED unless --state says otherwise).`,
		Example: `  flagpole flags set dark-mode --variant on=true --variant off=false --default off
  flagpole flags set dark-mode --default on --reason "launch"
  flagpole flags set banner-color --targeting @rules.json
  flagpole flags set new-checkout --file new-checkout.yaml`,
		Args: exactArgs("key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runFlagsSet(cmd, cf, env, args[0], &o)
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.file, "file", "f", "", "the flag's whole definition, JSON or YAML (- for stdin)")
	fs.StringArrayVar(&o.variants, "variant", nil, "a variant NAME=VALUE (repeatable; replaces all variants)")
	fs.StringVar(&o.def, "default", "", "the default variant")
	fs.BoolVar(&o.noDef, "no-default", false, "clear the default variant (the caller's code default applies)")
	fs.StringVar(&o.state, "state", "", "ENABLED or DISABLED")
	fs.StringVar(&o.targeting, "targeting", "", "targeting rule as JSON, or @FILE (JSON or YAML)")
	fs.BoolVar(&o.noTargeting, "no-targeting", false, "remove the targeting rule")
	fs.StringArrayVar(&o.metadata, "metadata", nil, "metadata NAME=VALUE (repeatable; replaces all metadata)")
	addWriteFlags(cmd, &o.w)
	return cmd
}

// parseAssignments parses NAME=VALUE arguments of the option named opt;
// VALUE is JSON when valid JSON and a string otherwise.
func parseAssignments(cmd *cobra.Command, opt string, items []string) (map[string]json.RawMessage, error) {
	out := make(map[string]json.RawMessage, len(items))
	for _, it := range items {
		name, value, ok := strings.Cut(it, "=")
		if !ok || name == "" {
			return nil, usagef(cmd, "--%s %q: must be NAME=VALUE", opt, it)
		}
		if _, dup := out[name]; dup {
			return nil, usagef(cmd, "--%s: %q is given twice", opt, name)
		}
		if json.Valid([]byte(value)) {
			out[name] = json.RawMessage(strings.TrimSpace(value))
		} else {
			b, _ := json.Marshal(value)
			out[name] = b
		}
	}
	return out, nil
}

func (a *app) runFlagsSet(cmd *cobra.Command, cf *clientFlags, env *envFlag, key string, o *setFlags) error {
	if err := o.w.check(cmd); err != nil {
		return err
	}
	fs := cmd.Flags()
	fieldOpts := []string{"variant", "default", "no-default", "state", "targeting", "no-targeting", "metadata"}
	var given []string
	for _, n := range fieldOpts {
		if fs.Changed(n) {
			given = append(given, "--"+n)
		}
	}
	if o.file != "" && len(given) > 0 {
		return usagef(cmd, "--file gives the whole definition; it cannot be combined with %s", strings.Join(given, ", "))
	}
	if o.file == "" && len(given) == 0 {
		return usagef(cmd, "nothing to set: give --file or at least one of --variant, --default, --state, --targeting, --metadata")
	}
	if fs.Changed("default") && o.noDef {
		return usagef(cmd, "--default and --no-default cannot be combined")
	}
	if fs.Changed("targeting") && o.noTargeting {
		return usagef(cmd, "--targeting and --no-targeting cannot be combined")
	}
	if fs.Changed("default") && o.def == "" {
		return usagef(cmd, "--default: give a variant name (or --no-default to clear it)")
	}
	state := strings.ToUpper(o.state)
	if fs.Changed("state") && state != string(flags.Enabled) && state != string(flags.Disabled) {
		return usagef(cmd, "--state %q: must be ENABLED or DISABLED", o.state)
	}
	variants, err := parseAssignments(cmd, "variant", o.variants)
	if err != nil {
		return err
	}
	metadata, err := parseAssignments(cmd, "metadata", o.metadata)
	if err != nil {
		return err
	}
	var targeting json.RawMessage
	if fs.Changed("targeting") {
		if path, ok := strings.CutPrefix(o.targeting, "@"); ok {
			targeting, err = a.readDocument(path)
			if err != nil {
				return fmt.Errorf("--targeting: %w", err)
			}
		} else {
			if err := checkJSON([]byte(o.targeting)); err != nil {
				return usagef(cmd, "--targeting: %v (use @FILE to read it from a file)", err)
			}
			targeting = json.RawMessage(o.targeting)
		}
	}
	var definition json.RawMessage
	if o.file != "" {
		definition, err = a.readDocument(o.file)
		if err != nil {
			return err
		}
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(definition, &probe); err != nil {
			return fmt.Errorf("%s: a flag definition must be a JSON or YAML object", o.file)
		}
		if k, ok := probe["key"]; ok {
			var fileKey string
			if json.Unmarshal(k, &fileKey) != nil || fileKey != key {
				return usagef(cmd, "%s defines key %s, not %q", o.file, string(k), key)
			}
		}
	}

	cl, err := a.client(cmd, cf)
	if err != nil {
		return err
	}
	envName := env.resolve(a)
	path := envPath(envName, "flags", key)
	ctx := cmd.Context()

	if definition != nil {
		r, err := cl.do(ctx, call{method: http.MethodPut, path: path, header: o.w.header(), body: definition})
		if err != nil {
			return err
		}
		return a.reportFlagWrite(cl, r, "flag %s set in %s", key, envName)
	}

	patch := map[string]any{}
	if len(o.variants) > 0 {
		patch["variants"] = variants
	}
	switch {
	case o.noDef:
		patch["defaultVariant"] = nil
	case fs.Changed("default"):
		patch["defaultVariant"] = o.def
	}
	if state != "" {
		patch["state"] = state
	}
	switch {
	case o.noTargeting:
		patch["targeting"] = nil
	case targeting != nil:
		patch["targeting"] = targeting
	}
	if len(o.metadata) > 0 {
		patch["metadata"] = metadata
	}
	r, err := cl.sendJSON(ctx, http.MethodPatch, path, o.w, patch, nil)
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		if len(o.variants) == 0 {
			return fmt.Errorf("%w\nto create flag %q, give its variants with --variant NAME=VALUE (or its definition with --file)", err, key)
		}
		create := map[string]any{"state": string(flags.Enabled), "variants": variants}
		if state != "" {
			create["state"] = state
		}
		if fs.Changed("default") {
			create["defaultVariant"] = o.def
		}
		if targeting != nil {
			create["targeting"] = targeting
		}
		if len(o.metadata) > 0 {
			create["metadata"] = metadata
		}
		r, err = cl.sendJSON(ctx, http.MethodPut, path, o.w, create, nil)
		if err != nil {
			return err
		}
		return a.reportFlagWrite(cl, r, "flag %s created in %s", key, envName)
	}
	if err != nil {
		return err
	}
	return a.reportFlagWrite(cl, r, "flag %s updated in %s", key, envName)
}

// reportFlagWrite prints the result of a flag write: the returned flag for
// -o json, otherwise the message with the environment's new version.
func (a *app) reportFlagWrite(cl *client, r reply, format string, args ...any) error {
	if cl.json {
		if len(r.body) == 0 {
			return printJSON(a.stdout, map[string]any{"version": r.version()})
		}
		return printRaw(a.stdout, r.body)
	}
	msg := fmt.Sprintf(format, args...)
	if v := r.version(); v > 0 {
		msg += " (version " + strconv.FormatInt(v, 10) + ")"
	}
	_, err := fmt.Fprintln(a.stdout, msg)
	return err
}

func (a *app) flagsStateCommand(cf *clientFlags, env *envFlag, verb string, state flags.State) *cobra.Command {
	var w writeOpts
	cmd := &cobra.Command{
		Use:     verb + " KEY",
		Short:   strings.ToUpper(verb[:1]) + verb[1:] + " a flag (state " + string(state) + ")",
		Example: "  flagpole flags " + verb + " new-checkout --env production --reason \"...\"",
		Args:    exactArgs("key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := w.check(cmd); err != nil {
				return err
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			envName := env.resolve(a)
			r, err := cl.sendJSON(cmd.Context(), http.MethodPatch, envPath(envName, "flags", args[0]), w, map[string]any{"state": state}, nil)
			if err != nil {
				return err
			}
			return a.reportFlagWrite(cl, r, "flag %s %sd in %s", args[0], verb, envName)
		},
	}
	addWriteFlags(cmd, &w)
	return cmd
}

func (a *app) flagsDeleteCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	var w writeOpts
	cmd := &cobra.Command{
		Use:   "delete KEY",
		Short: "Delete a flag",
		Args:  exactArgs("key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := w.check(cmd); err != nil {
				return err
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			envName := env.resolve(a)
			r, err := cl.sendJSON(cmd.Context(), http.MethodDelete, envPath(envName, "flags", args[0]), w, nil, nil)
			if err != nil {
				return err
			}
			return a.reportFlagWrite(cl, r, "flag %s deleted from %s", args[0], envName)
		},
	}
	addWriteFlags(cmd, &w)
	return cmd
}

func (a *app) flagsImportCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	var w writeOpts
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Replace an environment's whole flag set with a flagd file (JSON or YAML; - for stdin)",
		Long: `Replace an environment's whole flag set with a flagd flag file.

A .yaml or .yml file is sent as YAML, a .json file as JSON; standard input
("-") and other names are sent as JSON when they parse as JSON, YAML otherwise.
The server validates the whole set and stores nothing if there is any problem.
Importing the set the environment already holds changes nothing.`,
		Args: exactArgs("file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := w.check(cmd); err != nil {
				return err
			}
			data, err := a.readInput(args[0])
			if err != nil {
				return err
			}
			ctype := "application/json"
			switch formatOf(args[0]) {
			case "yaml":
				ctype = "application/yaml"
			case "":
				if !json.Valid(data) {
					ctype = "application/yaml"
				}
			case "json":
				if err := checkJSON(data); err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			envName := env.resolve(a)
			r, err := cl.do(cmd.Context(), call{method: http.MethodPut, path: envPath(envName, "flagset"), header: w.header(), body: data, ctype: ctype})
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			var out flags.Environment
			if err := decodeReply(r, &out); err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "imported %s into %s (version %d)\n", args[0], envName, out.Version)
			return err
		},
	}
	addWriteFlags(cmd, &w)
	return cmd
}

func (a *app) flagsExportCommand(cf *clientFlags, env *envFlag) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "export FILE",
		Short: "Write an environment's flag set to a flagd file (- for stdout)",
		Long: `Write an environment's whole flag set to a file in flagd's format.

The format follows the file name (.yaml/.yml: YAML, otherwise JSON) unless
--format says otherwise; "-" writes to standard output (JSON by default).
The file is replaced atomically.`,
		Args: exactArgs("file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := args[0]
			if format == "" {
				format = formatOf(target)
			}
			if format == "" {
				format = "json"
			}
			if format != "json" && format != "yaml" {
				return usagef(cmd, "--format %q: must be json or yaml", format)
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			accept := "application/json"
			if format == "yaml" {
				accept = "application/yaml"
			}
			envName := env.resolve(a)
			r, err := cl.do(cmd.Context(), call{method: http.MethodGet, path: envPath(envName, "flagset"), header: http.Header{"Accept": {accept}}})
			if err != nil {
				return err
			}
			data := r.body
			if format == "json" {
				var buf bytes.Buffer
				if err := json.Indent(&buf, bytes.TrimSpace(data), "", "  "); err != nil {
					return fmt.Errorf("the server sent invalid JSON: %w", err)
				}
				buf.WriteByte('\n')
				data = buf.Bytes()
			}
			if target == "-" {
				_, err := a.stdout.Write(data)
				return err
			}
			if err := writeFileAtomic(target, data); err != nil {
				return fmt.Errorf("writing %s: %w", target, err)
			}
			if cl.json {
				return printJSON(a.stdout, map[string]any{"environment": envName, "version": r.version(), "file": target})
			}
			_, err = fmt.Fprintf(a.stdout, "exported %s (version %d) to %s\n", envName, r.version(), target)
			return err
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "json or yaml (default: from the file name; json for -)")
	return cmd
}
