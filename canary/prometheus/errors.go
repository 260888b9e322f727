package prometheus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"

	"github.com/flagpole/flagpole/canary"
)

// Reason says why a query failed. It is the "reason" label of the error
// metrics and the first words of the error message.
type Reason string

// The reasons a query can fail.
const (
	// ReasonUnreachable: no HTTP answer (connection refused or reset, DNS,
	// TLS). Retried, except for certificate errors.
	ReasonUnreachable Reason = "unreachable"
	// ReasonTimeout: no answer within Config.Timeout, or Prometheus timed the
	// query out (HTTP 503, errorType "timeout"). Retried; when the caller's
	// context expired it is final.
	ReasonTimeout Reason = "timeout"
	// ReasonCanceled: the caller's context was canceled. Never retried.
	ReasonCanceled Reason = "canceled"
	// ReasonBadQuery: Prometheus rejected the query (HTTP 400 or 422: parse
	// error, bad parameter, execution error), the query returned a type the
	// caller cannot use, or the arguments were invalid. Never retried.
	ReasonBadQuery Reason = "bad_query"
	// ReasonUnavailable: Prometheus answered 5xx (not ready, overloaded,
	// internal error). Retried.
	ReasonUnavailable Reason = "unavailable"
	// ReasonRateLimited: HTTP 429 (usually a proxy in front of Prometheus).
	// Retried, honouring Retry-After up to Config.MaxBackoff.
	ReasonRateLimited Reason = "rate_limited"
	// ReasonUnauthorized: HTTP 401 or 403. Never retried.
	ReasonUnauthorized Reason = "unauthorized"
	// ReasonBadResponse: an answer that is not a Prometheus API answer
	// (unexpected status such as 404, malformed body). Never retried.
	ReasonBadResponse Reason = "bad_response"
)

func (r Reason) describe() string {
	switch r {
	case ReasonUnreachable:
		return "Prometheus unreachable"
	case ReasonTimeout:
		return "Prometheus query timed out"
	case ReasonCanceled:
		return "Prometheus query canceled"
	case ReasonBadQuery:
		return "bad Prometheus query"
	case ReasonUnavailable:
		return "Prometheus unavailable"
	case ReasonRateLimited:
		return "Prometheus rate-limited the query"
	case ReasonUnauthorized:
		return "Prometheus refused the credentials"
	default:
		return "unexpected Prometheus response"
	}
}

// QueryError is the error every [Source] query returns. It wraps
// canary.ErrSource (errors.Is(err, canary.ErrSource) holds) and the
// underlying cause (for example context.DeadlineExceeded).
type QueryError struct {
	// Reason classifies the failure.
	Reason Reason
	// Query is the PromQL text that failed.
	Query string
	// Status is the HTTP status of the last answer, 0 when there was none.
	Status int
	// Attempts is how many requests were sent (0: rejected before sending).
	Attempts int
	// Detail is the explanation from Prometheus or from the transport.
	Detail string
	// Err is the underlying cause, if any.
	Err error

	retry bool
}

// maxQueryInMessage bounds how much of a long query an error message repeats.
const maxQueryInMessage = 200

// Error reads like "bad Prometheus query: 1:5: parse error: ... (query "sum(", 1 attempt)".
func (e *QueryError) Error() string {
	q := e.Query
	if len(q) > maxQueryInMessage {
		q = q[:maxQueryInMessage] + "…"
	}
	var b strings.Builder
	b.WriteString(e.Reason.describe())
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	fmt.Fprintf(&b, " (query %q", q)
	switch e.Attempts {
	case 0:
		b.WriteString(", not sent")
	case 1:
		b.WriteString(", 1 attempt")
	default:
		fmt.Fprintf(&b, ", %d attempts", e.Attempts)
	}
	b.WriteString(")")
	return b.String()
}

// Unwrap returns canary.ErrSource and the cause.
func (e *QueryError) Unwrap() []error {
	if e.Err == nil {
		return []error{canary.ErrSource}
	}
	return []error{canary.ErrSource, e.Err}
}

// exchange records what the transport saw on one attempt; the v1 client does
// not expose the HTTP status for most errors.
type exchange struct {
	status     int
	retryAfter time.Duration
}

type exchangeKey struct{}

// parseRetryAfter reads a Retry-After header (seconds or an HTTP date).
func parseRetryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(h)); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// apiErrorBody is the JSON error envelope Prometheus sends.
type apiErrorBody struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
}

// maxDetail bounds how much of a non-API body an error message repeats.
const maxDetail = 300

// classify turns the outcome of one attempt into a QueryError. parent is the
// caller's context (its end is final); timeout is the per-attempt limit.
func classify(parent context.Context, err error, ex *exchange, timeout time.Duration) *QueryError {
	qe := &QueryError{Status: ex.status, Err: err}
	if cerr := parent.Err(); cerr != nil {
		qe.Reason = ReasonCanceled
		if errors.Is(cerr, context.DeadlineExceeded) {
			qe.Reason = ReasonTimeout
		}
		qe.Detail = "the caller's context ended: " + cerr.Error()
		if !errors.Is(err, cerr) {
			qe.Err = fmt.Errorf("%w: %w", cerr, err)
		}
		return qe
	}
	var apiErr *v1.Error
	switch {
	case errors.As(err, &apiErr):
		classifyAPI(qe, apiErr)
	case errors.Is(err, context.DeadlineExceeded):
		qe.Reason, qe.retry = ReasonTimeout, true
		qe.Detail = fmt.Sprintf("no answer within %s", timeout)
	default:
		qe.Reason, qe.retry = ReasonUnreachable, true
		qe.Detail = err.Error()
		var certErr *tls.CertificateVerificationError
		var unknownAuth x509.UnknownAuthorityError
		var hostErr x509.HostnameError
		if errors.As(err, &certErr) || errors.As(err, &unknownAuth) || errors.As(err, &hostErr) {
			qe.retry = false
		}
	}
	return qe
}

func classifyAPI(qe *QueryError, e *v1.Error) {
	typ := string(e.Type)
	// For statuses other than 400/422 the client keeps the raw body in
	// Detail; Prometheus still sends its JSON envelope there (503 timeout).
	var body apiErrorBody
	switch {
	case e.Detail != "" && json.Unmarshal([]byte(e.Detail), &body) == nil && body.Status == "error":
		typ = body.ErrorType
		qe.Detail = body.ErrorType + ": " + body.Error
	case e.Detail != "":
		d := strings.TrimSpace(e.Detail)
		if len(d) > maxDetail {
			d = d[:maxDetail] + "…"
		}
		qe.Detail = fmt.Sprintf("HTTP %d: %s", qe.Status, d)
	default:
		qe.Detail = typ + ": " + e.Msg
	}
	switch st := qe.Status; {
	case st == http.StatusBadRequest || st == http.StatusUnprocessableEntity:
		qe.Reason = ReasonBadQuery
	case st == http.StatusUnauthorized || st == http.StatusForbidden:
		qe.Reason = ReasonUnauthorized
	case st == http.StatusTooManyRequests:
		qe.Reason, qe.retry = ReasonRateLimited, true
	case st >= 500 && typ == string(v1.ErrTimeout):
		qe.Reason, qe.retry = ReasonTimeout, true
	case st >= 500:
		qe.Reason, qe.retry = ReasonUnavailable, true
	case st >= 200 && st < 300:
		// A 2xx with an error envelope, or a body that does not decode.
		switch v1.ErrorType(typ) {
		case v1.ErrBadResponse:
			qe.Reason = ReasonBadResponse
			// client_golang decodes every result type but strings.
			if strings.Contains(e.Msg, `value type "string"`) {
				qe.Reason, qe.Detail = ReasonBadQuery, "the query returns a string, not a number"
			}
		case v1.ErrBadData, v1.ErrExec:
			qe.Reason = ReasonBadQuery
		case v1.ErrTimeout:
			qe.Reason, qe.retry = ReasonTimeout, true
		default:
			qe.Reason = ReasonBadResponse
		}
	case st == http.StatusNotFound:
		qe.Reason = ReasonBadResponse
		qe.Detail = "is Config.URL the base URL of a Prometheus server? " + qe.Detail
	default:
		qe.Reason = ReasonBadResponse
	}
}
