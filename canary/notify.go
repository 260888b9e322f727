package canary

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Notifications and their outbox.
//
// A Notification says that something happened (an analysis completed, a
// rollout moved a step or failed). Whoever delivers notifications (webhooks
// in deploy) first enqueues one in an Outbox together with the targets it must
// reach; the outbox keeps one Delivery per target and a log of every
// attempt, so that nothing is lost when a process dies between the event and
// its delivery. Workers Claim due deliveries under a visibility lease,
// attempt them, and Record the outcome: delivered, retry at a later time, or
// dead (given up, kept in the dead-letter list until redriven). A claim whose
// lease has expired becomes due again, and the token it carries fences a
// late Record by the worker that lost it. Delivery is at least once: a
// receiver may see a notification twice (after a worker died mid-attempt)
// and should deduplicate by delivery ID.

// EventType names what a notification reports: lower-case words separated by
// dots, such as "analysis.completed".
type EventType string

// The events Flagpole emits.
const (
	// EventAnalysisCompleted: an analysis run reached a terminal phase.
	EventAnalysisCompleted EventType = "analysis.completed"
	// EventRolloutStep: a rollout (Flagpole's own, or an orchestrator's
	// canary) moved on or reported progress.
	EventRolloutStep EventType = "rollout.step"
	// EventRolloutFailed: a rollout failed and was rolled back.
	EventRolloutFailed EventType = "rollout.failed"
	// EventRolloutSucceeded: a rollout completed (promoted).
	EventRolloutSucceeded EventType = "rollout.succeeded"
	// EventTest: a test notification sent on request.
	EventTest EventType = "test"
)

// Notification is one event to deliver. Payload is a JSON object whose shape
// depends on Event.
type Notification struct {
	// ID identifies the notification; enqueuing an ID twice is refused
	// (ErrExists), which makes enqueuing idempotent for callers that derive
	// the ID from the event (e.g. "analysis.completed.RUN").
	ID      string          `json:"id"`
	Event   EventType       `json:"event"`
	Subject string          `json:"subject"`
	Payload json.RawMessage `json:"payload"`
	// Time is when the event happened; its deliveries are first due then.
	Time time.Time `json:"time"`
}

// DeliveryState is where a delivery is in its life.
type DeliveryState string

// The delivery states.
const (
	// DeliveryPending: not yet delivered; due at NextAt (or claimed by a
	// worker until its lease ends).
	DeliveryPending DeliveryState = "pending"
	// DeliveryDelivered: the target acknowledged it.
	DeliveryDelivered DeliveryState = "delivered"
	// DeliveryDead: given up; kept in the dead-letter list until redriven.
	DeliveryDead DeliveryState = "dead"
)

// Delivery is one notification's journey to one target.
type Delivery struct {
	// ID is NotificationID + "/" + Target.
	ID             string        `json:"id"`
	NotificationID string        `json:"notificationId"`
	Target         string        `json:"target"`
	State          DeliveryState `json:"state"`
	// Attempts counts the attempts recorded since the delivery was enqueued
	// or last redriven.
	Attempts int `json:"attempts"`
	// NextAt is when a pending delivery is next due (zero otherwise).
	NextAt    time.Time `json:"nextAt,omitzero"`
	UpdatedAt time.Time `json:"updatedAt"`
	// LastStatus and LastError describe the latest attempt.
	LastStatus int    `json:"lastStatus,omitempty"`
	LastError  string `json:"lastError,omitempty"`
}

// AttemptOutcome is what an attempt led to.
type AttemptOutcome string

// The attempt outcomes.
const (
	OutcomeDelivered AttemptOutcome = "delivered"
	OutcomeRetry     AttemptOutcome = "retry"
	OutcomeDead      AttemptOutcome = "dead"
)

// Attempt is one try at a delivery, as logged.
type Attempt struct {
	Target string `json:"target"`
	// Number counts from 1 since the delivery was enqueued or redriven.
	Number int       `json:"number"`
	At     time.Time `json:"at"`
	// Duration is how long the attempt took.
	Duration Duration `json:"duration"`
	// Status is the receiver's HTTP status, 0 when there was no answer.
	Status int `json:"status,omitempty"`
	// Error says what went wrong, "" when delivered.
	Error   string         `json:"error,omitempty"`
	Outcome AttemptOutcome `json:"outcome"`
	// RetryAt is when an OutcomeRetry attempt is tried again.
	RetryAt time.Time `json:"retryAt,omitzero"`
}

// Claim is a due delivery leased to one worker until LeaseUntil.
type Claim struct {
	Delivery     Delivery     `json:"delivery"`
	Notification Notification `json:"notification"`
	Owner        string       `json:"owner"`
	// Token fences Record: it rises with every claim of the delivery.
	Token      int64     `json:"token"`
	LeaseUntil time.Time `json:"leaseUntil"`
}

// NotificationLog is a notification with its deliveries and, when read
// singly, every attempt in the order made.
type NotificationLog struct {
	Notification Notification `json:"notification"`
	Deliveries   []Delivery   `json:"deliveries"`
	Attempts     []Attempt    `json:"attempts,omitempty"`
}

// NotificationQuery pages Outbox.Notifications.
type NotificationQuery struct {
	// Limit is the page size: 0 means 50; at most 500.
	Limit int
	// Cursor is NotificationPage.Next of the previous page.
	Cursor string
}

// NotificationPage is one page of notifications, newest first; Next is the
// cursor of the following page, "" on the last.
type NotificationPage struct {
	Notifications []NotificationLog `json:"notifications"`
	Next          string            `json:"next,omitempty"`
}

// OutboxStats are the outbox's queue depths.
type OutboxStats struct {
	// Due counts pending deliveries due now (including claims whose lease
	// has lapsed); Pending counts every pending delivery; Dead the
	// dead-letter list.
	Due     int `json:"due"`
	Pending int `json:"pending"`
	Dead    int `json:"dead"`
}

// Outbox limits.
const (
	DefaultNotificationPage = 50
	MaxNotificationPage     = 500
	// MaxPayloadBytes bounds a notification's payload.
	MaxPayloadBytes = 256 << 10
	// MaxTargets bounds the targets of one notification.
	MaxTargets = 64
	// MaxClaim bounds one Claim.
	MaxClaim = 1000
	// MaxSubjectBytes bounds a notification's subject.
	MaxSubjectBytes = 512
)

// Outbox is the persistent queue of notification deliveries. Implementations
// are safe for concurrent use by many processes; every write is atomic. The
// conformance suite in canary/outboxtest defines the behaviour precisely.
// Times are the callers' clocks. Every method may also return an error
// wrapping ErrUnavailable when the backing service cannot be reached, or a
// context error.
type Outbox interface {
	// Enqueue stores n with one pending delivery per target, each due at
	// n.Time. Errors: ErrExists (n.ID is taken; nothing changed), a
	// *ValidationError from CheckNotification or CheckTargets.
	Enqueue(ctx context.Context, n Notification, targets []string) error
	// Claim leases at most limit due deliveries (pending, NextAt at or
	// before now, or claimed under a lease that ended at or before now) to
	// owner until now+lease, earliest due first, and returns them with
	// their notification. Errors: a *ValidationError from CheckClaim.
	Claim(ctx context.Context, owner string, now time.Time, lease time.Duration, limit int) ([]Claim, error)
	// Record logs attempt a (its Number is set from the claim) and moves
	// the claimed delivery on: OutcomeDelivered delivers it, OutcomeRetry
	// makes it due again at a.RetryAt, OutcomeDead moves it to the
	// dead-letter list. It returns the delivery as stored. Errors:
	// ErrNotFound, ErrLeaseLost (the delivery was claimed again since, or is
	// no longer pending: nothing was changed or logged), a
	// *ValidationError from CheckAttempt.
	Record(ctx context.Context, c Claim, a Attempt) (Delivery, error)
	// Notification returns a notification with its deliveries and every
	// attempt. Errors: ErrNotFound.
	Notification(ctx context.Context, id string) (NotificationLog, error)
	// Notifications lists notifications newest first (by Time, then ID),
	// with their deliveries but without attempts. Errors: a
	// *ValidationError for a bad limit or cursor.
	Notifications(ctx context.Context, q NotificationQuery) (NotificationPage, error)
	// Dead lists at most limit dead deliveries, the most recently buried
	// first (0 means 50, at most 500). Errors: a *ValidationError for a bad
	// limit.
	Dead(ctx context.Context, limit int) ([]Delivery, error)
	// Redrive makes a dead delivery pending again, due at now, with its
	// attempt count reset (its log is kept). Errors: ErrNotFound,
	// ErrConflict (it is not dead).
	Redrive(ctx context.Context, deliveryID string, now time.Time) (Delivery, error)
	// Stats returns the queue depths at now.
	Stats(ctx context.Context, now time.Time) (OutboxStats, error)
	// Prune removes at most limit notifications whose Time is before
	// before and whose deliveries have all ended (delivered or dead), with
	// their logs, and returns how many it removed. Errors: a
	// *ValidationError for a limit below 1.
	Prune(ctx context.Context, before time.Time, limit int) (int, error)
}

var (
	notificationIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	eventTypeRE      = regexp.MustCompile(`^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$`)
	targetRE         = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
)

// NewNotificationID returns a fresh random notification ID: the event,
// a dash and 16 random hexadecimal digits.
func NewNotificationID(e EventType) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	prefix := string(e)
	if !eventTypeRE.MatchString(prefix) || len(prefix) > 100 {
		prefix = "n"
	}
	return prefix + "-" + hex.EncodeToString(b[:])
}

// CheckNotification checks a notification before it is stored: an ID like a
// run ID, an event type of dot-separated lower-case words (at most 100
// bytes), a subject of at most MaxSubjectBytes, a payload that is a JSON
// object of at most MaxPayloadBytes, and a time. It returns a
// *ValidationError naming every bad field, or nil.
func CheckNotification(n Notification) error {
	var p problems
	if !notificationIDRE.MatchString(n.ID) {
		p.add("id", "%q is not a notification ID (letters, digits, '.', '_' and '-', at most 128)", n.ID)
	}
	if len(n.Event) > 100 || !eventTypeRE.MatchString(string(n.Event)) {
		p.add("event", "%q is not an event type (dot-separated lower-case words, such as analysis.completed)", n.Event)
	}
	if len(n.Subject) > MaxSubjectBytes {
		p.add("subject", "is %d bytes; the limit is %d", len(n.Subject), MaxSubjectBytes)
	}
	switch {
	case len(n.Payload) > MaxPayloadBytes:
		p.add("payload", "is %d bytes; the limit is %d", len(n.Payload), MaxPayloadBytes)
	case len(n.Payload) == 0:
		p.add("payload", "required (a JSON object)")
	case !json.Valid(n.Payload) || !strings.HasPrefix(strings.TrimSpace(string(n.Payload)), "{"):
		p.add("payload", "must be a JSON object")
	}
	if n.Time.IsZero() {
		p.add("time", "required")
	}
	return p.err()
}

// CheckTarget reports whether name can name a delivery target (a webhook
// subscription): lower-case letters, digits, '.', '_' and '-', starting with
// a letter or digit, at most 63 characters. It returns a *ValidationError
// naming field, or nil.
func CheckTarget(field, name string) error {
	if !targetRE.MatchString(name) {
		return fieldError(field, "%q is not a target name (lower-case letters, digits, '.', '_' and '-', at most 63)", name)
	}
	return nil
}

// CheckTargets checks the targets of one notification: 1 to MaxTargets
// names, each valid (see CheckTarget) and none repeated.
func CheckTargets(targets []string) error {
	var p problems
	if len(targets) == 0 || len(targets) > MaxTargets {
		p.add("targets", "must list 1 to %d targets", MaxTargets)
	}
	seen := map[string]bool{}
	for i, t := range targets {
		field := "targets[" + strconv.Itoa(i) + "]"
		if err := CheckTarget(field, t); err != nil {
			p = append(p, err.(*ValidationError).Problems...)
		} else if seen[t] {
			p.add(field, "%q is listed twice", t)
		}
		seen[t] = true
	}
	return p.err()
}

// CheckClaim checks Claim's arguments before any I/O.
func CheckClaim(owner string, lease time.Duration, limit int) error {
	var p problems
	if owner == "" {
		p.add("owner", "required")
	}
	if lease <= 0 {
		p.add("lease", "must be positive")
	}
	if limit < 1 || limit > MaxClaim {
		p.add("limit", "must be between 1 and %d", MaxClaim)
	}
	return p.err()
}

// CheckAttempt checks Record's arguments before any I/O: a claim with a
// delivery ID, owner and token, and an attempt with a known outcome, a
// time, and a retry time exactly when it is to be retried.
func CheckAttempt(c Claim, a Attempt) error {
	var p problems
	if c.Delivery.ID == "" {
		p.add("claim.delivery.id", "required")
	}
	if c.Owner == "" {
		p.add("claim.owner", "required")
	}
	if c.Token < 1 {
		p.add("claim.token", "must be the token of a claim, at least 1")
	}
	switch a.Outcome {
	case OutcomeDelivered, OutcomeDead:
		if !a.RetryAt.IsZero() {
			p.add("attempt.retryAt", "only a retried attempt has a retry time")
		}
	case OutcomeRetry:
		if a.RetryAt.IsZero() {
			p.add("attempt.retryAt", "required for outcome %q", OutcomeRetry)
		}
	default:
		p.add("attempt.outcome", "%q is not delivered, retry or dead", a.Outcome)
	}
	if a.At.IsZero() {
		p.add("attempt.at", "required")
	}
	if a.Status < 0 || a.Status > 999 {
		p.add("attempt.status", "%d is not an HTTP status", a.Status)
	}
	return p.err()
}

// DeliveryID returns the ID of a notification's delivery to target.
func DeliveryID(notificationID, target string) string {
	return notificationID + "/" + target
}

// SplitDeliveryID splits a delivery ID into its notification ID and target;
// ok is false when id is not shaped like one.
func SplitDeliveryID(id string) (notificationID, target string, ok bool) {
	i := strings.LastIndexByte(id, '/')
	if i <= 0 || i == len(id)-1 {
		return "", "", false
	}
	n, t := id[:i], id[i+1:]
	if !notificationIDRE.MatchString(n) || !targetRE.MatchString(t) {
		return "", "", false
	}
	return n, t, true
}
