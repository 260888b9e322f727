package main

import (
	"fmt"
	"net/http"

	"github.com/flagpole/flagpole/flags"
	"github.com/spf13/cobra"
)

func (a *app) envCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "env",
		Short: "List and create environments",
		Args:  unknownSubcommand,
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cf := a.addClientFlags(cmd)
	cmd.AddCommand(a.envListCommand(cf), a.envCreateCommand(cf))
	return cmd
}

func (a *app) envListCommand(cf *clientFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List environments with their versions",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			var out struct {
				Environments []flags.Environment `json:"environments"`
			}
			r, err := cl.getJSON(cmd.Context(), "/api/v1/environments", nil, &out)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			tw := newTable(a.stdout)
			fmt.Fprintln(tw, "NAME\tVERSION\tUPDATED")
			for _, e := range out.Environments {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", e.Name, e.Version, formatTime(e.UpdatedAt))
			}
			return tw.Flush()
		},
	}
}

func (a *app) envCreateCommand(cf *clientFlags) *cobra.Command {
	var (
		file string
		w    writeOpts
	)
	cmd := &cobra.Command{
		Use:   "create NAME [--file FLAGS.yaml]",
		Short: "Create an environment, empty or holding the flag set in --file",
		Example: `  flagpole env create staging
  flagpole env create production --file flags.yaml --reason "initial import"`,
		Args: exactArgs("name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := w.check(cmd); err != nil {
				return err
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			body := map[string]any{"name": args[0]}
			if file != "" {
				doc, err := a.readDocument(file)
				if err != nil {
					return err
				}
				body["flags"] = doc
			}
			var out flags.Environment
			r, err := cl.sendJSON(cmd.Context(), http.MethodPost, "/api/v1/environments", w, body, &out)
			if err != nil {
				return err
			}
			if cl.json {
				return printRaw(a.stdout, r.body)
			}
			_, err = fmt.Fprintf(a.stdout, "environment %s created (version %d)\n", out.Name, out.Version)
			return err
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "flagd flag set to start with (JSON or YAML; - for stdin)")
	w.ifMatch = 0
	cmd.Flags().StringVar(&w.reason, "reason", "", "why: recorded in the audit log (sent as X-Change-Reason)")
	return cmd
}
