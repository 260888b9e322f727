package prometheus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flagpole/flagpole/canary"
)

// fakeProm answers with status and body (and optional headers), counting hits.
type fakeProm struct {
	hits    atomic.Int32
	handler func(w http.ResponseWriter, r *http.Request)
}

func (f *fakeProm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.hits.Add(1)
	f.handler(w, r)
}

func respond(status int, body string, headers ...string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		if strings.HasPrefix(body, "{") {
			w.Header().Set("Content-Type", "application/json")
		}
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}
}

func success(resultType, result string) string {
	return `{"status":"success","data":{"resultType":"` + resultType + `","result":` + result + `}}`
}

func apiError(errorType, msg string) string {
	return `{"status":"error","errorType":"` + errorType + `","error":"` + msg + `"}`
}

// newTestSource serves f over httptest and returns a Source with fast retries.
func newTestSource(t testing.TB, f *fakeProm, cfg Config) *Source {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	cfg.URL = srv.URL
	if cfg.Backoff == 0 {
		cfg.Backoff, cfg.MaxBackoff = time.Millisecond, 2*time.Millisecond
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// handlerTransport answers requests in memory, so synctest can fake time.
type handlerTransport struct{ h http.Handler }

func (ht handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	ht.h.ServeHTTP(rec, r)
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	return rec.Result(), nil
}

func newMemSource(t *testing.T, f *fakeProm, cfg Config) *Source {
	t.Helper()
	cfg.URL = "http://prometheus.test"
	cfg.Transport = handlerTransport{f}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.jitter = func(d time.Duration) time.Duration { return d }
	return s
}

func queryError(t *testing.T, err error) *QueryError {
	t.Helper()
	if err == nil {
		t.Fatal("got no error")
	}
	if !errors.Is(err, canary.ErrSource) {
		t.Errorf("%v does not wrap canary.ErrSource", err)
	}
	var qe *QueryError
	if !errors.As(err, &qe) {
		t.Fatalf("%T %v is not a *QueryError", err, err)
	}
	return qe
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "no url", cfg: Config{}, want: "Config.URL is required"},
		{name: "bad scheme", cfg: Config{URL: "ftp://x"}, want: "scheme must be http or https"},
		{name: "no host", cfg: Config{URL: "http://"}, want: "missing host"},
		{name: "unparsable", cfg: Config{URL: "http://[::1"}, want: "Config.URL"},
		{name: "query in url", cfg: Config{URL: "http://x/?a=1"}, want: "must not have a query"},
		{name: "negative timeout", cfg: Config{URL: "http://x", Timeout: -1}, want: "Config.Timeout"},
		{name: "negative attempts", cfg: Config{URL: "http://x", MaxAttempts: -1}, want: "Config.MaxAttempts"},
		{name: "negative backoff", cfg: Config{URL: "http://x", Backoff: -1}, want: "Config.Backoff"},
		{name: "negative max backoff", cfg: Config{URL: "http://x", MaxBackoff: -1}, want: "Config.MaxBackoff"},
		{name: "two auth modes", cfg: Config{URL: "http://x", BearerToken: "t", BasicAuth: &BasicAuth{Username: "u"}}, want: "exclusive"},
		{name: "basic auth without user", cfg: Config{URL: "http://x", BasicAuth: &BasicAuth{}}, want: "Config.BasicAuth.Username"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want an error containing %q", err, tc.want)
			}
			if errors.Is(err, canary.ErrSource) {
				t.Errorf("a configuration error wraps canary.ErrSource: %v", err)
			}
		})
	}
	t.Run("defaults", func(t *testing.T) {
		s, err := New(Config{URL: "https://prom.example:9090/prefix"})
		if err != nil {
			t.Fatal(err)
		}
		if s.timeout != DefaultTimeout || s.maxAttempts != DefaultMaxAttempts || s.backoff != DefaultBackoff || s.maxBackoff != DefaultMaxBackoff {
			t.Errorf("defaults = %v %v %v %v", s.timeout, s.maxAttempts, s.backoff, s.maxBackoff)
		}
	})
}

// sameElements compares with NaN equal to NaN.
func sameElements(a, b []canary.Element) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if fmt.Sprint(a[i].Labels) != fmt.Sprint(b[i].Labels) || !sameFloat(a[i].Value, b[i].Value) {
			return false
		}
	}
	return true
}

func sameFloat(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }

func TestInstantConverts(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []canary.Element
	}{
		{
			name: "vector sorted by labels",
			body: success("vector", `[{"metric":{"arm":"canary"},"value":[1700000000,"2.5"]},{"metric":{"arm":"baseline"},"value":[1700000000,"1"]}]`),
			want: []canary.Element{{Labels: map[string]string{"arm": "baseline"}, Value: 1}, {Labels: map[string]string{"arm": "canary"}, Value: 2.5}},
		},
		{
			name: "NaN and infinities kept",
			body: success("vector", `[{"metric":{"v":"a"},"value":[1,"NaN"]},{"metric":{"v":"b"},"value":[1,"+Inf"]},{"metric":{"v":"c"},"value":[1,"-Inf"]}]`),
			want: []canary.Element{{Labels: map[string]string{"v": "a"}, Value: math.NaN()}, {Labels: map[string]string{"v": "b"}, Value: math.Inf(1)}, {Labels: map[string]string{"v": "c"}, Value: math.Inf(-1)}},
		},
		{
			name: "metric name kept as a label",
			body: success("vector", `[{"metric":{"__name__":"up","job":"j"},"value":[1,"1"]}]`),
			want: []canary.Element{{Labels: map[string]string{"__name__": "up", "job": "j"}, Value: 1}},
		},
		{
			name: "scalar",
			body: success("scalar", `[1700000000,"42"]`),
			want: []canary.Element{{Labels: map[string]string{}, Value: 42}},
		},
		{
			name: "empty vector",
			body: success("vector", `[]`),
			want: []canary.Element{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSource(t, &fakeProm{handler: respond(200, tc.body)}, Config{})
			got, err := s.Instant(t.Context(), "q", time.Time{})
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || !sameElements(got, tc.want) {
				t.Errorf("Instant = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestInstantRejectsUnusableResults(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{name: "matrix", body: success("matrix", `[{"metric":{},"values":[[1,"1"]]}]`), want: "range vector"},
		{name: "string", body: success("string", `[1,"hello"]`), want: "string"},
		{name: "native histogram", body: success("vector", `[{"metric":{"__name__":"h"},"histogram":[1,{"count":"1","sum":"1","buckets":[[0,"0","1","1"]]}]}]`), want: "native histogram"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeProm{handler: respond(200, tc.body)}
			s := newTestSource(t, f, Config{})
			_, err := s.Instant(t.Context(), "q", time.Time{})
			qe := queryError(t, err)
			if qe.Reason != ReasonBadQuery || qe.Attempts != 1 || qe.Status != 200 || f.hits.Load() != 1 {
				t.Errorf("error %+v after %d hits, want bad_query, 1 attempt, HTTP 200", qe, f.hits.Load())
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("message %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestRequestParameters(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		call    func(*Source) error
		want    map[string]string
	}{
		{
			name: "instant at a time", timeout: 2500 * time.Millisecond,
			call: func(s *Source) error {
				_, err := s.Instant(context.Background(), "up", time.Unix(1700000000, 500_000_000))
				return err
			},
			want: map[string]string{"query": "up", "time": "1700000000.5", "timeout": "2s"},
		},
		{
			name: "instant now", timeout: 300 * time.Millisecond,
			call: func(s *Source) error {
				_, err := s.Instant(context.Background(), "up", time.Time{})
				return err
			},
			want: map[string]string{"query": "up", "time": "", "timeout": "300ms"},
		},
		{
			name: "range", timeout: time.Minute,
			call: func(s *Source) error {
				_, err := s.Range(context.Background(), "up", time.Unix(100, 0), time.Unix(160, 0), 15*time.Second)
				return err
			},
			want: map[string]string{"query": "up", "start": "100", "end": "160", "step": "15", "timeout": "1m0s"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]string{}
			f := &fakeProm{handler: func(w http.ResponseWriter, r *http.Request) {
				if err := r.ParseForm(); err != nil {
					t.Error(err)
				}
				for k := range tc.want {
					got[k] = r.Form.Get(k)
				}
				if r.URL.Path != "/api/v1/query" && r.URL.Path != "/api/v1/query_range" {
					t.Errorf("path %s", r.URL.Path)
				}
				respond(200, success("matrix", `[]`))(w, r)
			}}
			if strings.HasPrefix(tc.name, "instant") {
				f.handler = func(w http.ResponseWriter, r *http.Request) {
					_ = r.ParseForm()
					for k := range tc.want {
						got[k] = r.Form.Get(k)
					}
					respond(200, success("vector", `[]`))(w, r)
				}
			}
			s := newTestSource(t, f, Config{Timeout: tc.timeout})
			if err := tc.call(s); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("form = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRangeConverts(t *testing.T) {
	body := success("matrix", `[
		{"metric":{"arm":"canary"},"values":[[1700000000,"3"],[1700000010,"NaN"]]},
		{"metric":{"arm":"baseline"},"values":[[1700000000,"1"],[1700000010,"+Inf"]]}]`)
	s := newTestSource(t, &fakeProm{handler: respond(200, body)}, Config{})
	got, err := s.Range(t.Context(), "q", time.Unix(1700000000, 0), time.Unix(1700000010, 0), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []canary.Series{
		{Labels: map[string]string{"arm": "baseline"}, Points: []canary.Point{{T: time.Unix(1700000000, 0).UTC(), V: 1}, {T: time.Unix(1700000010, 0).UTC(), V: math.Inf(1)}}},
		{Labels: map[string]string{"arm": "canary"}, Points: []canary.Point{{T: time.Unix(1700000000, 0).UTC(), V: 3}, {T: time.Unix(1700000010, 0).UTC(), V: math.NaN()}}},
	}
	if len(got) != len(want) {
		t.Fatalf("Range = %v, want %v", got, want)
	}
	for i := range want {
		if fmt.Sprint(got[i].Labels) != fmt.Sprint(want[i].Labels) || len(got[i].Points) != len(want[i].Points) {
			t.Fatalf("series %d = %v, want %v", i, got[i], want[i])
		}
		for j, p := range want[i].Points {
			g := got[i].Points[j]
			if !g.T.Equal(p.T) || g.T.Location() != time.UTC || !sameFloat(g.V, p.V) {
				t.Errorf("series %d point %d = %v, want %v (UTC)", i, j, g, p)
			}
		}
	}

	t.Run("non-matrix result", func(t *testing.T) {
		s := newTestSource(t, &fakeProm{handler: respond(200, success("vector", `[]`))}, Config{})
		_, err := s.Range(t.Context(), "q", time.Unix(0, 0), time.Unix(10, 0), time.Second)
		if qe := queryError(t, err); qe.Reason != ReasonBadQuery || !strings.Contains(qe.Detail, "not a matrix") {
			t.Errorf("error = %+v, want bad_query saying not a matrix", qe)
		}
	})
}

func TestArgumentsRejectedWithoutRequest(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	tests := []struct {
		name  string
		call  func(*Source) error
		field string
	}{
		{name: "empty instant query", call: func(s *Source) error { _, err := s.Instant(context.Background(), "", t0); return err }, field: "empty"},
		{name: "empty range query", call: func(s *Source) error { _, err := s.Range(context.Background(), "", t0, t0, time.Second); return err }, field: "empty"},
		{name: "zero step", call: func(s *Source) error { _, err := s.Range(context.Background(), "up", t0, t0, 0); return err }, field: "step 0s must be positive"},
		{name: "negative step", call: func(s *Source) error { _, err := s.Range(context.Background(), "up", t0, t0, -time.Second); return err }, field: "step"},
		{name: "end before start", call: func(s *Source) error {
			_, err := s.Range(context.Background(), "up", t0, t0.Add(-time.Second), time.Second)
			return err
		}, field: "is before start"},
		{name: "too many points", call: func(s *Source) error {
			_, err := s.Range(context.Background(), "up", t0, t0.Add(24*time.Hour), time.Second)
			return err
		}, field: "11000 points"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeProm{handler: respond(200, success("vector", `[]`))}
			s := newTestSource(t, f, Config{})
			qe := queryError(t, tc.call(s))
			if qe.Reason != ReasonBadQuery || qe.Attempts != 0 || f.hits.Load() != 0 {
				t.Errorf("error %+v, %d hits; want bad_query, not sent", qe, f.hits.Load())
			}
			if !strings.Contains(qe.Error(), tc.field) || !strings.Contains(qe.Error(), "not sent") {
				t.Errorf("message %q, want it to contain %q and \"not sent\"", qe, tc.field)
			}
		})
	}
}

func TestErrorClassification(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		reason   Reason
		attempts int
		hits     int32
		contains string
	}{
		{name: "parse error 400", status: 400, body: apiError("bad_data", "1:5: parse error: unclosed left parenthesis"), reason: ReasonBadQuery, attempts: 1, hits: 1, contains: "bad Prometheus query: bad_data: 1:5: parse error"},
		{name: "execution error 422", status: 422, body: apiError("execution", "many-to-many matching not allowed"), reason: ReasonBadQuery, attempts: 1, hits: 1, contains: "execution: many-to-many"},
		{name: "query timeout 503", status: 503, body: apiError("timeout", "query timed out in expression evaluation"), reason: ReasonTimeout, attempts: 3, hits: 3, contains: "timed out in expression evaluation"},
		{name: "not ready 503", status: 503, body: "Service Unavailable", reason: ReasonUnavailable, attempts: 3, hits: 3, contains: "HTTP 503: Service Unavailable"},
		{name: "internal 500", status: 500, body: apiError("internal", "boom"), reason: ReasonUnavailable, attempts: 3, hits: 3, contains: "internal: boom"},
		{name: "bad gateway html", status: 502, body: "<html>bad gateway</html>", reason: ReasonUnavailable, attempts: 3, hits: 3, contains: "HTTP 502"},
		{name: "rate limited 429", status: 429, body: "slow down", reason: ReasonRateLimited, attempts: 3, hits: 3, contains: "rate-limited"},
		{name: "unauthorized 401", status: 401, body: "no", reason: ReasonUnauthorized, attempts: 1, hits: 1, contains: "refused the credentials"},
		// client_golang retries a 403 POST once as a GET.
		{name: "forbidden 403", status: 403, body: "no", reason: ReasonUnauthorized, attempts: 1, hits: 2, contains: "HTTP 403"},
		{name: "not found 404", status: 404, body: "404 page not found", reason: ReasonBadResponse, attempts: 1, hits: 1, contains: "is Config.URL the base URL"},
		{name: "malformed body 200", status: 200, body: `{"status":"success","data":`, reason: ReasonBadResponse, attempts: 1, hits: 1, contains: "unexpected Prometheus response"},
		{name: "error envelope 200", status: 200, body: apiError("bad_data", "invalid parameter"), reason: ReasonBadQuery, attempts: 1, hits: 1, contains: "invalid parameter"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeProm{handler: respond(tc.status, tc.body)}
			s := newTestSource(t, f, Config{})
			_, err := s.Instant(t.Context(), "sum(up", time.Time{})
			qe := queryError(t, err)
			if qe.Reason != tc.reason || qe.Attempts != tc.attempts || qe.Status != tc.status || qe.Query != "sum(up" {
				t.Errorf("error = %+v, want reason %s, %d attempts, HTTP %d", qe, tc.reason, tc.attempts, tc.status)
			}
			if got := f.hits.Load(); got != tc.hits {
				t.Errorf("server hit %d times, want %d", got, tc.hits)
			}
			if !strings.Contains(err.Error(), tc.contains) || !strings.Contains(err.Error(), `query "sum(up"`) {
				t.Errorf("message %q, want it to contain %q and the query", err, tc.contains)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	s, err := New(Config{URL: url, Backoff: time.Millisecond, MaxAttempts: 2})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Range(t.Context(), "up", time.Unix(0, 0), time.Unix(60, 0), time.Second)
	qe := queryError(t, err)
	if qe.Reason != ReasonUnreachable || qe.Attempts != 2 || qe.Status != 0 {
		t.Errorf("error = %+v, want unreachable after 2 attempts", qe)
	}
	if !strings.Contains(err.Error(), "Prometheus unreachable") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("message %q, want it to say unreachable and why", err)
	}
}

func TestRetryThenSuccess(t *testing.T) {
	reg := prom.NewRegistry()
	f := &fakeProm{}
	f.handler = func(w http.ResponseWriter, r *http.Request) {
		if f.hits.Load() < 3 {
			respond(503, "warming up")(w, r)
			return
		}
		respond(200, success("scalar", `[1,"7"]`))(w, r)
	}
	s := newTestSource(t, f, Config{Registerer: reg})
	got, err := s.Instant(t.Context(), "q", time.Time{})
	if err != nil {
		t.Fatalf("Instant = %v, want success on the third attempt", err)
	}
	if len(got) != 1 || got[0].Value != 7 || f.hits.Load() != 3 {
		t.Errorf("Instant = %v after %d hits, want 7 after 3", got, f.hits.Load())
	}
	if n := testutil.ToFloat64(s.m.retries.WithLabelValues("instant", "unavailable")); n != 2 {
		t.Errorf("retries{unavailable} = %v, want 2", n)
	}
	if n := testutil.CollectAndCount(s.m.errors); n != 0 {
		t.Errorf("%d error series, want none after a success", n)
	}
}

func TestBackoffSchedule(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		headers     []string
		cfg         Config
		wantElapsed time.Duration
		attempts    int
	}{
		{name: "doubling capped", status: 503, cfg: Config{MaxAttempts: 4, Backoff: 100 * time.Millisecond, MaxBackoff: 250 * time.Millisecond}, wantElapsed: 550 * time.Millisecond, attempts: 4},
		{name: "no retries", status: 503, cfg: Config{MaxAttempts: 1}, wantElapsed: 0, attempts: 1},
		{name: "retry-after seconds honoured", status: 429, headers: []string{"Retry-After", "2"}, cfg: Config{MaxAttempts: 2, Backoff: 10 * time.Millisecond, MaxBackoff: 5 * time.Second}, wantElapsed: 2 * time.Second, attempts: 2},
		{name: "retry-after capped", status: 503, headers: []string{"Retry-After", "3600"}, cfg: Config{MaxAttempts: 2, Backoff: 10 * time.Millisecond, MaxBackoff: 5 * time.Second}, wantElapsed: 5 * time.Second, attempts: 2},
		{name: "bad query never waits", status: 400, cfg: Config{MaxAttempts: 5, Backoff: time.Second}, wantElapsed: 0, attempts: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeProm{handler: respond(tc.status, apiError("x", "y"), tc.headers...)}
				s := newMemSource(t, f, tc.cfg)
				start := time.Now()
				_, err := s.Instant(t.Context(), "q", time.Time{})
				if elapsed := time.Since(start); elapsed != tc.wantElapsed {
					t.Errorf("gave up after %v, want %v", elapsed, tc.wantElapsed)
				}
				if qe := queryError(t, err); qe.Attempts != tc.attempts {
					t.Errorf("attempts = %d, want %d", qe.Attempts, tc.attempts)
				}
			})
		})
	}
}

func TestAttemptTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeProm{handler: func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }}
		s := newMemSource(t, f, Config{Timeout: time.Second, MaxAttempts: 3, Backoff: 100 * time.Millisecond})
		start := time.Now()
		_, err := s.Instant(t.Context(), "q", time.Time{})
		if elapsed := time.Since(start); elapsed != 3*time.Second+300*time.Millisecond {
			t.Errorf("gave up after %v, want 3 × 1s + 100ms + 200ms", elapsed)
		}
		qe := queryError(t, err)
		if qe.Reason != ReasonTimeout || qe.Attempts != 3 || !strings.Contains(err.Error(), "no answer within 1s") {
			t.Errorf("error = %+v (%v), want timeout after 3 attempts", qe, err)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%v does not wrap context.DeadlineExceeded", err)
		}
	})
}

func TestCallerContextEndsRetries(t *testing.T) {
	t.Run("deadline before the next attempt", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &fakeProm{handler: respond(503, "busy")}
			s := newMemSource(t, f, Config{MaxAttempts: 10, Backoff: 100 * time.Millisecond, MaxBackoff: time.Second})
			ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
			defer cancel()
			start := time.Now()
			_, err := s.Instant(ctx, "q", time.Time{})
			if elapsed := time.Since(start); elapsed != 100*time.Millisecond {
				t.Errorf("gave up after %v, want 100ms (the second delay would pass the deadline)", elapsed)
			}
			qe := queryError(t, err)
			if qe.Reason != ReasonUnavailable || qe.Attempts != 2 || !strings.Contains(qe.Detail, "no retry") {
				t.Errorf("error = %+v, want unavailable after 2 attempts, saying no retry", qe)
			}
		})
	})
	t.Run("canceled while waiting", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			f := &fakeProm{handler: respond(503, "busy")}
			s := newMemSource(t, f, Config{MaxAttempts: 10, Backoff: time.Second})
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(500*time.Millisecond, cancel)
			_, err := s.Instant(ctx, "q", time.Time{})
			qe := queryError(t, err)
			if qe.Reason != ReasonCanceled || qe.Attempts != 1 || !errors.Is(err, context.Canceled) {
				t.Errorf("error = %+v, want canceled after 1 attempt wrapping context.Canceled", qe)
			}
			if !strings.Contains(qe.Detail, "while waiting to retry after: HTTP 503") {
				t.Errorf("detail %q does not keep the last failure", qe.Detail)
			}
		})
	})
	t.Run("canceled before sending", func(t *testing.T) {
		f := &fakeProm{handler: respond(200, success("vector", `[]`))}
		s := newTestSource(t, f, Config{})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := s.Instant(ctx, "q", time.Time{})
		if qe := queryError(t, err); qe.Reason != ReasonCanceled || qe.Attempts != 1 || !errors.Is(err, context.Canceled) {
			t.Errorf("error = %+v, want canceled, not retried", qe)
		}
	})
}

func TestAuth(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "none", cfg: Config{}, want: ""},
		{name: "bearer", cfg: Config{BearerToken: "s3cret"}, want: "Bearer s3cret"},
		{name: "basic", cfg: Config{BasicAuth: &BasicAuth{Username: "ann", Password: "pw"}}, want: "Basic YW5uOnB3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got atomic.Value
			f := &fakeProm{handler: func(w http.ResponseWriter, r *http.Request) {
				got.Store(r.Header.Get("Authorization"))
				respond(200, success("vector", `[]`))(w, r)
			}}
			s := newTestSource(t, f, tc.cfg)
			if _, err := s.Instant(t.Context(), "up", time.Time{}); err != nil {
				t.Fatal(err)
			}
			if got.Load() != tc.want {
				t.Errorf("Authorization = %q, want %q", got.Load(), tc.want)
			}
		})
	}
}

func TestWarningsLogged(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	body := `{"status":"success","warnings":["PromQL warning: encountered a mix of histograms"],"infos":["info: metric might not be a counter"],"data":{"resultType":"vector","result":[]}}`
	s := newTestSource(t, &fakeProm{handler: respond(200, body)}, Config{Logger: log})
	if _, err := s.Instant(t.Context(), "rate(x[5m])", time.Time{}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"level=WARN", "prometheus query warnings", "encountered a mix of histograms", "query=rate(x[5m])", "level=DEBUG", "might not be a counter"} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q does not contain %q", out, want)
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prom.NewRegistry()
	f := &fakeProm{}
	f.handler = func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if r.Form.Get("query") == "bad(" {
			respond(400, apiError("bad_data", "parse error"))(w, r)
			return
		}
		respond(200, success("vector", `[]`))(w, r)
	}
	s1 := newTestSource(t, f, Config{Registerer: reg})
	s2 := newTestSource(t, f, Config{Registerer: reg}) // shares the instruments
	ctx := t.Context()
	_, _ = s1.Instant(ctx, "up", time.Time{})
	_, _ = s1.Instant(ctx, "bad(", time.Time{})
	_, _ = s2.Instant(ctx, "bad(", time.Time{})
	_, _ = s2.Range(ctx, "up", time.Unix(0, 0), time.Unix(1, 0), 0)

	if n := testutil.ToFloat64(s1.m.errors.WithLabelValues("instant", "bad_query")); n != 2 {
		t.Errorf("errors{instant,bad_query} = %v, want 2", n)
	}
	if n := testutil.ToFloat64(s1.m.errors.WithLabelValues("range", "bad_query")); n != 1 {
		t.Errorf("errors{range,bad_query} = %v, want 1", n)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range fams {
		if fam.GetName() != "flagpole_prometheus_query_duration_seconds" {
			continue
		}
		for _, m := range fam.GetMetric() {
			kind := m.GetLabel()[0].GetValue()
			if want := map[string]uint64{"instant": 3}[kind]; m.GetHistogram().GetSampleCount() != want {
				t.Errorf("latency{kind=%s} count = %d, want %d (rejected arguments are not timed)", kind, m.GetHistogram().GetSampleCount(), want)
			}
		}
		return
	}
	t.Error("no latency histogram registered")
}

func TestRegistererConflict(t *testing.T) {
	reg := prom.NewRegistry()
	reg.MustRegister(prom.NewCounterVec(prom.CounterOpts{Name: "flagpole_prometheus_query_errors_total", Help: "other"}, []string{"x"}))
	_, err := New(Config{URL: "http://x", Registerer: reg})
	if err == nil || !strings.Contains(err.Error(), "Config.Registerer") {
		t.Errorf("New = %v, want an error naming Config.Registerer", err)
	}
}

func TestDelay(t *testing.T) {
	s := &Source{backoff: 100 * time.Millisecond, maxBackoff: time.Second, jitter: func(d time.Duration) time.Duration { return d }}
	tests := []struct {
		attempt    int
		retryAfter time.Duration
		want       time.Duration
	}{
		{attempt: 1, want: 100 * time.Millisecond},
		{attempt: 2, want: 200 * time.Millisecond},
		{attempt: 4, want: 800 * time.Millisecond},
		{attempt: 5, want: time.Second},
		{attempt: 60, want: time.Second},
		{attempt: 1, retryAfter: 50 * time.Millisecond, want: 100 * time.Millisecond},
		{attempt: 1, retryAfter: 700 * time.Millisecond, want: 700 * time.Millisecond},
		{attempt: 1, retryAfter: time.Hour, want: time.Second},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("attempt %d retry-after %v", tc.attempt, tc.retryAfter), func(t *testing.T) {
			if got := s.delay(tc.attempt, tc.retryAfter); got != tc.want {
				t.Errorf("delay = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestEqualJitter(t *testing.T) {
	for _, d := range []time.Duration{0, 1, 2, 3, time.Millisecond, 5 * time.Second} {
		seen := map[time.Duration]bool{}
		for range 500 {
			got := equalJitter(d)
			if got < d/2 || got > d {
				t.Fatalf("equalJitter(%v) = %v, want within [%v, %v]", d, got, d/2, d)
			}
			seen[got] = true
		}
		if d >= time.Millisecond && len(seen) < 10 {
			t.Errorf("equalJitter(%v) took only %d values in 500 draws", d, len(seen))
		}
	}
}

func TestServerTimeout(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{in: 10 * time.Second, want: "10s"},
		{in: 2500 * time.Millisecond, want: "2s"},
		{in: 90 * time.Second, want: "1m30s"},
		{in: 250 * time.Millisecond, want: "250ms"},
		{in: 1500 * time.Microsecond, want: "1ms"},
		{in: time.Nanosecond, want: "1ms"},
	}
	for _, tc := range tests {
		if got := serverTimeout(tc.in).String(); got != tc.want {
			t.Errorf("serverTimeout(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name, in string
		want     time.Duration
	}{
		{name: "empty", in: "", want: 0},
		{name: "seconds", in: "7", want: 7 * time.Second},
		{name: "negative", in: "-3", want: 0},
		{name: "http date", in: now.Add(90 * time.Second).Format(http.TimeFormat), want: 90 * time.Second},
		{name: "past date", in: now.Add(-time.Hour).Format(http.TimeFormat), want: 0},
		{name: "garbage", in: "soon", want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseRetryAfter(tc.in, now); got != tc.want {
				t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestLongQueryTruncatedInMessage(t *testing.T) {
	qe := &QueryError{Reason: ReasonBadQuery, Query: strings.Repeat("x", 1000), Attempts: 1}
	if n := len(qe.Error()); n > 300 {
		t.Errorf("message is %d bytes, want the query truncated", n)
	}
}
