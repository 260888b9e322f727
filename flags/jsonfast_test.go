package flags

import (
	"reflect"
	"strings"
	"testing"
)

var jsonParserSeeds = []string{
	`{"flags": {"a": {"state": "ENABLED", "variants": {"on": true}}}}`,
	`{"a": 1, "a": 2, "b": [1, 2.5e3, -0, null, true, false, "x"]}`,
	`[1e999, {"n": -1e400}, "\u00e9\ud83d\ude00", "bad \ud800 surrogate", "tab\tinside"]`,
	`{"k\"ey": "v\\al\/ue\n", "é": "ü", "": ""}`,
	"\"\xff\xfe invalid utf-8\"",
	`{"a": [1, 2,]}`,
	`{"a": 1,}`,
	`{"a" 1}`,
	`[01]`,
	`[-]`,
	`[1.]`,
	`[1e]`,
	`[.5]`,
	`truex`,
	`{} {}`,
	`{}   `,
	`  [ ]  `,
	`{"a": "unterminated`,
	`{"a": "ctl ` + "\x01" + `"}`,
	`"\x"`,
	`nul`,
	`[` + strings.Repeat(`[`, 130) + strings.Repeat(`]`, 131),
	`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k3":33,"k17":17}`,
	`{"a": {"b": [{"c": 1e500}]}, "a": {"d": 1}}`,
}

// FuzzFastJSON checks the fast parser against the encoding/json-based one:
// for every input both accept or both reject, and when they accept they
// build the same tree and report the same problems.
func FuzzFastJSON(f *testing.F) {
	for _, s := range jsonParserSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		checkFastJSON(t, in)
	})
}

func TestFastJSONMatchesDecoder(t *testing.T) {
	for _, s := range jsonParserSeeds {
		t.Run(s[:min(len(s), 24)], func(t *testing.T) { checkFastJSON(t, s) })
	}
	t.Run("realistic set", func(t *testing.T) { checkFastJSON(t, realisticSet(300, 3)) })
}

func checkFastJSON(t *testing.T, in string) {
	t.Helper()
	var fps, sps problems
	fn, ok := parseJSONFast([]byte(in), &fps, "root")
	sn, err := parseJSONTreeSlow([]byte(in), &sps, "root")
	if ok != (err == nil) {
		t.Fatalf("fast ok=%v, slow err=%v for %q", ok, err, in)
	}
	if !ok {
		if len(fps) != 0 {
			t.Fatalf("fast parser left problems behind after giving up: %v", fps)
		}
		return
	}
	if !reflect.DeepEqual(fps, sps) {
		t.Fatalf("problems differ for %q:\nfast %v\nslow %v", in, fps, sps)
	}
	if !sameNode(fn, sn) {
		t.Fatalf("trees differ for %q:\nfast %s\nslow %s", in, fn.canonicalJSON(), sn.canonicalJSON())
	}
}

func sameNode(a, b *node) bool {
	if a.kind != b.kind || a.b != b.b || a.raw != b.raw || len(a.arr) != len(b.arr) || len(a.keys) != len(b.keys) {
		return false
	}
	if a.num != b.num && !(a.num != a.num && b.num != b.num) {
		return false
	}
	for i := range a.arr {
		if !sameNode(a.arr[i], b.arr[i]) {
			return false
		}
	}
	for i := range a.keys {
		if a.keys[i] != b.keys[i] || !sameNode(a.vals[i], b.vals[i]) {
			return false
		}
	}
	return true
}
