package main

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/flagpole/flagpole/flags"
	"github.com/spf13/cobra"
)

// maxAuditPage is the largest page the API serves.
const maxAuditPage = 500

func (a *app) auditCommand() *cobra.Command {
	var (
		flag    string
		limit   int
		cursor  string
		changes bool
		env     envFlag
		cf      *clientFlags
	)
	cmd := &cobra.Command{
		Use:   "audit [--flag KEY] [--limit N]",
		Short: "Show an environment's change history, newest first",
		Long: `Show who changed what, when and why in an environment, newest first.

--flag keeps the changes that touched one flag; --limit says how many entries
to show (pages are fetched as needed); --changes prints each change's diff.
With -o json the output is one page: {"entries":[...],"next":"CURSOR"}, and
--cursor CURSOR continues from a previous page.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 {
				return usagef(cmd, "--limit %d: must be at least 1", limit)
			}
			cl, err := a.client(cmd, cf)
			if err != nil {
				return err
			}
			envName := env.resolve(a)
			var all flags.AuditPage
			next := cursor
			for {
				q := url.Values{}
				q.Set("limit", strconv.Itoa(min(limit-len(all.Entries), maxAuditPage)))
				if flag != "" {
					q.Set("flag", flag)
				}
				if next != "" {
					q.Set("cursor", next)
				}
				var page flags.AuditPage
				if _, err := cl.getJSON(cmd.Context(), envPath(envName, "audit"), q, &page); err != nil {
					return err
				}
				all.Entries = append(all.Entries, page.Entries...)
				next = page.Next
				if next == "" || len(page.Entries) == 0 || len(all.Entries) >= limit {
					break
				}
			}
			all.Next = next
			if all.Entries == nil {
				all.Entries = []flags.AuditEntry{}
			}
			if cl.json {
				return printJSON(a.stdout, all)
			}
			if changes {
				a.printAuditChanges(all.Entries)
			} else {
				tw := newTable(a.stdout)
				fmt.Fprintln(tw, "TIME\tVERSION\tACTOR\tACTION\tFLAGS\tREASON")
				for _, e := range all.Entries {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", formatTime(e.Time), e.Version, e.Actor, e.Action, changedKeys(e, 3), orDash(e.Reason))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if all.Next != "" {
				_, err = fmt.Fprintf(a.stdout, "(more: --cursor %s)\n", all.Next)
			}
			return err
		},
	}
	cf = a.addClientFlags(cmd)
	cmd.Flags().StringVar(&flag, "flag", "", "only changes to this flag")
	cmd.Flags().IntVarP(&limit, "limit", "n", 20, "how many entries to show")
	cmd.Flags().StringVar(&cursor, "cursor", "", "continue after a previous page (its \"next\")")
	cmd.Flags().BoolVar(&changes, "changes", false, "print each change's diff")
	cmd.Flags().StringVarP(&env.name, "env", "e", "", "environment (default $"+envEnv+" or \"default\")")
	return cmd
}

// printAuditChanges prints each entry as a heading followed by its diff.
func (a *app) printAuditChanges(entries []flags.AuditEntry) {
	for i, e := range entries {
		if i > 0 {
			fmt.Fprintln(a.stdout)
		}
		fmt.Fprintf(a.stdout, "%s  version %d  %s  %s\n", formatTime(e.Time), e.Version, e.Actor, e.Action)
		if e.Reason != "" {
			fmt.Fprintf(a.stdout, "  reason: %s\n", e.Reason)
		}
		for _, c := range e.Changes {
			for _, d := range c.Diff {
				where := c.Key
				if d.Path != "" {
					where += " " + d.Path
				}
				fmt.Fprintf(a.stdout, "  %s %s: %s\n", d.Op, where, describeDiff(d))
			}
		}
	}
}

// changedKeys lists the flags an entry changed, at most max of them.
func changedKeys(e flags.AuditEntry, max int) string {
	if len(e.Changes) == 0 {
		return "-"
	}
	keys := make([]string, 0, max)
	for i, c := range e.Changes {
		if i == max {
			return strings.Join(keys, ",") + fmt.Sprintf(" +%d more", len(e.Changes)-max)
		}
		keys = append(keys, c.Key)
	}
	return strings.Join(keys, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// describeDiff renders one diff operation's values compactly.
func describeDiff(d flags.DiffOp) string {
	short := func(b []byte) string {
		s := string(b)
		if len(s) > 60 {
			s = s[:57] + "..."
		}
		return s
	}
	switch d.Op {
	case "replace":
		return short(d.From) + " -> " + short(d.Value)
	case "remove":
		return "was " + short(d.From)
	default:
		return short(d.Value)
	}
}
