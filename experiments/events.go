package experiments

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// Tracking events are what metrics are computed from: an OpenFeature Track
// call ("checkout", with an optional value) or an exposure, which records
// that a subject was served a flag's variant. Applications send them to the
// server in batches; an [EventLog] keeps them until they are folded into
// [Stats].

// ExposureEvent is the name of exposure events. Other names starting with
// "$" are reserved.
const ExposureEvent = "$exposure"

// MaxEventNameLen bounds an event name, in bytes.
const MaxEventNameLen = 200

// ErrUnavailable reports that the event log cannot be reached; the events
// may or may not have been stored.
var ErrUnavailable = errors.New("experiments: event log unavailable")

// Event is one tracking event or exposure.
type Event struct {
	// Name is the event's name ("checkout"), or [ExposureEvent].
	Name string
	// TargetingKey identifies the subject (the evaluation context's
	// targeting key). Events without one are kept but cannot be attributed
	// to an experiment arm.
	TargetingKey string
	// Value is the event's numeric value (revenue, latency …); nil when
	// the caller gave none.
	Value *float64
	// Details are the event's other attributes.
	Details map[string]any
	// Context is the evaluation context's attributes at the time.
	Context map[string]any
	// Time is when the event happened.
	Time time.Time
	// FlagKey and Variant are what an exposure exposed; empty otherwise.
	FlagKey, Variant string
}

// IsExposure reports whether e is an exposure.
func (e *Event) IsExposure() bool { return e.Name == ExposureEvent }

// Validate lists what is wrong with e, nil when nothing is. Paths are
// relative to the event: "name", "targetingKey", "flagKey", "variant",
// "value" or "time".
func (e *Event) Validate() []Problem {
	var ps problems
	switch {
	case e.Name == "":
		ps.add("name", "is required")
	case len(e.Name) > MaxEventNameLen:
		ps.add("name", "is longer than %d bytes", MaxEventNameLen)
	case !utf8.ValidString(e.Name):
		ps.add("name", "is not valid UTF-8")
	case strings.HasPrefix(e.Name, "$") && e.Name != ExposureEvent:
		ps.add("name", "names starting with \"$\" are reserved (the only one in use is %q)", ExposureEvent)
	}
	if e.IsExposure() {
		if e.TargetingKey == "" {
			ps.add("targetingKey", "is required for an exposure")
		}
		if e.FlagKey == "" {
			ps.add("flagKey", "is required for an exposure")
		}
		if e.Variant == "" {
			ps.add("variant", "is required for an exposure")
		}
	} else {
		if e.FlagKey != "" {
			ps.add("flagKey", "is only allowed on exposures")
		}
		if e.Variant != "" {
			ps.add("variant", "is only allowed on exposures")
		}
	}
	if e.Value != nil && (math.IsNaN(*e.Value) || math.IsInf(*e.Value, 0)) {
		ps.add("value", "must be a finite number")
	}
	if e.Time.IsZero() {
		ps.add("time", "is required")
	}
	return ps
}

// InvalidEventError is returned by an [EventLog] for a batch holding an
// invalid event; nothing of the batch was stored.
type InvalidEventError struct {
	// Index is the event's position in the batch.
	Index int
	// Problems are what [Event.Validate] found.
	Problems []Problem
}

// Error names the first problem.
func (e *InvalidEventError) Error() string {
	if len(e.Problems) == 0 {
		return fmt.Sprintf("experiments: event %d is invalid", e.Index)
	}
	return fmt.Sprintf("experiments: event %d: %s", e.Index, e.Problems[0])
}

// EventLog stores tracking events per environment, in arrival order, for
// the analysis to read later.
type EventLog interface {
	// Append stores a batch of env's events: all of them or, on error,
	// none — except that after an ErrUnavailable the batch may have been
	// stored, so a retry may store it twice. Errors: *InvalidEventError
	// when an event does not pass Validate; a wrapped ErrUnavailable when
	// the log cannot be reached; an error naming env when the environment
	// name is unusable.
	Append(ctx context.Context, env string, events []Event) error
}
