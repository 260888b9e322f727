package ofrep

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestParseETags(t *testing.T) {
	tests := []struct {
		name, header string
		want         []string
	}{
		{"empty", "", nil},
		{"one", `"a"`, []string{`"a"`}},
		{"list with spaces and weak", ` "a" , W/"b",  "c"`, []string{`"a"`, `W/"b"`, `"c"`}},
		{"comma inside a tag", `"a,b", "c"`, []string{`"a,b"`, `"c"`}},
		{"star", `*`, []string{"*"}},
		{"junk skipped", `junk, "ok"`, []string{`"ok"`}},
		{"unterminated", `"ok", "bro`, []string{`"ok"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ParseETags(tc.header); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParseETags(%q) = %q, want %q", tc.header, got, tc.want)
			}
		})
	}
}

func TestMatchesETag(t *testing.T) {
	tests := []struct {
		name, header, etag string
		want               bool
	}{
		{"same", `"x"`, `"x"`, true},
		{"weak header", `W/"x"`, `"x"`, true},
		{"weak etag", `"x"`, `W/"x"`, true},
		{"in list", `"a", "x"`, `"x"`, true},
		{"star", `*`, `"x"`, true},
		{"different", `"y"`, `"x"`, false},
		{"unquoted", `x`, `"x"`, false},
		{"empty", ``, `"x"`, false},
		{"prefix only", `"x`, `"x"`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := MatchesETag(tc.header, tc.etag); got != tc.want {
				t.Errorf("MatchesETag(%q, %q) = %v", tc.header, tc.etag, got)
			}
		})
	}
}

// TestEvaluationOmitsCodeDefault checks that a false value is sent while a
// code default (nil) leaves value out.
func TestEvaluationOmitsCodeDefault(t *testing.T) {
	b, _ := json.Marshal(Evaluation{Key: "k", Value: false, Reason: ReasonStatic, Variant: "off"})
	if string(b) != `{"key":"k","value":false,"reason":"STATIC","variant":"off"}` {
		t.Errorf("false value: %s", b)
	}
	b, _ = json.Marshal(Evaluation{Key: "k", Reason: ReasonDisabled})
	if string(b) != `{"key":"k","reason":"DISABLED"}` {
		t.Errorf("code default: %s", b)
	}
	if !(Evaluation{ErrorCode: General}).Failed() || (Evaluation{}).Failed() {
		t.Errorf("Failed")
	}
}
