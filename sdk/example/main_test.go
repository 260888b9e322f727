package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunOffline(t *testing.T) {
	file := filepath.Join(t.TempDir(), "flags.yaml")
	doc := "flags:\n  new-checkout:\n    state: ENABLED\n    variants: {\"on\": true, \"off\": false}\n    defaultVariant: \"off\"\n" +
		"    targeting: {if: [{ends_with: [{var: email}, \"@example.com\"]}, \"on\", null]}\n"
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		want    string
		wantErr string
	}{
		{name: "employee gets the new checkout", args: []string{"-bootstrap", file, "-once"}, want: "start: new-checkout = true (variant \"on\", reason TARGETING_MATCH)"},
		{name: "others get the default variant", args: []string{"-bootstrap", file, "-once", "-email", "bob@corp.test"}, want: "start: new-checkout = false (variant \"off\", reason DEFAULT)"},
		{name: "unknown flag", args: []string{"-bootstrap", file, "-once", "-flag", "nope"}, want: "FLAG_NOT_FOUND"},
		{name: "bad URL is fatal", args: []string{"-url", "not a url", "-once"}, wantErr: "WithURL"},
		{name: "bad option", args: []string{"-bogus"}, wantErr: "bogus"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), tc.args, func(string) string { return "" }, &out, &errOut)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(out.String(), tc.want) {
				t.Errorf("output %q (error %v), want it to contain %q", out.String(), err, tc.want)
			}
		})
	}
}
