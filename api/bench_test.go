package api

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

// benchFlagSet is the benchmark flag set: n flags, a third static, a third
// with `in`/`==` rules on an email attribute, a third fractional.
func benchFlagSet(n int) string {
	var b strings.Builder
	b.WriteString(`{"metadata":{"set":"bench"},"flags":{`)
	var vips []string
	for i := range 20 {
		vips = append(vips, fmt.Sprintf(`"user%d@example.com"`, i*37))
	}
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		switch i % 3 {
		case 0:
			fmt.Fprintf(&b, `"static-%03d":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on","metadata":{"team":"t%d"}}`, i, i%5)
		case 1:
			fmt.Fprintf(&b, `"email-%03d":{"state":"ENABLED","variants":{"vip":"gold","ceo":"platinum","std":"basic"},"defaultVariant":"std",`+
				`"targeting":{"if":[{"in":[{"var":"email"},[%s]]},"vip",{"==":[{"var":"email"},"ceo@example.com"]},"ceo",null]}}`, i, strings.Join(vips, ","))
		default:
			fmt.Fprintf(&b, `"rollout-%03d":{"state":"ENABLED","variants":{"new":true,"old":false},"defaultVariant":"old",`+
				`"targeting":{"fractional":[{"var":"targetingKey"},["new",25],["old",75]]}}`, i)
		}
	}
	b.WriteString(`}}`)
	return b.String()
}

// benchBodies are OFREP request bodies for many different users.
func benchBodies(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, `{"context":{"targetingKey":"user-%d","email":"user%d@example.com","plan":"pro","country":"DE"}}`, i, i)
	}
	return out
}

// discard is a reusable ResponseWriter that drops the body.
type discard struct {
	h      http.Header
	status int
	n      int
}

func (d *discard) Header() http.Header { return d.h }
func (d *discard) WriteHeader(s int)   { d.status = s }
func (d *discard) Write(p []byte) (int, error) {
	d.n += len(p)
	return len(p), nil
}

// benchClient issues requests against a handler in-process, reusing one
// request and one writer per goroutine.
type benchClient struct {
	h    http.Handler
	req  *http.Request
	body bytes.Reader
	w    discard
}

func newBenchClient(h http.Handler, path, secret string) *benchClient {
	u, _ := url.Parse(path)
	c := &benchClient{h: h, w: discard{h: http.Header{}}}
	c.req = &http.Request{Method: "POST", URL: u, RequestURI: path, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Host: "bench",
		Header: http.Header{"Authorization": {"Bearer " + secret}, "Content-Type": {"application/json"}}, RemoteAddr: "127.0.0.1:1"}
	return c
}

func (c *benchClient) do(body []byte) int {
	c.body.Reset(body)
	c.req.Body = io.NopCloser(&c.body)
	c.req.ContentLength = int64(len(body))
	clear(c.w.h)
	c.w.status = 0
	c.h.ServeHTTP(&c.w, c.req)
	return c.w.status
}

func benchHarness(b *testing.B) (*harness, [][]byte) {
	b.Helper()
	h := newHarness(b, func(c *Config) {
		c.SyncInterval = time.Second
		c.Logger = slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	h.createEnv("default", benchFlagSet(100))
	if st := h.srv.env("default"); st == nil || len(st.keys) != 100 {
		b.Fatalf("bench set not loaded")
	}
	return h, benchBodies(1000)
}

func runOFREP(b *testing.B, h *harness, path, secret string, bodies [][]byte, wantStatus int) {
	b.ReportAllocs()
	b.ResetTimer()
	var seq atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		c := newBenchClient(h.srv.Handler(), path, secret)
		i := int(seq.Add(7919))
		for pb.Next() {
			i++
			if st := c.do(bodies[i%len(bodies)]); st != wantStatus {
				b.Errorf("status %d", st)
				return
			}
		}
	})
}

// BenchmarkOFREPSingle evaluates one flag of each kind through the full
// handler stack (router, middleware, auth cache, parse, evaluate, encode).
func BenchmarkOFREPSingle(b *testing.B) {
	h, bodies := benchHarness(b)
	for _, key := range []string{"static-000", "email-001", "rollout-002"} {
		b.Run(key, func(b *testing.B) {
			runOFREP(b, h, "/ofrep/v1/evaluate/flags/"+key, h.admin, bodies, 200)
		})
	}
}

// BenchmarkOFREPBulk evaluates all 100 flags per request.
func BenchmarkOFREPBulk(b *testing.B) {
	h, bodies := benchHarness(b)
	runOFREP(b, h, "/ofrep/v1/evaluate/flags", h.admin, bodies, 200)
}

// BenchmarkOFREPBulkNotModified is a polling client whose result did not
// change: the body is still computed (to hash it) but not sent.
func BenchmarkOFREPBulkNotModified(b *testing.B) {
	h, bodies := benchHarness(b)
	c := newBenchClient(h.srv.Handler(), "/ofrep/v1/evaluate/flags", h.admin)
	c.do(bodies[0])
	etag := c.w.h.Get("ETag")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := newBenchClient(h.srv.Handler(), "/ofrep/v1/evaluate/flags", h.admin)
		c.req.Header.Set("If-None-Match", etag)
		for pb.Next() {
			if st := c.do(bodies[0]); st != 304 {
				b.Errorf("status %d", st)
				return
			}
		}
	})
}

// BenchmarkEchoNoop is the floor: the same server, middleware included,
// with a handler that does nothing.
func BenchmarkEchoNoop(b *testing.B) {
	h, bodies := benchHarness(b)
	h.srv.e.POST("/noop", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) })
	runOFREP(b, h, "/noop", h.admin, bodies, 204)
}

// BenchmarkParseContext is the request parser alone.
func BenchmarkParseContext(b *testing.B) {
	body := benchBodies(1)[0]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseEvalRequest(body); err != nil {
			b.Fatal(err)
		}
	}
}
