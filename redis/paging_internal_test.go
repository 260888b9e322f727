package redis

import (
	"errors"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
)

func TestTimeCursor(t *testing.T) {
	at := time.Date(2025, 6, 1, 12, 0, 0, 123_900_000, time.UTC)
	if got := timeCursor(at, "run-1"); got != "1748779200123:run-1" {
		t.Errorf("timeCursor = %q; want milliseconds (truncated) and the ID", got)
	}
	nonEmpty := func(id string) bool { return id != "" }
	tests := []struct {
		name   string
		cursor string
		want   pagePos
		bad    bool
	}{
		{name: "first page", cursor: "", want: pagePos{upper: "+inf"}},
		{name: "round trip", cursor: timeCursor(at, "run-1"), want: pagePos{upper: "1748779200123", afterID: "run-1"}},
		{name: "ID with a colon", cursor: "5:a:b", want: pagePos{upper: "5", afterID: "a:b"}},
		{name: "no separator", cursor: "yesterday", bad: true},
		{name: "not milliseconds", cursor: "soon:run-1", bad: true},
		{name: "empty ID", cursor: "5:", bad: true},
		{name: "fractional milliseconds", cursor: "5.5:run-1", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTimeCursor(tc.cursor, nonEmpty)
			if tc.bad {
				var ve *canary.ValidationError
				if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Field != "cursor" {
					t.Errorf("parseTimeCursor(%q) = %+v, %v; want a validation error naming cursor", tc.cursor, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("parseTimeCursor(%q) = %+v, %v; want %+v", tc.cursor, got, err, tc.want)
			}
		})
	}
	// The caller's ID rule applies.
	if _, err := parseTimeCursor("5:NOT A RUN ID", func(id string) bool { return canary.CheckRunID(id) == nil }); err == nil {
		t.Error("a cursor with an ID the caller rejects was accepted")
	}
}
