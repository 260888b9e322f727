// Package prometheus is the canary.MetricSource that reads metrics from a
// Prometheus server over its HTTP API (client_golang's api/prometheus/v1).
//
// Every query has a per-attempt timeout (also sent to Prometheus, so it stops
// evaluating), is retried with exponential backoff and jitter when the failure
// is transient (no connection, 5xx, 429, timeout) and never when the query is
// bad (400, 422). Every error is a *QueryError wrapping canary.ErrSource whose
// Reason says whether Prometheus was unreachable, the query was bad, or it
// timed out. Values are passed through untouched, NaN and ±Inf included: the
// judge decides what they mean.
//
// Tests run against a real prometheus binary started by the promtest
// sub-package, scraping the synthetic workload of the workload sub-package.
package prometheus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/flagpole/flagpole/canary"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultMaxAttempts = 3
	DefaultBackoff     = 200 * time.Millisecond
	DefaultMaxBackoff  = 5 * time.Second
)

// maxPoints is Prometheus's limit of points per series in a range query.
const maxPoints = 11000

// BasicAuth holds HTTP basic-auth credentials.
type BasicAuth struct {
	Username string
	Password string
}

// Config configures a Source. Only URL is required.
type Config struct {
	// URL is the base URL of the Prometheus server, e.g.
	// "http://prometheus:9090" (a path prefix such as "/prom" is kept).
	URL string
	// Timeout bounds each attempt; it is also sent to Prometheus as the
	// query's evaluation timeout. Default DefaultTimeout.
	Timeout time.Duration
	// MaxAttempts is the number of requests per query, first one included;
	// 1 disables retries. Default DefaultMaxAttempts.
	MaxAttempts int
	// Backoff is the delay before the first retry; it doubles per retry up to
	// MaxBackoff, and each delay is jittered to between half and all of it.
	// Defaults DefaultBackoff and DefaultMaxBackoff.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// BearerToken, if set, is sent as "Authorization: Bearer <token>".
	BearerToken string
	// BasicAuth, if set, is sent as HTTP basic auth. Exclusive with BearerToken.
	BasicAuth *BasicAuth
	// Transport carries the requests (TLS settings, proxies). Default: a clone
	// of http.DefaultTransport owned by the Source.
	Transport http.RoundTripper
	// Logger receives query warnings (as Warn) and retries (as Debug).
	// Default: discard.
	Logger *slog.Logger
	// Registerer, if set, receives the query metrics:
	// flagpole_prometheus_query_duration_seconds{kind},
	// flagpole_prometheus_query_errors_total{kind,reason} and
	// flagpole_prometheus_query_retries_total{kind,reason}. Several Sources
	// may share one Registerer; they then share the metrics.
	Registerer prom.Registerer
}

// Source is a canary.MetricSource backed by Prometheus. It is safe for
// concurrent use.
type Source struct {
	api         v1.API
	timeout     time.Duration
	maxAttempts int
	backoff     time.Duration
	maxBackoff  time.Duration
	log         *slog.Logger
	m           *metrics
	// jitter maps a nominal delay to the one actually waited.
	jitter func(time.Duration) time.Duration
}

var _ canary.MetricSource = (*Source)(nil)

// New validates cfg and returns a Source. It sends no request. The error
// names the offending Config field; it does not wrap canary.ErrSource.
func New(cfg Config) (*Source, error) {
	u, err := url.Parse(cfg.URL)
	switch {
	case cfg.URL == "":
		return nil, errors.New("prometheus: Config.URL is required")
	case err != nil:
		return nil, fmt.Errorf("prometheus: Config.URL: %w", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("prometheus: Config.URL %q: scheme must be http or https", cfg.URL)
	case u.Host == "":
		return nil, fmt.Errorf("prometheus: Config.URL %q: missing host", cfg.URL)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("prometheus: Config.URL %q: must not have a query or fragment", cfg.URL)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("prometheus: Config.Timeout %s is negative", cfg.Timeout)
	case cfg.MaxAttempts < 0:
		return nil, fmt.Errorf("prometheus: Config.MaxAttempts %d is negative", cfg.MaxAttempts)
	case cfg.Backoff < 0:
		return nil, fmt.Errorf("prometheus: Config.Backoff %s is negative", cfg.Backoff)
	case cfg.MaxBackoff < 0:
		return nil, fmt.Errorf("prometheus: Config.MaxBackoff %s is negative", cfg.MaxBackoff)
	case cfg.BearerToken != "" && cfg.BasicAuth != nil:
		return nil, errors.New("prometheus: Config.BearerToken and Config.BasicAuth are exclusive")
	case cfg.BasicAuth != nil && cfg.BasicAuth.Username == "":
		return nil, errors.New("prometheus: Config.BasicAuth.Username is required")
	}
	s := &Source{
		timeout:     orDefault(cfg.Timeout, DefaultTimeout),
		maxAttempts: cfg.MaxAttempts,
		backoff:     orDefault(cfg.Backoff, DefaultBackoff),
		maxBackoff:  orDefault(cfg.MaxBackoff, DefaultMaxBackoff),
		log:         cfg.Logger,
		jitter:      equalJitter,
	}
	if s.maxAttempts == 0 {
		s.maxAttempts = DefaultMaxAttempts
	}
	if s.maxBackoff < s.backoff {
		s.maxBackoff = s.backoff
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.m, err = newMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	rt := cfg.Transport
	if rt == nil {
		rt = http.DefaultTransport
		if t, ok := rt.(*http.Transport); ok {
			rt = t.Clone()
		}
	}
	if cfg.BearerToken != "" || cfg.BasicAuth != nil {
		rt = &authTransport{next: rt, bearer: cfg.BearerToken, basic: cfg.BasicAuth}
	}
	client, err := api.NewClient(api.Config{Address: cfg.URL, RoundTripper: rt})
	if err != nil {
		return nil, fmt.Errorf("prometheus: Config.URL: %w", err)
	}
	s.api = v1.NewAPI(recordingClient{client})
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Instant evaluates query at the instant at (the zero time means "now" on the
// Prometheus clock). A vector becomes one Element per series, with all its
// labels (__name__ included when the result keeps it); a scalar becomes one
// Element with empty Labels; elements are sorted by labels. An empty result is an
// empty slice and no error. Errors are *QueryError wrapping canary.ErrSource;
// a range vector, a string or native histograms in the result are
// ReasonBadQuery.
func (s *Source) Instant(ctx context.Context, query string, at time.Time) ([]canary.Element, error) {
	const kind = "instant"
	if query == "" {
		return nil, s.reject(kind, query, "the query is empty")
	}
	val, answered, err := s.run(ctx, kind, query, func(ctx context.Context) (model.Value, v1.Warnings, v1.Infos, error) {
		return s.api.Query(ctx, query, at, v1.WithTimeout(serverTimeout(s.timeout)))
	})
	if err != nil {
		return nil, err
	}
	els, detail := elements(val)
	if detail != "" {
		return nil, s.fail(kind, answered.unusable(query, detail))
	}
	return els, nil
}

// Range evaluates query over [start, end] every step. Each series of the
// resulting matrix becomes a Series, sorted by labels, points in time order.
// An empty result is an empty slice and no error. Errors are *QueryError
// wrapping canary.ErrSource; a non-positive step, end before start or more
// than 11,000 points per series are ReasonBadQuery and send no request.
func (s *Source) Range(ctx context.Context, query string, start, end time.Time, step time.Duration) ([]canary.Series, error) {
	const kind = "range"
	switch {
	case query == "":
		return nil, s.reject(kind, query, "the query is empty")
	case step <= 0:
		return nil, s.reject(kind, query, fmt.Sprintf("step %s must be positive", step))
	case end.Before(start):
		return nil, s.reject(kind, query, fmt.Sprintf("end %s is before start %s", end.Format(time.RFC3339), start.Format(time.RFC3339)))
	case end.Sub(start)/step >= maxPoints:
		return nil, s.reject(kind, query, fmt.Sprintf("%s at step %s exceeds Prometheus's %d points per series; use a larger step", end.Sub(start), step, maxPoints))
	}
	r := v1.Range{Start: start, End: end, Step: step}
	val, answered, err := s.run(ctx, kind, query, func(ctx context.Context) (model.Value, v1.Warnings, v1.Infos, error) {
		return s.api.QueryRange(ctx, query, r, v1.WithTimeout(serverTimeout(s.timeout)))
	})
	if err != nil {
		return nil, err
	}
	series, detail := seriesOf(val)
	if detail != "" {
		return nil, s.fail(kind, answered.unusable(query, detail))
	}
	return series, nil
}

// reject reports a query refused without asking Prometheus.
func (s *Source) reject(kind, query, detail string) error {
	return s.fail(kind, &QueryError{Reason: ReasonBadQuery, Query: query, Detail: detail})
}

// answer describes the successful attempt of a query.
type answer struct {
	attempts int
	status   int
}

// unusable is the error for an answer whose result the caller cannot use.
func (a answer) unusable(query, detail string) *QueryError {
	return &QueryError{Reason: ReasonBadQuery, Query: query, Status: a.status, Attempts: a.attempts, Detail: detail}
}

// run sends one query with per-attempt timeouts and retries.
func (s *Source) run(ctx context.Context, kind, query string, call func(context.Context) (model.Value, v1.Warnings, v1.Infos, error)) (model.Value, answer, error) {
	start := time.Now()
	defer func() { s.m.latency.WithLabelValues(kind).Observe(time.Since(start).Seconds()) }()
	for attempt := 1; ; attempt++ {
		ex := &exchange{}
		actx, cancel := context.WithTimeout(context.WithValue(ctx, exchangeKey{}, ex), s.timeout)
		val, warnings, infos, err := call(actx)
		cancel()
		if len(warnings) > 0 {
			s.log.WarnContext(ctx, "prometheus query warnings", "query", query, "warnings", []string(warnings))
		}
		if len(infos) > 0 {
			s.log.DebugContext(ctx, "prometheus query infos", "query", query, "infos", []string(infos))
		}
		if err == nil {
			return val, answer{attempts: attempt, status: ex.status}, nil
		}
		qe := classify(ctx, err, ex, s.timeout)
		qe.Query, qe.Attempts = query, attempt
		if !qe.retry || attempt >= s.maxAttempts {
			return nil, answer{}, s.fail(kind, qe)
		}
		delay := s.delay(attempt, ex.retryAfter)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < delay {
			qe.Detail += fmt.Sprintf("; no retry: the caller's deadline comes before the next attempt in %s", delay.Round(time.Millisecond))
			return nil, answer{}, s.fail(kind, qe)
		}
		s.m.retries.WithLabelValues(kind, string(qe.Reason)).Inc()
		s.log.DebugContext(ctx, "prometheus query retry", "query", query, "attempt", attempt, "reason", string(qe.Reason), "delay", delay, "error", qe.Detail)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			final := classify(ctx, ctx.Err(), ex, s.timeout)
			final.Query, final.Attempts, final.Status = query, attempt, qe.Status
			final.Detail += "; while waiting to retry after: " + qe.Detail
			return nil, answer{}, s.fail(kind, final)
		}
	}
}

func (s *Source) fail(kind string, qe *QueryError) error {
	s.m.errors.WithLabelValues(kind, string(qe.Reason)).Inc()
	return qe
}

// delay is the wait before retry number attempt (1-based): Backoff doubled per
// retry, capped at MaxBackoff, jittered; a Retry-After from the server raises
// it, still capped at MaxBackoff.
func (s *Source) delay(attempt int, retryAfter time.Duration) time.Duration {
	d := s.backoff
	for i := 1; i < attempt && d < s.maxBackoff; i++ {
		d *= 2
	}
	d = s.jitter(min(d, s.maxBackoff))
	if retryAfter > d {
		d = min(retryAfter, s.maxBackoff)
	}
	return d
}

// equalJitter waits between half and all of d, so retries from many analyses
// spread out yet never collapse to zero.
func equalJitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// serverTimeout renders the per-attempt timeout in a form Prometheus's
// duration parser accepts (whole seconds, or whole milliseconds under one
// second): client_golang sends time.Duration.String, and "1.5s" is refused.
func serverTimeout(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Truncate(time.Second)
	}
	return max(d.Truncate(time.Millisecond), time.Millisecond)
}

// recordingClient notes each answer's status and Retry-After in the
// exchange carried by the request context.
type recordingClient struct{ api.Client }

func (c recordingClient) Do(ctx context.Context, req *http.Request) (*http.Response, []byte, error) {
	resp, body, err := c.Client.Do(ctx, req)
	if ex, ok := ctx.Value(exchangeKey{}).(*exchange); ok && resp != nil {
		ex.status = resp.StatusCode
		ex.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return resp, body, err
}

// authTransport adds credentials to every request.
type authTransport struct {
	next   http.RoundTripper
	bearer string
	basic  *BasicAuth
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	if t.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+t.bearer)
	} else {
		req.SetBasicAuth(t.basic.Username, t.basic.Password)
	}
	return t.next.RoundTrip(req)
}
