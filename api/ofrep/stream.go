package ofrep

import (
	"encoding/json"
	"net/url"
	"time"
)

// Change streams: GET /api/v1/environments/{env}/stream is a Server-Sent
// Events stream of an environment's flag set (docs/streams.md describes the
// protocol). These are its wire types, shared by the server and the Go SDK.

// StreamPath is the change-stream path of environment env (escaped).
func StreamPath(env string) string {
	return "/api/v1/environments/" + url.PathEscape(env) + "/stream"
}

// EventsPath is the tracking-events path of environment env (escaped).
func EventsPath(env string) string {
	return "/api/v1/environments/" + url.PathEscape(env) + "/events"
}

// Event types of a change stream (the SSE "event:" field). Every event
// carries "id: <version>".
const (
	// StreamSnapshot carries the whole flag set; it is sent first on a
	// new connection, and on a reconnection whose Last-Event-ID is not the
	// current version.
	StreamSnapshot = "snapshot"
	// StreamChange carries the whole new flag set and the keys of the
	// flags whose definition changed.
	StreamChange = "change"
	// StreamResume is sent instead of a snapshot when the client's
	// Last-Event-ID is the current version: the client is up to date. Its
	// data has no "flags".
	StreamResume = "resume"
	// StreamRefetch is OFREP's notification type (open-feature/protocol ADR
	// 0008). It is sent as an unnamed event (the SSE default type
	// "message") after every change, so that browser OFREP providers
	// re-fetch their bulk evaluation.
	StreamRefetch = "refetchEvaluation"
)

// HeaderLastEventID is the SSE resume header: the version the client holds.
const HeaderLastEventID = "Last-Event-ID"

// StreamMessage is the data of a snapshot, change or resume event.
type StreamMessage struct {
	Environment string `json:"environment"`
	Version     int64  `json:"version"`
	ETag        string `json:"etag"`
	// Changed lists the keys of the flags added, removed or redefined by
	// a change event, sorted; absent in snapshots and resumes.
	Changed []string `json:"changed,omitempty"`
	// Flags is the flag set in flagd's format; absent in resume events.
	Flags json.RawMessage `json:"flags,omitempty"`
}

// RefetchMessage is the data of an OFREP refetchEvaluation event.
type RefetchMessage struct {
	Type string `json:"type"`
	ETag string `json:"etag,omitempty"`
}

// TrackingBatch is the body of POST /api/v1/environments/{env}/events.
type TrackingBatch struct {
	Events []TrackingEvent `json:"events"`
}

// ExposureEvent is the name of the tracking events that record that a
// subject saw a flag's variant; their Details hold "flagKey" and "variant".
const ExposureEvent = "$exposure"

// TrackingEvent is one tracked event: an OpenFeature Track call or an
// exposure. Value is absent when the call gave none (or zero).
type TrackingEvent struct {
	Name         string         `json:"name"`
	TargetingKey string         `json:"targetingKey"`
	Context      map[string]any `json:"context,omitempty"`
	Value        *float64       `json:"value,omitempty"`
	Details      map[string]any `json:"details,omitempty"`
	Time         time.Time      `json:"time"`
}
