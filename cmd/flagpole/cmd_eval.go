package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"
)

// ofrepResult is one OFREP evaluation result, success or per-flag failure.
type ofrepResult struct {
	Key          string          `json:"key"`
	Value        json.RawMessage `json:"value"`
	Variant      string          `json:"variant"`
	Reason       string          `json:"reason"`
	ErrorCode    string          `json:"errorCode"`
	ErrorDetails string          `json:"errorDetails"`
}

func (a *app) evalCommand() *cobra.Command {
	var (
		contextArg string
		env        envFlag
		cf         *clientFlags
	)
	cmd := &cobra.Command{
		Use:   "eval [KEY] [--context JSON|@FILE]",
		Short: "Evaluate a flag (or, without KEY, every flag) over OFREP, as an SDK does",
		Long: `Evaluate a flag over OFREP (POST /ofrep/v1/evaluate/flags/KEY) with the given
evaluation context, exactly as an OpenFeature SDK would. Without KEY, every flag
of the environment is evaluated (the bulk endpoint).

An sdk key selects its own environment; with other keys, --env (or
$FLAGPOLE_ENV) chooses it and the server's default is "default".`,
		Example: `  flagpole eval new-checkout --context '{"targetingKey":"user-42","email":"ada@example.com"}'
  flagpole eval --context @ctx.json -o json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef(cmd, "unexpected argument %q: give at most one flag key", args[1])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			body := []byte(`{}`)
			if contextArg != "" {
				raw := []byte(contextArg)
				if path, ok := strings.CutPrefix(contextArg, "@"); ok {
					doc, err := a.readDocument(path)
					if err != nil {
						return fmt.Errorf("--context: %w", err)
					}
					raw = doc
				} else if err := checkJSON(raw); err != nil {
					return usagef(cmd, "--context: %v", err)
				}
				if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
					return usagef(cmd, "--context: must be a JSON object such as '{\"targetingKey\":\"user-1\"}'")
				}
				body = append(append([]byte(`{"context":`), bytes.TrimSpace(raw)...), '}')
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			q := url.Values{}
			if env.name != "" || a.getenv(envEnv) != "" {
				q.Set("env", env.resolve(a))
			}
			path := "/ofrep/v1/evaluate/flags"
			if len(args) == 1 {
				path += "/" + url.PathEscape(args[0])
			}
			r, err := cl.do(cmd.Context(), call{method: http.MethodPost, path: path, query: q, body: body})
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			var results []ofrepResult
			if len(args) == 1 {
				var one ofrepResult
				if err := decodeReply(r, &one); err != nil {
					return err
				}
				results = append(results, one)
			} else {
				var bulk struct {
					Flags []ofrepResult `json:"flags"`
				}
				if err := decodeReply(r, &bulk); err != nil {
					return err
				}
				results = bulk.Flags
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "KEY\tVALUE\tVARIANT\tREASON")
			for _, res := range results {
				value := "(code default)"
				if len(res.Value) > 0 {
					var buf bytes.Buffer
					if json.Compact(&buf, res.Value) == nil {
						value = buf.String()
					}
				}
				variant, reason := res.Variant, res.Reason
				if res.ErrorCode != "" {
					reason = "ERROR " + res.ErrorCode
					if res.ErrorDetails != "" {
						reason += ": " + res.ErrorDetails
					}
				}
				if variant == "" {
					variant = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", res.Key, value, variant, reason)
			}
			return tw.Flush()
		},
	}
	cf = a.addClientFlags(cmd)
	cmd.Flags().StringVarP(&contextArg, "context", "c", "", "evaluation context: a JSON object, or @FILE (JSON or YAML)")
	cmd.Flags().StringVarP(&env.name, "env", "e", "", "environment, for non-sdk keys (default $"+envEnv+", else the server's \"default\")")
	return cmd
}
