package sdk

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/flagpole/flagpole/api/ofrep"
)

const msgFlags = `{"flags":{"a":{"state":"ENABLED","variants":{"off":false,"on":true},"defaultVariant":"on"}}}`

func TestDecodeMessage(t *testing.T) {
	hub, err := json.Marshal(ofrep.StreamMessage{Environment: "prod", Version: 7, ETag: `"v7-abc"`,
		Changed: []string{"a", "b"}, Flags: json.RawMessage(msgFlags)})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		data     string
		wantFast bool
	}{
		{"as the hub writes it (quoted ETag)", string(hub), true},
		{"spaces around everything", ` { "version" : 3 , "environment" : "é" , "flags" : ` + msgFlags + " } \n", true},
		{"no changed list", `{"environment":"x","version":1,"etag":"e","flags":` + msgFlags + `}`, true},
		{"changed is null", `{"environment":"x","version":1,"changed":null,"flags":` + msgFlags + `}`, true},
		{"changed is empty", `{"environment":"x","version":1,"changed":[],"flags":` + msgFlags + `}`, true},
		{"resume: no flags", `{"environment":"x","version":4,"etag":"e"}`, true},
		{"flags not last", `{"flags":` + msgFlags + `,"version":2}`, true},
		{"unknown member", `{"environment":"x","extra":1,"flags":` + msgFlags + `}`, false},
		{"member in another case", `{"Version":5,"flags":` + msgFlags + `}`, false},
		{"repeated member", `{"version":1,"version":2,"flags":` + msgFlags + `}`, false},
		{"fractional version", `{"version":1.5,"flags":` + msgFlags + `}`, false},
		{"version too large", `{"version":99999999999999999999,"flags":` + msgFlags + `}`, false},
		{"flags is null", `{"version":1,"flags":null}`, false},
		{"not an object", `[1,2]`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, fast, err := decodeMessage([]byte(tc.data))
			if fast != tc.wantFast {
				t.Fatalf("fast = %v, want %v", fast, tc.wantFast)
			}
			var want ofrep.StreamMessage
			wantErr := json.Unmarshal([]byte(tc.data), &want)
			if fast && tc.name == "flags not last" {
				// The shortcut takes the rest as the flag set, which is then
				// not one JSON value: apply decodes again (TestApplyFallsBack).
				if json.Valid(got.Flags) {
					t.Fatalf("flags %s are valid JSON", got.Flags)
				}
				return
			}
			if (err != nil) != (wantErr != nil) {
				t.Fatalf("error %v, encoding/json's %v", err, wantErr)
			}
			if err == nil && !sameMessage(got, want) {
				t.Fatalf("decoded %+v, encoding/json %+v", got, want)
			}
		})
	}
}

func sameMessage(a, b ofrep.StreamMessage) bool {
	af, bf := a.Flags, b.Flags
	a.Flags, b.Flags = nil, nil
	return reflect.DeepEqual(a, b) && bytes.Equal(af, bf)
}

// FuzzDecodeMessage: whenever the shortcut reads a message whose flag set
// is one JSON value, encoding/json reads the same message.
func FuzzDecodeMessage(f *testing.F) {
	f.Add(`{"environment":"x","version":1,"etag":"\"e\"","changed":["a"],"flags":` + msgFlags + `}`)
	f.Add(`{"flags":{},"version":2}`)
	f.Add(`{"version":3}`)
	f.Fuzz(func(t *testing.T, data string) {
		got, fast, err := decodeMessage([]byte(data))
		var want ofrep.StreamMessage
		wantErr := json.Unmarshal([]byte(data), &want)
		switch {
		case !fast:
			if (err != nil) != (wantErr != nil) || err == nil && !sameMessage(got, want) {
				t.Fatalf("slow path differs from encoding/json: %v / %v", err, wantErr)
			}
		case got.Flags == nil || json.Valid(got.Flags):
			if wantErr != nil {
				t.Fatalf("shortcut read %q, which encoding/json rejects: %v", data, wantErr)
			}
			if !sameMessage(got, want) {
				t.Fatalf("shortcut read %+v, encoding/json %+v", got, want)
			}
		}
	})
}

// A message the shortcut misreads (its flag set is not last) is decoded
// again by encoding/json and applied.
func TestApplyFallsBack(t *testing.T) {
	p := NewProvider(WithURL("http://127.0.0.1:1"), WithSDKKey(testKey), WithEnvironment(testEnv))
	data := `{"flags":` + msgFlags + `,"version":9,"etag":"\"x\"","environment":"` + testEnv + `"}`
	if err := p.apply([]byte(data)); err != nil {
		t.Fatal(err)
	}
	st := p.current.Load()
	if st == nil || st.version != 9 || st.etag != `"x"` {
		t.Fatalf("installed %+v, want version 9", st)
	}
	if d := p.BooleanEvaluation(bg, "a", false, openfeature.FlattenedContext{}); !d.Value {
		t.Fatalf("flag a = %+v", d)
	}
	// A message that is not JSON is still refused.
	if err := p.apply([]byte(`{"flags":` + msgFlags + `,"version":`)); err == nil {
		t.Fatal("applied a broken message")
	}
}
