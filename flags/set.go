package flags

import "errors"

// CONTRACT STUB: the signatures in this file are the engine's public API that
// other packages code against. The flag-engine work replaces the bodies.

// Reason says why a flag resolved the way it did (OpenFeature resolution reasons).
type Reason string

// Resolution reasons.
const (
	ReasonStatic         Reason = "STATIC"
	ReasonDefault        Reason = "DEFAULT"
	ReasonTargetingMatch Reason = "TARGETING_MATCH"
	ReasonDisabled       Reason = "DISABLED"
	ReasonError          Reason = "ERROR"
)

// ErrorCode is an OpenFeature error code, set when Reason is [ReasonError].
type ErrorCode string

// OpenFeature error codes.
const (
	ErrorNone                ErrorCode = ""
	ErrorFlagNotFound        ErrorCode = "FLAG_NOT_FOUND"
	ErrorParse               ErrorCode = "PARSE_ERROR"
	ErrorTypeMismatch        ErrorCode = "TYPE_MISMATCH"
	ErrorTargetingKeyMissing ErrorCode = "TARGETING_KEY_MISSING"
	ErrorInvalidContext      ErrorCode = "INVALID_CONTEXT"
	ErrorGeneral             ErrorCode = "GENERAL"
)

// ValueType is the type shared by all of a flag's variant values.
type ValueType string

// Variant value types.
const (
	TypeBoolean ValueType = "boolean"
	TypeString  ValueType = "string"
	TypeNumber  ValueType = "number"
	TypeObject  ValueType = "object"
)

// Resolution is the outcome of evaluating one flag.
//
// Value is nil when the caller's code default applies (Reason DEFAULT with no
// Variant, DISABLED, or ERROR). Metadata is the flag's metadata merged over the
// flag set's metadata; it is shared and must not be modified.
type Resolution struct {
	Key          string
	Value        any
	Variant      string
	Reason       Reason
	ErrorCode    ErrorCode
	ErrorMessage string
	Metadata     map[string]any
}

// FlagInfo describes a compiled flag, for servers that cache or list flags.
type FlagInfo struct {
	Key            string
	State          State
	Type           ValueType
	Static         bool // no targeting: the result does not depend on the context
	Variants       []string
	DefaultVariant string // "" when the code default applies
	Metadata       map[string]any
}

// Set is a compiled, immutable flag set, safe for concurrent use.
type Set struct{}

var errStub = errors.New("flags: not implemented")

// Parse reads a flag set in flagd's format from JSON or YAML. Structural
// problems are reported as a *ValidationError.
func Parse(data []byte) (*Document, error) { return nil, errStub }

// Compile validates doc and compiles its targeting. Every problem is reported
// at once in a *ValidationError; doc is not retained or modified.
func Compile(doc *Document) (*Set, error) { return nil, errStub }

// Load is Parse followed by Compile.
func Load(data []byte) (*Set, error) { return nil, errStub }

// Document returns a deep copy of the set's source document.
func (s *Set) Document() *Document { return nil }

// Keys returns the flag keys, sorted. The slice is shared: do not modify.
func (s *Set) Keys() []string { return nil }

// Hash is a hex content hash of the canonical document.
func (s *Set) Hash() string { return "" }

// Metadata is the flag set's metadata (shared: do not modify).
func (s *Set) Metadata() map[string]any { return nil }

// Info describes one flag; ok is false for an unknown key.
func (s *Set) Info(key string) (info FlagInfo, ok bool) { return FlagInfo{}, false }

// Evaluate resolves key for ctx. ctx is the flattened evaluation context with
// "targetingKey" as a top-level key; it is read, never modified or retained.
func (s *Set) Evaluate(key string, ctx map[string]any) Resolution { return Resolution{} }

// Boolean resolves a boolean flag, returning def with the resolution when the
// code default applies or on any error (TYPE_MISMATCH for a non-boolean flag).
func (s *Set) Boolean(key string, def bool, ctx map[string]any) (bool, Resolution) {
	return def, Resolution{}
}

// String resolves a string flag (see [Set.Boolean] for the contract).
func (s *Set) String(key string, def string, ctx map[string]any) (string, Resolution) {
	return def, Resolution{}
}

// Int resolves an integer flag; a float value is accepted only when lossless.
func (s *Set) Int(key string, def int64, ctx map[string]any) (int64, Resolution) {
	return def, Resolution{}
}

// Float resolves a number flag (see [Set.Boolean] for the contract).
func (s *Set) Float(key string, def float64, ctx map[string]any) (float64, Resolution) {
	return def, Resolution{}
}

// Object resolves an object flag (see [Set.Boolean] for the contract).
func (s *Set) Object(key string, def any, ctx map[string]any) (any, Resolution) {
	return def, Resolution{}
}
