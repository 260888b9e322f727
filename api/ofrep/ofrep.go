// Package ofrep holds the wire types of the OpenFeature Remote Evaluation
// Protocol (OFREP, open-feature/protocol service/openapi.yaml) as Flagpole
// speaks it: request and response bodies, error codes, and the paths and
// headers involved. It imports only the standard library so that clients,
// such as Flagpole's Go SDK, can use it without inheriting the server.
//
// The types decode every response the server sends; the server itself
// encodes its hot-path responses by hand, and its tests check that those
// bytes decode into these types.
package ofrep

import "strings"

// Paths of the OFREP endpoints.
const (
	// PathEvaluateFlag is the single-flag evaluation path; append the flag key.
	PathEvaluateFlag = "/ofrep/v1/evaluate/flags/"
	// PathEvaluateFlags is the bulk evaluation path.
	PathEvaluateFlags = "/ofrep/v1/evaluate/flags"
)

// Headers used by OFREP and by Flagpole's OFREP endpoints.
const (
	// HeaderAPIKey carries an API key (the alternative to "Authorization: Bearer <key>").
	HeaderAPIKey = "X-API-Key"
	// HeaderEnvironment selects the environment for admin and editor keys; an
	// SDK key always evaluates in its own environment. The query parameter
	// "env" does the same.
	HeaderEnvironment = "X-Flagpole-Environment"
	// QueryEnvironment is the query parameter that selects the environment.
	QueryEnvironment = "env"
	// DefaultEnvironment is used when an admin or editor key names none.
	DefaultEnvironment = "default"
)

// ErrorCode is an OpenFeature error code as OFREP sends it.
type ErrorCode string

// Error codes. A single evaluation answers 404 with [FlagNotFound] and 400
// with the others; bulk evaluations list per-flag failures in the 200 body.
const (
	FlagNotFound        ErrorCode = "FLAG_NOT_FOUND"
	ParseError          ErrorCode = "PARSE_ERROR"
	TargetingKeyMissing ErrorCode = "TARGETING_KEY_MISSING"
	InvalidContext      ErrorCode = "INVALID_CONTEXT"
	TypeMismatch        ErrorCode = "TYPE_MISMATCH"
	General             ErrorCode = "GENERAL"
)

// Reasons a successful evaluation reports.
const (
	ReasonStatic         = "STATIC"
	ReasonDefault        = "DEFAULT"
	ReasonTargetingMatch = "TARGETING_MATCH"
	ReasonSplit          = "SPLIT"
	ReasonDisabled       = "DISABLED"
	ReasonUnknown        = "UNKNOWN"
	ReasonError          = "ERROR"
)

// EvaluationRequest is the body of both evaluation endpoints. A missing body
// or a missing context is an empty context. The context is flat, with the
// targeting key under "targetingKey".
type EvaluationRequest struct {
	Context map[string]any `json:"context,omitempty"`
}

// Evaluation is one flag's result: a success, or a failure when ErrorCode is
// set. It is the 200 body of a single evaluation, the 400/404 body of a
// failed one, and an item of [BulkResponse.Flags].
//
// Value and Variant are absent (nil and "") when the caller's code default
// applies: a flag without a default variant that no rule matched (reason
// DEFAULT) or a disabled flag (reason DISABLED). Metadata holds only
// booleans, strings and numbers.
type Evaluation struct {
	Key          string         `json:"key"`
	Value        any            `json:"value,omitempty"`
	Reason       string         `json:"reason,omitempty"`
	Variant      string         `json:"variant,omitempty"`
	ErrorCode    ErrorCode      `json:"errorCode,omitempty"`
	ErrorDetails string         `json:"errorDetails,omitempty"`
	Metadata     map[string]any `json:"metadata,omitempty"`
}

// Failed reports whether e is a failure.
func (e Evaluation) Failed() bool { return e.ErrorCode != "" }

// BulkResponse is the 200 body of a bulk evaluation: every flag of the
// environment, sorted by key, plus the flag set's metadata. The response
// carries a strong ETag; sending it back in If-None-Match yields 304 while
// the result is unchanged.
type BulkResponse struct {
	Flags        []Evaluation   `json:"flags"`
	Metadata     map[string]any `json:"metadata,omitempty"`
	EventStreams []EventStream  `json:"eventStreams,omitempty"`
}

// EventStream advertises a connection that announces changes, so that a
// client re-fetches the bulk evaluation instead of polling (OFREP ADR
// 0008). It gives either an absolute URL or an Endpoint.
type EventStream struct {
	Type               string               `json:"type"` // "sse"
	URL                string               `json:"url,omitempty"`
	Endpoint           *EventStreamEndpoint `json:"endpoint,omitempty"`
	InactivityDelaySec int                  `json:"inactivityDelaySec,omitempty"`
}

// EventStreamEndpoint locates an event stream: RequestURI (path and query)
// on Origin ("https://host:port"), or on the OFREP server's own origin when
// Origin is empty. Flagpole advertises its change stream this way, since a
// server does not know the origin its clients reach it by.
type EventStreamEndpoint struct {
	Origin     string `json:"origin,omitempty"`
	RequestURI string `json:"requestUri"`
}

// BulkFailure is the 400 body of a bulk evaluation whose request was unusable.
type BulkFailure struct {
	ErrorCode    ErrorCode `json:"errorCode"`
	ErrorDetails string    `json:"errorDetails,omitempty"`
}

// GeneralError is the body of a 5xx or 429 response.
type GeneralError struct {
	ErrorDetails string `json:"errorDetails,omitempty"`
}

// ParseETags splits an If-None-Match (or If-Match) header value into its
// entity tags, each with its quotes and any W/ prefix, and "*" as is.
// Commas inside quotes belong to the tag; malformed parts are skipped.
func ParseETags(header string) []string {
	var out []string
	for rest := header; ; {
		var tag string
		var ok bool
		tag, rest, ok = nextETag(rest)
		if !ok {
			return out
		}
		out = append(out, tag)
	}
}

// nextETag returns the first entity tag in s and what follows it.
func nextETag(s string) (tag, rest string, ok bool) {
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return "", "", false
		}
		start := s
		weak := strings.HasPrefix(s, "W/")
		if weak {
			s = s[2:]
		}
		switch {
		case s[0] == '"':
			if end := strings.IndexByte(s[1:], '"'); end >= 0 {
				n := len(start) - len(s) + end + 2
				return start[:n], start[n:], true
			}
			return "", "", false // unterminated
		case s[0] == '*' && !weak:
			return "*", s[1:], true
		}
		// Not a tag: skip to the next comma.
		i := strings.IndexByte(s, ',')
		if i < 0 {
			return "", "", false
		}
		s = s[i+1:]
	}
}

// MatchesETag reports whether an If-None-Match header value matches etag
// using the weak comparison of RFC 9110: "*" matches anything, and W/
// prefixes are ignored on both sides.
func MatchesETag(ifNoneMatch, etag string) bool {
	want := strings.TrimPrefix(etag, "W/")
	for rest := ifNoneMatch; ; {
		var tag string
		var ok bool
		tag, rest, ok = nextETag(rest)
		if !ok {
			return false
		}
		if tag == "*" || strings.TrimPrefix(tag, "W/") == want {
			return true
		}
	}
}
