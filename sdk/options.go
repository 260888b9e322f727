package sdk

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/flagpole/flagpole/api/ofrep"
)

// Defaults of the options.
const (
	DefaultInitTimeout       = 10 * time.Second
	DefaultRequestTimeout    = 5 * time.Second
	DefaultStreamIdleTimeout = 45 * time.Second // three of the server's 15 s heartbeats
	DefaultBackoffMin        = 250 * time.Millisecond
	DefaultBackoffMax        = 30 * time.Second
	DefaultFlushInterval     = 10 * time.Second
	DefaultBatchSize         = 500
	DefaultMaxPendingEvents  = 10_000
	DefaultExposureWindow    = time.Minute
	DefaultMaxSnapshotBytes  = 32 << 20
)

// Option configures a [Provider].
type Option func(*config)

type config struct {
	url            string
	base           *url.URL
	key            string
	env            string
	remote         bool
	client         *http.Client
	ownClient      bool
	initTimeout    time.Duration
	requestTimeout time.Duration
	idleTimeout    time.Duration
	backoffMin     time.Duration
	backoffMax     time.Duration
	bootstrap      string
	cacheFile      string
	logger         *slog.Logger
	flushInterval  time.Duration
	batchSize      int
	maxPending     int
	exposureWindow time.Duration
	maxSnapshot    int64
}

// WithURL sets Flagpole's base URL, such as "https://flags.example.com".
// Without it the provider runs offline from a bootstrap file.
func WithURL(u string) Option { return func(c *config) { c.url = u } }

// WithSDKKey sets the API key sent as "Authorization: Bearer <key>". An SDK
// key selects its environment on the server.
func WithSDKKey(key string) Option { return func(c *config) { c.key = key } }

// WithEnvironment names the environment to follow ("default" when unset).
// It must be the SDK key's environment.
func WithEnvironment(env string) Option { return func(c *config) { c.env = env } }

// WithRemoteEvaluation switches to remote mode: every evaluation is an OFREP
// request to the server instead of a local evaluation of a streamed flag set.
func WithRemoteEvaluation() Option { return func(c *config) { c.remote = true } }

// WithHTTPClient sets the HTTP client. It must not have a Timeout, which
// would cut the change stream; the provider bounds requests itself.
func WithHTTPClient(hc *http.Client) Option { return func(c *config) { c.client = hc } }

// WithInitTimeout bounds how long Init waits for the first flag set.
func WithInitTimeout(d time.Duration) Option { return func(c *config) { c.initTimeout = d } }

// WithRequestTimeout bounds each OFREP and tracking request.
func WithRequestTimeout(d time.Duration) Option { return func(c *config) { c.requestTimeout = d } }

// WithStreamIdleTimeout is how long the change stream may stay silent
// before the provider considers it dead and reconnects. It must exceed the
// server's heartbeat interval (15 s by default).
func WithStreamIdleTimeout(d time.Duration) Option { return func(c *config) { c.idleTimeout = d } }

// WithReconnectBackoff sets the first and the longest delay between
// reconnection attempts; delays double and are jittered.
func WithReconnectBackoff(minDelay, maxDelay time.Duration) Option {
	return func(c *config) { c.backoffMin, c.backoffMax = minDelay, maxDelay }
}

// WithBootstrapFile starts the provider from a local flag file (flagd
// format, JSON or YAML): it serves these flags until the server's arrive,
// and for good when no URL is set.
func WithBootstrapFile(path string) Option { return func(c *config) { c.bootstrap = path } }

// WithCacheFile makes the provider keep the last flag set it received in
// path (written atomically after each change) and start from it, so that
// an application restarts with the last known flags when Flagpole is
// unreachable. The file is preferred over the bootstrap file.
func WithCacheFile(path string) Option { return func(c *config) { c.cacheFile = path } }

// WithLogger sets the logger (nil discards, the default).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithEventFlush sets how often tracked events are sent and how many go in
// one request.
func WithEventFlush(interval time.Duration, batchSize int) Option {
	return func(c *config) { c.flushInterval, c.batchSize = interval, batchSize }
}

// WithMaxPendingEvents bounds the events waiting to be sent; beyond it new
// events are dropped (and counted in the log).
func WithMaxPendingEvents(n int) Option { return func(c *config) { c.maxPending = n } }

// WithExposureWindow sets the window within which the same (flag, variant,
// targeting key) exposure is recorded once. Zero or negative disables
// exposure recording.
func WithExposureWindow(d time.Duration) Option {
	return func(c *config) {
		c.exposureWindow = d
		if d <= 0 {
			c.exposureWindow = -1
		}
	}
}

// WithMaxSnapshotBytes bounds the size of one stream message.
func WithMaxSnapshotBytes(n int64) Option { return func(c *config) { c.maxSnapshot = n } }

// newConfig applies the options and the defaults and checks the result.
// Every error names the option at fault.
func newConfig(opts []Option) (config, error) {
	c := config{}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if c.env == "" {
		c.env = ofrep.DefaultEnvironment
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.initTimeout, DefaultInitTimeout)
	def(&c.requestTimeout, DefaultRequestTimeout)
	def(&c.idleTimeout, DefaultStreamIdleTimeout)
	def(&c.backoffMin, DefaultBackoffMin)
	def(&c.backoffMax, DefaultBackoffMax)
	def(&c.flushInterval, DefaultFlushInterval)
	def(&c.exposureWindow, DefaultExposureWindow)
	if c.batchSize == 0 {
		c.batchSize = DefaultBatchSize
	}
	if c.maxPending == 0 {
		c.maxPending = DefaultMaxPendingEvents
	}
	if c.maxSnapshot == 0 {
		c.maxSnapshot = DefaultMaxSnapshotBytes
	}

	var errs []error
	bad := func(option, problem string) { errs = append(errs, fmt.Errorf("%s: %s", option, problem)) }
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"WithInitTimeout", c.initTimeout}, {"WithRequestTimeout", c.requestTimeout},
		{"WithStreamIdleTimeout", c.idleTimeout}, {"WithReconnectBackoff", c.backoffMin},
		{"WithReconnectBackoff", c.backoffMax}, {"WithEventFlush", c.flushInterval},
	} {
		if d.v < 0 {
			bad(d.name, "durations must be positive")
		}
	}
	if c.backoffMax < c.backoffMin {
		bad("WithReconnectBackoff", "the longest delay is shorter than the first")
	}
	if c.batchSize < 0 || c.maxPending < 0 || c.maxSnapshot < 0 {
		bad("WithEventFlush/WithMaxPendingEvents/WithMaxSnapshotBytes", "sizes must be positive")
	}
	if strings.ContainsAny(c.env, "/?#") {
		bad("WithEnvironment", fmt.Sprintf("%q is not an environment name", c.env))
	}
	switch {
	case c.url != "":
		u, err := url.Parse(strings.TrimRight(c.url, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("WithURL", fmt.Sprintf("%q is not an http(s) URL", c.url))
		} else {
			c.base = u
		}
	case c.remote:
		bad("WithURL", "remote evaluation needs the server's URL")
	case c.bootstrap == "" && c.cacheFile == "":
		bad("WithURL", "set a URL, or a bootstrap or cache file to run offline")
	}
	if c.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		tr.IdleConnTimeout = 90 * time.Second
		tr.ResponseHeaderTimeout = c.requestTimeout
		c.client = &http.Client{Transport: tr}
		c.ownClient = true
	}
	return c, errors.Join(errs...)
}

// endpoint is the absolute URL of path on the server.
func (c *config) endpoint(path string) string {
	return c.base.String() + path
}

// authorize adds the key and environment headers to req.
func (c *config) authorize(req *http.Request) {
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	req.Header.Set(ofrep.HeaderEnvironment, c.env)
	req.Header.Set("User-Agent", "flagpole-go-sdk")
}
