package api

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flagpole/flagpole/api/stream"
	"github.com/flagpole/flagpole/auth"
	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/flags"
)

// Config configures a [Server]. Store, Keys and Flags are required.
type Config struct {
	// Store holds the environments and their flag sets; the server reads it
	// to load flag sets and for admin reads.
	Store flags.Store
	// Keys holds the API keys.
	Keys auth.Store
	// Flags performs every flag write (validated and audited).
	Flags *flags.Service
	// Logger receives request logs and sync events; nil discards them.
	Logger *slog.Logger
	// Registry receives the server's metrics, which /metrics serves together
	// with everything else registered there. The server registers the Go
	// and process collectors unless they already are. Nil: a private registry.
	Registry *prometheus.Registry
	// CORSOrigins lists the browser origins allowed to call the API, such
	// as "https://app.example.com"; ["*"] allows any; empty allows none.
	CORSOrigins []string
	// BodyLimit caps request bodies in bytes; 0 means 1 MiB.
	BodyLimit int64
	// RateLimit caps OFREP requests per second for each API key (a token
	// bucket holding one second's worth); 0 means unlimited.
	RateLimit float64
	// SyncInterval is how often the server re-reads every environment's
	// version as a safety net for missed change notifications; 0 means 5s.
	SyncInterval time.Duration
	// Analyses holds canary analysis templates and runs; nil leaves the
	// analysis routes answering 503.
	Analyses canary.Store
	// Events stores the tracking events SDKs send; nil leaves the events
	// route answering 503.
	Events EventAppender
	// Experiments holds A/B experiments and their folded statistics; nil
	// leaves the experiment routes answering 503.
	Experiments experiments.Store
	// Extra are routes served for packages that may not import api, such
	// as deploy's orchestrator hooks (see Route); each is authenticated as
	// its Auth says. A malformed or clashing route makes New fail.
	Extra []Route
	// Rollouts creates and controls progressive flag rollouts and runs the
	// kill switch; nil leaves those routes answering 503.
	Rollouts *canary.RolloutService
}

// Defaults.
const (
	defaultBodyLimit    = 1 << 20
	defaultSyncInterval = 5 * time.Second
	// keyCacheTTL is how long an API key lookup is trusted before the key
	// store is asked again (revocation on another replica takes this long
	// to be seen here; on this replica it is immediate).
	keyCacheTTL = 2 * time.Second
)

// Server is Flagpole's HTTP API: OFREP evaluation, the admin REST API,
// health and metrics. It serves evaluations from compiled flag sets held in
// memory and kept current by [Server.Run]; admin writes go through
// flags.Service. It is safe for concurrent use.
type Server struct {
	e            *echo.Echo
	log          *slog.Logger
	store        flags.Store
	svc          *flags.Service
	reg          *prometheus.Registry
	m            *metrics
	bodyLimit    int64
	syncInterval time.Duration
	cors         corsPolicy
	keys         *keyCache
	limiter      *rateLimiter
	now          func() time.Time

	envs       atomic.Pointer[envMap]
	applyMu    sync.Mutex        // serialises changes to envs
	badVersion map[string]badSet // guarded by applyMu
	ready      atomic.Bool
	storeState atomic.Pointer[storeStatus]

	pendingMu  sync.Mutex
	pending    map[string]int64
	pendingAll bool
	changed    chan struct{}

	routePaths map[string]bool // the route templates, for metric labels
	extra      []Route         // Config.Extra
	extraErr   error           // why Config.Extra could not be mounted

	an *analyses            // nil without Config.Analyses
	xp *experiments.Service // nil without Config.Experiments

	rollouts *canary.RolloutService // nil without Config.Rollouts

	hub    *stream.Hub // change streams (streams.go)
	feed   *streamFeed
	events EventAppender // nil without Config.Events
	ev     *eventMetrics

	idPrefix string
	idSeq    atomic.Uint64
	ctxPool  sync.Pool
	bufPool  sync.Pool
}

// New builds a server from cfg. It fails only on an invalid configuration
// (a missing store, service or key store, a negative limit, a malformed
// CORS origin, or metrics that cannot be registered). Call [Server.Run] to
// load the flag sets; until it has, evaluation answers 503.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("api: Config.Store is required")
	case cfg.Keys == nil:
		return nil, errors.New("api: Config.Keys is required")
	case cfg.Flags == nil:
		return nil, errors.New("api: Config.Flags is required")
	case cfg.BodyLimit < 0:
		return nil, fmt.Errorf("api: Config.BodyLimit %d is negative", cfg.BodyLimit)
	case cfg.RateLimit < 0:
		return nil, fmt.Errorf("api: Config.RateLimit %v is negative", cfg.RateLimit)
	case cfg.SyncInterval < 0:
		return nil, fmt.Errorf("api: Config.SyncInterval %v is negative", cfg.SyncInterval)
	}
	cors, err := newCORSPolicy(cfg.CORSOrigins)
	if err != nil {
		return nil, err
	}
	s := &Server{
		log:          cfg.Logger,
		store:        cfg.Store,
		svc:          cfg.Flags,
		reg:          cfg.Registry,
		bodyLimit:    cfg.BodyLimit,
		syncInterval: cfg.SyncInterval,
		cors:         cors,
		now:          time.Now,
		badVersion:   map[string]badSet{},
		changed:      make(chan struct{}, 1),
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	if s.bodyLimit == 0 {
		s.bodyLimit = defaultBodyLimit
	}
	if s.syncInterval == 0 {
		s.syncInterval = defaultSyncInterval
	}
	if s.m, err = newMetrics(s.reg); err != nil {
		return nil, fmt.Errorf("api: registering metrics: %w", err)
	}
	if s.an, err = newAnalyses(s, cfg.Analyses); err != nil {
		return nil, fmt.Errorf("api: registering analysis metrics: %w", err)
	}
	if s.xp, err = newExperiments(s, cfg.Experiments); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if s.ev, err = newEventMetrics(s.reg); err != nil {
		return nil, fmt.Errorf("api: registering event metrics: %w", err)
	}
	s.events, s.feed = cfg.Events, newStreamFeed()
	if s.hub, err = stream.NewHub(stream.Options{Logger: s.log, Registerer: s.reg}); err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	s.keys = newKeyCache(cfg.Keys, keyCacheTTL, func() time.Time { return s.now() })
	if cfg.RateLimit > 0 {
		s.limiter = newRateLimiter(cfg.RateLimit)
	}
	var seed [6]byte
	_, _ = rand.Read(seed[:])
	s.idPrefix = hex.EncodeToString(seed[:]) + "-"
	s.ctxPool.New = func() any { return new(reqCtx) }
	s.bufPool.New = func() any { b := make([]byte, 0, 4096); return &b }
	s.envs.Store(&envMap{})
	s.extra = cfg.Extra
	s.rollouts = cfg.Rollouts
	s.e = s.routes()
	if s.extraErr != nil {
		return nil, s.extraErr
	}
	return s, nil
}

// Handler returns the HTTP handler serving every route.
func (s *Server) Handler() http.Handler { return s.e }

// Ready reports whether the flag sets have been loaded once, so that
// evaluations answer from real data. It stays true while the store is down
// (the server keeps serving the last loaded sets).
func (s *Server) Ready() bool { return s.ready.Load() }

// routes builds the echo instance and every route.
func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.handleError
	e.Use(s.around)

	e.POST("/ofrep/v1/evaluate/flags/:key", s.evaluateFlag)
	e.POST("/ofrep/v1/evaluate/flags", s.evaluateFlags)

	v1 := e.Group("/api/v1")
	v1.GET("/environments", s.withKey(s.listEnvironments))
	v1.POST("/environments", s.withKey(s.createEnvironment))
	v1.GET("/environments/:env", s.withKey(s.getEnvironment))
	v1.DELETE("/environments/:env", s.withKey(s.deleteEnvironment))
	v1.GET("/environments/:env/flags", s.withKey(s.listFlags))
	v1.POST("/environments/:env/flags", s.withKey(s.createFlag))
	v1.GET("/environments/:env/flags/:key", s.withKey(s.getFlag))
	v1.PUT("/environments/:env/flags/:key", s.withKey(s.putFlag))
	v1.PATCH("/environments/:env/flags/:key", s.withKey(s.patchFlag))
	v1.DELETE("/environments/:env/flags/:key", s.withKey(s.deleteFlag))
	v1.GET("/environments/:env/flagset", s.withKey(s.exportFlagset))
	v1.PUT("/environments/:env/flagset", s.withKey(s.importFlagset))
	v1.GET("/environments/:env/audit", s.withKey(s.listAudit))
	v1.GET("/environments/:env/stream", s.withKey(s.streamFlags))
	v1.POST("/environments/:env/events", s.withKey(s.postEvents))
	v1.POST("/keys", s.withKey(s.createKey))
	v1.GET("/keys", s.withKey(s.listKeys))
	v1.DELETE("/keys/:id", s.withKey(s.revokeKey))
	s.analysisRoutes(v1)
	s.rolloutRoutes(v1)
	s.experimentRoutes(v1)
	v1.GET("/openapi.json", s.openAPI)

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	metricsHandler := promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg})
	e.GET("/metrics", echo.WrapHandler(metricsHandler))
	s.extraErr = s.mountExtra(e, s.extra)
	s.routePaths = map[string]bool{}
	for _, r := range e.Routes() {
		s.routePaths[r.Path] = true
	}
	return e
}

// pathParam returns a route parameter, unescaped (echo leaves escapes in).
func pathParam(c echo.Context, name string) (string, error) {
	raw := c.Param(name)
	if !strings.Contains(raw, "%") {
		return raw, nil
	}
	v, err := url.PathUnescape(raw)
	if err != nil {
		return "", badRequest(name, "is not a valid URL path segment")
	}
	return v, nil
}

func (s *Server) getBuf() *[]byte { return s.bufPool.Get().(*[]byte) }

func (s *Server) putBuf(b *[]byte) {
	if cap(*b) > 1<<20 {
		return // do not keep unusually large buffers
	}
	*b = (*b)[:0]
	s.bufPool.Put(b)
}
