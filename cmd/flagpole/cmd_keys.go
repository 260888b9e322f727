package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/flagpole/flagpole/auth"
	"github.com/spf13/cobra"
)

func (a *app) keysCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Create, list and revoke API keys (admin)",
		Args:  unknownSubcommand,
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cf := a.addClientFlags(cmd)
	cmd.AddCommand(a.keysCreateCommand(cf), a.keysListCommand(cf), a.keysRevokeCommand(cf))
	return cmd
}

// createdKey is the reply to POST /api/v1/keys: the key with its secret.
type createdKey struct {
	auth.Key
	Secret string `json:"secret"`
}

func (a *app) keysCreateCommand(cf *clientFlags) *cobra.Command {
	var (
		name string
		role string
		envs []string
	)
	cmd := &cobra.Command{
		Use:   "create --name NAME --role admin|editor|sdk [--env ENV]...",
		Short: "Create an API key and print its secret (shown only this once)",
		Long: `Create an API key and print its secret. The secret is shown only this once;
the server stores a hash of it.

Roles: admin (everything; no --env), editor (read and change flags in the
--env environments, one or more), sdk (evaluate flags in exactly one --env).
With -o json the output is a JSON object whose "secret" field holds the key.`,
		Example: `  flagpole keys create --name web --role sdk --env production -o json
  flagpole keys create --name ci --role editor --env staging --env production`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			k := auth.Key{Name: name, Role: auth.Role(strings.ToLower(role)), Envs: envs}
			if field, problem := k.Validate(); field != "" {
				flagName := map[string]string{"name": "--name", "role": "--role", "environments": "--env"}[field]
				return usagef(cmd, "%s: %s", flagName, problem)
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			body := map[string]any{"name": k.Name, "role": k.Role, "environments": k.Envs}
			if k.Envs == nil {
				body["environments"] = []string{}
			}
			var out createdKey
			r, err := cl.sendJSON(cmd.Context(), http.MethodPost, "/api/v1/keys", writeOpts{}, body, &out)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			tw := newTable(a.stdout)
			fmt.Fprintf(tw, "id:\t%s\n", out.ID)
			fmt.Fprintf(tw, "name:\t%s\n", out.Name)
			fmt.Fprintf(tw, "role:\t%s\n", out.Role)
			if len(out.Envs) > 0 {
				fmt.Fprintf(tw, "environments:\t%s\n", strings.Join(out.Envs, ","))
			}
			fmt.Fprintf(tw, "secret:\t%s\n", out.Secret)
			if err := tw.Flush(); err != nil {
				return err
			}
			_, err = fmt.Fprintln(a.stdout, "Store the secret now: it is not shown again.")
			return err
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "a name for the key (who or what uses it; recorded in the audit log)")
	cmd.Flags().StringVar(&role, "role", "", "admin, editor or sdk")
	cmd.Flags().StringArrayVarP(&envs, "env", "e", nil, "environment the key may use (repeatable; editor: one or more, sdk: exactly one)")
	return cmd
}

func (a *app) keysListCommand(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List API keys (never their secrets)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			var out struct {
				Keys []auth.Key `json:"keys"`
			}
			r, err := cl.getJSON(cmd.Context(), "/api/v1/keys", nil, &out)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "ID\tNAME\tROLE\tENVIRONMENTS\tPREFIX\tCREATED\tREVOKED")
			for _, k := range out.Keys {
				envs := strings.Join(k.Envs, ",")
				if envs == "" {
					envs = "*"
				}
				revoked := "-"
				if k.RevokedAt != nil {
					revoked = formatTime(*k.RevokedAt)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Role, envs, k.Prefix, formatTime(k.CreatedAt), revoked)
			}
			return tw.Flush()
		},
	}
}

func (a *app) keysRevokeCommand(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API key: it stops working at once",
		Args:  exactArgs("id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			if _, err := cl.do(cmd.Context(), call{method: http.MethodDelete, path: "/api/v1/keys/" + url.PathEscape(args[0])}); err != nil {
				return err
			}
			if cl.json {
				return printJSON(a.stdout, map[string]any{"id": args[0], "revoked": true})
			}
			_, err = fmt.Fprintf(a.stdout, "key %s revoked\n", args[0])
			return err
		},
	}
}
