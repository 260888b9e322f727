package deploy_test

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// object is one parsed Kubernetes-style document.
type object struct {
	file string
	doc  map[string]any
}

// get walks a dotted path through maps ("spec.template.metadata.labels"); a
// numeric segment indexes a list.
func get(v any, path string) any {
	for _, part := range strings.Split(path, ".") {
		switch t := v.(type) {
		case map[string]any:
			v = t[part]
		case []any:
			var i int
			if _, err := fmt.Sscan(part, &i); err != nil || i < 0 || i >= len(t) {
				return nil
			}
			v = t[i]
		default:
			return nil
		}
	}
	return v
}

var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

func readManifests(t *testing.T) []object {
	t.Helper()
	var objs []object
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for i, part := range docSeparator.Split(string(data), -1) {
			if len(bytes.TrimSpace([]byte(stripComments(part)))) == 0 {
				continue
			}
			var m map[string]any
			if err := yaml.Unmarshal([]byte(part), &m); err != nil {
				t.Errorf("%s (document %d): not valid YAML: %v", p, i+1, err)
				continue
			}
			objs = append(objs, object{file: p, doc: m})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func stripComments(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func str(v any) string { s, _ := v.(string); return s }

func labelsMatch(selector, labels any) bool {
	sel, _ := selector.(map[string]any)
	lab, _ := labels.(map[string]any)
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if lab[k] != v {
			return false
		}
	}
	return true
}

// requiredByKind lists the fields each kind must set.
var requiredByKind = map[string][]string{
	"Deployment":          {"spec.selector.matchLabels", "spec.template.metadata.labels", "spec.template.spec.containers.0.image", "spec.template.spec.containers.0.readinessProbe.httpGet.path", "spec.template.spec.containers.0.livenessProbe.httpGet.path", "spec.template.spec.containers.0.resources.limits.memory"},
	"StatefulSet":         {"spec.selector.matchLabels", "spec.template.metadata.labels", "spec.template.spec.containers.0.image", "spec.serviceName"},
	"Service":             {"spec.selector", "spec.ports.0.port"},
	"PodDisruptionBudget": {"spec.selector.matchLabels"},
	"ServiceMonitor":      {"spec.selector.matchLabels", "spec.endpoints.0.port", "spec.endpoints.0.path"},
	"ConfigMap":           {"data"},
	"Secret":              {"stringData"},
	"Namespace":           {},
	"Kustomization":       {"resources"},
	"AnalysisTemplate":    {"spec.metrics.0.name", "spec.metrics.0.provider.web.url"},
	"Canary":              {"spec.targetRef.name", "spec.analysis.webhooks.0.url"},
	"Rollout":             {"spec.strategy.canary.steps"},
}

func TestManifestsHaveRequiredFields(t *testing.T) {
	objs := readManifests(t)
	if len(objs) == 0 {
		t.Fatal("no manifests found under deploy/")
	}
	for _, o := range objs {
		kind := str(o.doc["kind"])
		name := fmt.Sprintf("%s/%s/%s", o.file, kind, str(get(o.doc, "metadata.name")))
		t.Run(name, func(t *testing.T) {
			if str(o.doc["apiVersion"]) == "" || kind == "" {
				t.Fatalf("apiVersion and kind are required")
			}
			required, known := requiredByKind[kind]
			if !known {
				t.Fatalf("kind %q has no checks; add them to requiredByKind", kind)
			}
			if kind != "Kustomization" && str(get(o.doc, "metadata.name")) == "" {
				t.Errorf("metadata.name is required")
			}
			for _, f := range required {
				if get(o.doc, f) == nil {
					t.Errorf("%s is required", f)
				}
			}
			if kind == "Deployment" || kind == "StatefulSet" {
				if !labelsMatch(get(o.doc, "spec.selector.matchLabels"), get(o.doc, "spec.template.metadata.labels")) {
					t.Errorf("spec.selector.matchLabels does not select spec.template.metadata.labels")
				}
			}
		})
	}
}

// TestSelectorsFindWorkloads checks that every Service, PodDisruptionBudget and
// ServiceMonitor selects something defined alongside it.
func TestSelectorsFindWorkloads(t *testing.T) {
	objs := readManifests(t)
	for _, o := range objs {
		var sel any
		var targets []string
		switch str(o.doc["kind"]) {
		case "Service":
			sel, targets = get(o.doc, "spec.selector"), []string{"Deployment", "StatefulSet"}
		case "PodDisruptionBudget":
			sel, targets = get(o.doc, "spec.selector.matchLabels"), []string{"Deployment", "StatefulSet"}
		case "ServiceMonitor":
			sel, targets = get(o.doc, "spec.selector.matchLabels"), []string{"Service"}
		default:
			continue
		}
		found := false
		for _, w := range objs {
			if filepath.Dir(w.file) != filepath.Dir(o.file) || !slices.Contains(targets, str(w.doc["kind"])) {
				continue
			}
			labels := get(w.doc, "spec.template.metadata.labels")
			if str(w.doc["kind"]) == "Service" {
				labels = get(w.doc, "metadata.labels")
			}
			if labelsMatch(sel, labels) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s %s/%s selects nothing in %s", o.file, o.doc["kind"], get(o.doc, "metadata.name"), filepath.Dir(o.file))
		}
	}
}

// TestKustomizationListsExistingFiles checks every kustomization's resources exist.
func TestKustomizationListsExistingFiles(t *testing.T) {
	for _, o := range readManifests(t) {
		if str(o.doc["kind"]) != "Kustomization" {
			continue
		}
		list, _ := o.doc["resources"].([]any)
		for _, r := range list {
			if _, err := os.Stat(filepath.Join(filepath.Dir(o.file), str(r))); err != nil {
				t.Errorf("%s lists %v: %v", o.file, r, err)
			}
		}
	}
}
