package flagpole_test

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/flagpole/flagpole"

// pkgFile is what the rules look at in one non-test Go file.
type pkgFile struct {
	pkg     string   // import path relative to the module, e.g. "flags", "canary/prometheus"
	name    string   // file path, for messages
	imports []string // import paths
	globals []string // uses of global loggers/registries, e.g. "slog.Info"
}

// globalUses are package-level loggers and registries that must be injected instead.
var globalUses = map[string][]string{
	"slog":       {"Debug", "Info", "Warn", "Error", "Log", "LogAttrs", "Default", "SetDefault", "DebugContext", "InfoContext", "WarnContext", "ErrorContext"},
	"log":        {"Print", "Printf", "Println", "Fatal", "Fatalf", "Fatalln", "Panic", "Panicf", "Panicln", "Default"},
	"prometheus": {"MustRegister", "Register", "Unregister", "DefaultRegisterer", "DefaultGatherer"},
	"promauto":   {"NewCounter", "NewCounterVec", "NewGauge", "NewGaugeVec", "NewHistogram", "NewHistogramVec", "NewSummary", "NewSummaryVec"},
}

func readTree(t *testing.T, root string) []pkgFile {
	t.Helper()
	var files []pkgFile
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); p != root && (strings.HasPrefix(n, ".") || n == "testdata" || n == "vendor" || n == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly|parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		full, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		pf := pkgFile{pkg: filepath.ToSlash(rel), name: p}
		names := map[string]string{} // local name -> import path
		for _, im := range f.Imports {
			ip := strings.Trim(im.Path.Value, `"`)
			pf.imports = append(pf.imports, ip)
			local := path.Base(ip)
			if im.Name != nil {
				local = im.Name.Name
			}
			names[local] = ip
		}
		ast.Inspect(full, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			id, ok := sel.X.(*ast.Ident)
			if !ok {
				return true
			}
			ip := names[id.Name]
			base := path.Base(ip)
			if ip == "github.com/prometheus/client_golang/prometheus/promauto" {
				base = "promauto"
			}
			if (ip == "log/slog" || ip == "log" || strings.HasPrefix(ip, "github.com/prometheus/client_golang/")) && slices.Contains(globalUses[base], sel.Sel.Name) {
				pf.globals = append(pf.globals, base+"."+sel.Sel.Name)
			}
			return true
		})
		files = append(files, pf)
		return nil
	})
	if err != nil {
		t.Fatalf("reading the tree: %v", err)
	}
	return files
}

func under(pkg string, roots ...string) bool {
	for _, r := range roots {
		if pkg == r || strings.HasPrefix(pkg, r+"/") {
			return true
		}
	}
	return false
}

func internal(ip string) (string, bool) {
	if ip == module {
		return ".", true
	}
	rel, ok := strings.CutPrefix(ip, module+"/")
	return rel, ok
}

// Domain packages hold the model and the logic; adapters connect them to one dependency each.
var (
	domain   = []string{"flags", "experiments", "canary", "auth"}
	adapters = []string{"redis", "api", "canary/prometheus", "deploy"}
)

// adapterOf names the adapter a package belongs to, or "".
func adapterOf(pkg string) string {
	best := ""
	for _, a := range adapters {
		if under(pkg, a) && len(a) > len(best) {
			best = a
		}
	}
	return best
}

// violations applies every import rule of DEVELOPERS.md to the files.
func violations(files []pkgFile) []string {
	var out []string
	bad := func(f pkgFile, format string, args ...any) {
		out = append(out, f.name+": "+fmt.Sprintf(format, args...))
	}
	for _, f := range files {
		switch path.Base(f.pkg) {
		case "util", "utils", "common", "types", "models", "helpers":
			bad(f, "package name %q says nothing; name packages after what they provide", path.Base(f.pkg))
		}
		isDomain := under(f.pkg, domain...) && adapterOf(f.pkg) == ""
		for _, ip := range f.imports {
			rel, own := internal(ip)
			if own && under(rel, "cmd") {
				bad(f, "imports %s: nothing imports cmd", ip)
			}
			if isDomain {
				if own && adapterOf(rel) != "" {
					bad(f, "domain package imports adapter %s", ip)
				}
				for _, banned := range []string{"github.com/labstack/echo", "github.com/redis/go-redis", "github.com/prometheus/client_golang", "github.com/alicebob/miniredis"} {
					if strings.HasPrefix(ip, banned) {
						bad(f, "domain package imports %s", ip)
					}
				}
				if ip == "log" {
					bad(f, "domain package imports the global logger %q; take a *slog.Logger", ip)
				}
			}
			if a := adapterOf(f.pkg); a != "" && own {
				if b := adapterOf(rel); b != "" && b != a && rel != "api/ofrep" {
					bad(f, "adapter %s imports adapter %s", a, b)
				}
			}
			if under(f.pkg, "sdk") && own {
				if (under(rel, "api") && rel != "api/ofrep") || under(rel, "redis", "canary", "experiments") {
					bad(f, "sdk imports %s: an app must not inherit the server's dependencies", ip)
				}
			}
			if under(f.pkg, "sdk") && !own && (strings.HasPrefix(ip, "github.com/labstack/echo") || strings.HasPrefix(ip, "github.com/redis/go-redis")) {
				bad(f, "sdk imports %s", ip)
			}
			if f.pkg == "flags" && !own && strings.Contains(strings.SplitN(ip, "/", 2)[0], ".") {
				allowed := []string{"github.com/spaolacci/murmur3", "sigs.k8s.io/yaml", "go.yaml.in/yaml/v2", "go.yaml.in/yaml/v3", "gopkg.in/yaml.v3"}
				if !slices.Contains(allowed, ip) {
					bad(f, "flags imports %s: only the standard library, a hash and a YAML library", ip)
				}
			}
		}
		for _, g := range f.globals {
			bad(f, "uses %s: loggers and registries are passed in, never global", g)
		}
	}
	return out
}

func TestImportRules(t *testing.T) {
	files := readTree(t, ".")
	if len(files) == 0 {
		t.Fatal("found no Go files")
	}
	for _, v := range violations(files) {
		t.Error(v)
	}
}

// TestImportRulesCatchViolations shows that each rule fires on a file that breaks it.
func TestImportRulesCatchViolations(t *testing.T) {
	tests := []struct {
		name string
		file pkgFile
		want string
	}{
		{name: "domain imports redis adapter", file: pkgFile{pkg: "flags", name: "f.go", imports: []string{module + "/redis"}}, want: "domain package imports adapter"},
		{name: "domain imports go-redis", file: pkgFile{pkg: "canary", name: "f.go", imports: []string{"github.com/redis/go-redis/v9"}}, want: "domain package imports github.com/redis/go-redis/v9"},
		{name: "domain imports client_golang", file: pkgFile{pkg: "experiments", name: "f.go", imports: []string{"github.com/prometheus/client_golang/prometheus"}}, want: "domain package imports"},
		{name: "adapter imports adapter", file: pkgFile{pkg: "api", name: "f.go", imports: []string{module + "/redis"}}, want: "adapter api imports adapter redis"},
		{name: "prometheus adapter imports api", file: pkgFile{pkg: "canary/prometheus", name: "f.go", imports: []string{module + "/api"}}, want: "adapter canary/prometheus imports adapter api"},
		{name: "sdk imports api", file: pkgFile{pkg: "sdk", name: "f.go", imports: []string{module + "/api"}}, want: "sdk imports"},
		{name: "sdk imports canary", file: pkgFile{pkg: "sdk", name: "f.go", imports: []string{module + "/canary"}}, want: "sdk imports"},
		{name: "anything imports cmd", file: pkgFile{pkg: "api", name: "f.go", imports: []string{module + "/cmd/flagpole"}}, want: "nothing imports cmd"},
		{name: "util package", file: pkgFile{pkg: "api/util", name: "f.go"}, want: "says nothing"},
		{name: "flags imports a web framework", file: pkgFile{pkg: "flags", name: "f.go", imports: []string{"github.com/labstack/echo/v4"}}, want: "only the standard library"},
		{name: "global logger", file: pkgFile{pkg: "canary", name: "f.go", globals: []string{"slog.Info"}}, want: "never global"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := violations([]pkgFile{tc.file})
			if len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), tc.want) {
				t.Errorf("violations = %q, want one containing %q", got, tc.want)
			}
		})
	}
	allowed := []pkgFile{
		{pkg: "sdk", name: "ok.go", imports: []string{module + "/flags", module + "/api/ofrep", "github.com/open-feature/go-sdk/openfeature"}},
		{pkg: "api", name: "ok.go", imports: []string{module + "/flags", module + "/api/ofrep", "github.com/labstack/echo/v4"}},
		{pkg: "deploy", name: "ok.go", imports: []string{module + "/canary"}},
	}
	if got := violations(allowed); len(got) != 0 {
		t.Errorf("allowed imports reported: %q", got)
	}
}
