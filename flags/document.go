package flags

import "encoding/json"

// State is a flag's state: [Enabled] or [Disabled].
type State string

// Flag states.
const (
	Enabled  State = "ENABLED"
	Disabled State = "DISABLED"
)

// Document is a flag set as written in flagd's flag definition format. It is
// the unit that is stored, imported and exported. Marshalling a Document with
// encoding/json yields canonical JSON in the map form (keys sorted).
type Document struct {
	Schema     string                     `json:"$schema,omitempty"`
	Flags      map[string]*Flag           `json:"flags"`
	Evaluators map[string]json.RawMessage `json:"$evaluators,omitempty"`
	Metadata   map[string]any             `json:"metadata,omitempty"`
}

// Flag is one flag's definition.
type Flag struct {
	// Key is set only in the array form of "flags"; in the map form the map key is the flag key.
	Key            string          `json:"key,omitempty"`
	State          State           `json:"state"`
	Variants       map[string]any  `json:"variants"`
	DefaultVariant *string         `json:"defaultVariant,omitempty"`
	Targeting      json.RawMessage `json:"targeting,omitempty"`
	Metadata       map[string]any  `json:"metadata,omitempty"`
}

// Problem is one thing wrong with a flag set: Path is a dotted JSON path such as
// "flags.new-checkout.defaultVariant" and Message says what is wrong in plain words.
type Problem struct {
	Path    string `json:"field"`
	Message string `json:"problem"`
}

func (p Problem) String() string { return p.Path + ": " + p.Message }

// ValidationError lists every problem found in a flag set at once.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	switch len(e.Problems) {
	case 0:
		return "invalid flag set"
	case 1:
		return "invalid flag set: " + e.Problems[0].String()
	}
	s := "invalid flag set: " + e.Problems[0].String()
	for _, p := range e.Problems[1:] {
		s += "; " + p.String()
	}
	return s
}
