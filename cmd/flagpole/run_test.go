package main

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

func TestRunUsageErrors(t *testing.T) {
	dir := t.TempDir()
	flagFile := filepath.Join(dir, "flags.yaml")
	if err := os.WriteFile(flagFile, []byte("flags: {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	token := map[string]string{envToken: "fp_admin_test"}

	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		stderr []string
	}{
		{"unknown command", nil, []string{"frobnicate"}, []string{`unknown command "frobnicate" for "flagpole"`, "Run 'flagpole --help'"}},
		{"unknown subcommand", nil, []string{"flags", "lst"}, []string{`unknown command "lst" for "flagpole flags"`}},
		{"unknown flag", nil, []string{"serve", "--bogus"}, []string{"unknown flag: --bogus", "Run 'flagpole serve --help'"}},
		{"missing argument", token, []string{"flags", "get"}, []string{"missing argument KEY", "Run 'flagpole flags get --help'"}},
		{"extra argument", token, []string{"flags", "get", "a", "b"}, []string{`unexpected argument "b"`}},
		{"bad output format", token, []string{"env", "list", "-o", "yaml"}, []string{`--output "yaml": must be table or json`}},
		{"no token", nil, []string{"env", "list"}, []string{"no API key: pass --token or set FLAGPOLE_TOKEN"}},
		{"token with a line break", map[string]string{envToken: "fp_admin_a\nexport"}, []string{"env", "list"}, []string{"contains spaces or line breaks"}},
		{"bad url", token, []string{"env", "list", "--url", "ftp://example.com"}, []string{`--url "ftp://example.com": must be an http:// or https:// URL`}},
		{"bad url from env", map[string]string{envToken: "t", envURL: "localhost:8080"}, []string{"flags", "list"}, []string{"--url", "FLAGPOLE_URL"}},
		{"eval context not JSON", token, []string{"eval", "k", "--context", "{nope"}, []string{"--context: invalid JSON at line 1, column 2"}},
		{"eval context not an object", token, []string{"eval", "k", "--context", "[1]"}, []string{"--context: must be a JSON object"}},
		{"eval two keys", token, []string{"eval", "a", "b"}, []string{`unexpected argument "b"`}},
		{"keys create without role", token, []string{"keys", "create", "--name", "web"}, []string{`--role: must be one of "admin", "editor", "sdk"`}},
		{"keys create sdk without env", token, []string{"keys", "create", "--name", "web", "--role", "sdk"}, []string{"--env: an sdk key belongs to exactly one environment"}},
		{"keys create without name", token, []string{"keys", "create", "--role", "admin"}, []string{"--name: is required"}},
		{"keys revoke without id", token, []string{"keys", "revoke"}, []string{"missing argument ID"}},
		{"flags set nothing", token, []string{"flags", "set", "k"}, []string{"nothing to set"}},
		{"flags set file and variant", token, []string{"flags", "set", "k", "--file", flagFile, "--variant", "a=1"}, []string{"cannot be combined with --variant"}},
		{"flags set bad variant", token, []string{"flags", "set", "k", "--variant", "novalue"}, []string{`--variant "novalue": must be NAME=VALUE`}},
		{"flags set duplicate variant", token, []string{"flags", "set", "k", "--variant", "a=1", "--variant", "a=2"}, []string{`--variant: "a" is given twice`}},
		{"flags set bad state", token, []string{"flags", "set", "k", "--state", "ON"}, []string{`--state "ON": must be ENABLED or DISABLED`}},
		{"flags set default and no-default", token, []string{"flags", "set", "k", "--default", "a", "--no-default"}, []string{"--default and --no-default cannot be combined"}},
		{"flags set bad targeting", token, []string{"flags", "set", "k", "--targeting", `{"if":`}, []string{"--targeting: invalid JSON"}},
		{"flags set missing targeting file", token, []string{"flags", "set", "k", "--targeting", "@" + filepath.Join(dir, "nope.json")}, []string{"--targeting: open", "no such file"}},
		{"flags set file key mismatch", token, []string{"flags", "set", "k", "--file", writeTemp(t, dir, "f.json", `{"key":"other","state":"ENABLED","variants":{"a":1},"defaultVariant":"a"}`)}, []string{`defines key "other", not "k"`}},
		{"reason with newline", token, []string{"flags", "disable", "k", "--reason", "one\ntwo"}, []string{"--reason: must be a single line"}},
		{"negative if-match", token, []string{"flags", "delete", "k", "--if-match", "-3"}, []string{"--if-match -3: must be a positive version"}},
		{"import missing file", token, []string{"flags", "import", filepath.Join(dir, "missing.yaml")}, []string{"no such file"}},
		{"import broken json", token, []string{"flags", "import", writeTemp(t, dir, "broken.json", "{\n  \"flags\": {,\n}")}, []string{"broken.json: invalid JSON at line 2, column"}},
		{"export bad format", token, []string{"flags", "export", "-", "--format", "toml"}, []string{`--format "toml": must be json or yaml`}},
		{"audit zero limit", token, []string{"audit", "--limit", "0"}, []string{"--limit 0: must be at least 1"}},
		{"unreachable server", token, []string{"env", "list", "--url", "http://127.0.0.1:1"}, []string{"cannot reach the Flagpole server at http://127.0.0.1:1", "connection refused"}},
		{"serve bad log format", nil, []string{"serve", "--log-format", "xml"}, []string{`--log-format "xml": must be text or json`}},
		{"serve bad log format from env", map[string]string{envLogFormat: "xml"}, []string{"serve"}, []string{`--log-format "xml"`}},
		{"serve bad log level", nil, []string{"serve", "--log-level", "loud"}, []string{`--log-level "loud"`}},
		{"serve bad addr", nil, []string{"serve", "--addr", "8080"}, []string{`--addr "8080": must be HOST:PORT`}},
		{"serve bad env", nil, []string{"serve", "--env", "Prod Env"}, []string{"--env: ", "lower-case"}},
		{"serve watch without flags", nil, []string{"serve", "--watch"}, []string{"--watch needs --flags FILE"}},
		{"serve missing flag file", nil, []string{"serve", "--flags", filepath.Join(dir, "missing.yaml")}, []string{"--flags: ", "no such file"}},
		{"serve flag file is a directory", nil, []string{"serve", "--flags", dir}, []string{"is a directory"}},
		{"serve short admin key", map[string]string{envAdminKey: "short"}, []string{"serve"}, []string{"FLAGPOLE_ADMIN_KEY: must be at least 16 characters"}},
		{"serve negative rate limit", nil, []string{"serve", "--rate-limit", "-1"}, []string{"--rate-limit -1: must be 0 (no limit) or more"}},
		{"serve zero shutdown timeout", nil, []string{"serve", "--shutdown-timeout", "0s"}, []string{"--shutdown-timeout 0s: must be positive"}},
		{"serve bad redis url", nil, []string{"serve", "--addr", "127.0.0.1:0", "--redis", "localhost:6379"}, []string{"--redis: "}},
		{"serve address in use", nil, []string{"serve", "--addr", busy.Addr().String(), "--data-dir", filepath.Join(dir, "data")}, []string{"--addr " + busy.Addr().String(), "address already in use"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runCLI(t, tc.env, tc.args...)
			r.expect(t, 1, nil, tc.stderr)
			if r.stdout != "" {
				t.Errorf("stdout should be empty on error, got:\n%s", r.stdout)
			}
		})
	}
}

func TestRunHelp(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stdout []string
	}{
		{"no arguments", nil, []string{"flagpole serve", "FLAGPOLE_URL", "FLAGPOLE_TOKEN"}},
		{"root help", []string{"--help"}, []string{"Available Commands", "serve", "flags", "keys"}},
		{"serve help", []string{"serve", "--help"}, []string{"--addr", "--data-dir", "--flags", "--env", "--redis", "--watch", "FLAGPOLE_ADMIN_KEY"}},
		{"flags set help", []string{"flags", "set", "--help"}, []string{"--variant NAME=VALUE", "--no-targeting", "--reason"}},
		{"keys create help", []string{"keys", "create", "--help"}, []string{`"secret"`, "--role"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runCLI(t, nil, tc.args...).expect(t, 0, tc.stdout, nil)
		})
	}
}

// writeTemp writes content to dir/name and returns the path.
func writeTemp(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
