// Package sdk is Flagpole's OpenFeature provider for Go applications.
//
//	provider := sdk.NewProvider(sdk.WithURL("https://flags.example.com"), sdk.WithSDKKey(key))
//	if err := openfeature.SetProviderAndWait(provider); err != nil { … }
//	client := openfeature.NewDefaultClient()
//	on, _ := client.BooleanValue(ctx, "new-checkout", false, openfeature.NewEvaluationContext(userID, nil))
//
// In the default in-process mode the provider follows the environment's
// change stream (GET /api/v1/environments/{env}/stream, docs/streams.md),
// compiles each flag set with package flags and evaluates locally, without
// I/O. It emits PROVIDER_READY once the first flag set has arrived,
// PROVIDER_CONFIGURATION_CHANGED with the changed flag keys on every
// change, PROVIDER_STALE when the stream drops (it keeps serving the last
// good flags and reconnects with jittered exponential backoff), READY again
// after the resync, and PROVIDER_ERROR with PROVIDER_FATAL when the server
// refuses the key (401/403). A bootstrap flag file, or an opt-in cache of
// the last flag set on disk, lets an application start when Flagpole is
// unreachable; with no URL the provider runs offline from the file.
//
// In remote mode ([WithRemoteEvaluation]) every evaluation is an OFREP
// request; OFREP's status and error codes map to OpenFeature's, and 429's
// Retry-After is honoured by answering from the caller's default until then.
//
// Tracking ([Provider.Track]) and exposures (a provider hook recording
// flag, variant and targeting key, once per window, for experiment flags:
// those whose metadata has "experiment", see [ExperimentMetadataKey]) are
// queued in bounded memory and sent in batches to POST
// /api/v1/environments/{env}/events by a background goroutine; evaluation
// never waits on I/O. Shutdown flushes the queue and stops every goroutine.
// In remote mode the hook is off: the server records the exposures of the
// OFREP evaluations it answers.
//
// The package imports only package flags, package api/ofrep and the
// OpenFeature SDK, so that an application inherits nothing of the server.
package sdk

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/open-feature/go-sdk/openfeature"
)

// Name is the provider's name in OpenFeature metadata and events.
const Name = "flagpole"

// status is the provider's state as it reports it through events.
type status int

const (
	statusNotReady status = iota
	statusReady
	statusStale
	statusError
	statusFatal
)

// Provider is Flagpole's OpenFeature provider. It implements
// openfeature.FeatureProvider, StateHandler, ContextAwareStateHandler,
// EventHandler and Tracker. Create it with [NewProvider]; it starts
// working at Init and stops at Shutdown, after which it cannot be
// restarted.
type Provider struct {
	cfg    config
	cfgErr error
	log    *slog.Logger

	events  chan openfeature.Event
	current atomic.Pointer[flagState] // in-process mode
	remote  *remoteClient             // remote mode
	track   *tracker                  // nil when offline
	hooks   []openfeature.Hook

	mu       sync.Mutex
	started  bool
	shut     bool
	initDone bool // Init has returned: transitions are now announced as events
	st       status
	live     bool  // the stream is connected and the flags are current
	lastErr  error // the last sync failure, for Init's error
	synced   chan struct{}
	syncOnce sync.Once
	fatal    chan struct{}
	fatalErr error

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var (
	_ openfeature.FeatureProvider          = (*Provider)(nil)
	_ openfeature.ContextAwareStateHandler = (*Provider)(nil)
	_ openfeature.EventHandler             = (*Provider)(nil)
	_ openfeature.Tracker                  = (*Provider)(nil)
)

// errShutDown is Init's error after Shutdown.
var errShutDown = errors.New("the provider was shut down")

// NewProvider returns a provider configured by opts. It does no I/O and
// starts nothing; an invalid configuration is reported by Init as a fatal
// ProviderInitError naming the option.
func NewProvider(opts ...Option) *Provider {
	cfg, err := newConfig(opts)
	p := &Provider{
		cfg:    cfg,
		cfgErr: err,
		log:    cfg.logger,
		events: make(chan openfeature.Event, 64),
		synced: make(chan struct{}),
		fatal:  make(chan struct{}),
	}
	if err != nil {
		return p
	}
	if cfg.remote {
		p.remote = newRemoteClient(p)
	}
	if cfg.base != nil {
		p.track = newTracker(&p.cfg)
		if cfg.exposureWindow > 0 && !cfg.remote { // remote: the server records OFREP exposures
			p.hooks = []openfeature.Hook{exposureHook{t: p.track}}
		}
	}
	return p
}

// Metadata names the provider.
func (p *Provider) Metadata() openfeature.Metadata { return openfeature.Metadata{Name: Name} }

// Hooks returns the exposure hook, unless exposures are disabled, the
// provider is offline or it evaluates remotely (the server records those
// exposures).
func (p *Provider) Hooks() []openfeature.Hook { return p.hooks }

// EventChannel is where the provider announces state changes after Init
// has returned (Init's own outcome is announced by the OpenFeature SDK).
// The SDK drains it; a program using the provider without the SDK must
// drain it too, or the flag-set updates it announces wait for it (they are
// already served by then).
func (p *Provider) EventChannel() <-chan openfeature.Event { return p.events }

// Init starts the provider and waits up to the init timeout for the first
// flag set (see InitWithContext).
func (p *Provider) Init(evalCtx openfeature.EvaluationContext) error {
	return p.InitWithContext(context.Background(), evalCtx)
}

// InitWithContext starts the provider and waits until the first flag set
// has arrived (remote mode: until the server has answered), the init
// timeout passes, or ctx ends. It returns nil when flags can be served:
// from the server or, on timeout, from the bootstrap or cache file. It
// returns a *openfeature.ProviderInitError with code PROVIDER_FATAL for an
// invalid configuration, a refused key (401/403) or a provider already
// shut down, and with code GENERAL when no flags are available in time;
// in that last case the provider keeps trying and announces READY when
// flags arrive.
func (p *Provider) InitWithContext(ctx context.Context, _ openfeature.EvaluationContext) error {
	if p.cfgErr != nil {
		return &openfeature.ProviderInitError{ErrorCode: openfeature.ProviderFatalCode, Message: "flagpole: invalid configuration: " + p.cfgErr.Error()}
	}
	if err := p.start(); err != nil {
		return &openfeature.ProviderInitError{ErrorCode: openfeature.ProviderFatalCode, Message: "flagpole: " + err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.initTimeout)
	defer cancel()
	p.mu.Lock()
	life := p.ctx.Done()
	p.mu.Unlock()
	select {
	case <-p.synced:
	case <-p.fatal:
	case <-ctx.Done():
	case <-life:
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	p.initDone = true
	switch {
	case p.shut:
		return &openfeature.ProviderInitError{ErrorCode: openfeature.ProviderFatalCode, Message: "flagpole: " + errShutDown.Error()}
	case p.st == statusFatal:
		return &openfeature.ProviderInitError{ErrorCode: openfeature.ProviderFatalCode, Message: "flagpole: " + p.fatalErr.Error()}
	case p.st == statusReady:
		return nil
	case p.current.Load() != nil:
		// Serving the bootstrap or cached flags; the stream keeps trying.
		p.st = statusReady
		p.log.Warn("flagpole: serving bootstrap flags; the server has not answered yet", "err", p.lastErr)
		return nil
	}
	p.st = statusError
	why := "no answer"
	if p.lastErr != nil {
		why = p.lastErr.Error()
	}
	return &openfeature.ProviderInitError{ErrorCode: openfeature.GeneralCode,
		Message: fmt.Sprintf("flagpole: no flag set within %s (%s); still trying", p.cfg.initTimeout, why)}
}

// start launches the provider's goroutines once.
func (p *Provider) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shut {
		return errShutDown
	}
	if p.started {
		return nil
	}
	p.started = true
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if p.remote == nil {
		if err := p.loadLocal(); err != nil {
			if p.cfg.base == nil {
				p.started = false
				return err
			}
			switch {
			case p.cfg.bootstrap == "" && p.cfg.cacheFile == "":
			case p.cfg.bootstrap == "" && errors.Is(err, fs.ErrNotExist):
				p.log.Debug("flagpole: no flag cache yet", "err", err) // first start
			default:
				p.log.Warn("flagpole: no local flags to start from", "err", err)
			}
		}
		if p.cfg.base == nil {
			// Offline: the file is all there is.
			p.st = statusReady
			p.syncOnce.Do(func() { close(p.synced) })
		}
	}
	if p.track != nil {
		p.wg.Add(1)
		go p.track.run(p.ctx, &p.wg)
	}
	if p.cfg.base != nil {
		p.wg.Add(1)
		if p.remote != nil {
			go p.remote.probe(p.ctx)
		} else {
			go p.syncLoop(p.ctx)
		}
	}
	return nil
}

// Shutdown stops the provider (see ShutdownWithContext).
func (p *Provider) Shutdown() { _ = p.ShutdownWithContext(context.Background()) }

// ShutdownWithContext stops every goroutine of the provider, after sending
// the tracked events still queued (each request bounded by the request
// timeout). It returns ctx's error if ctx ends first; the goroutines then
// still stop shortly after. Calling it again does nothing.
func (p *Provider) ShutdownWithContext(ctx context.Context) error {
	p.mu.Lock()
	if p.shut {
		p.mu.Unlock()
		return nil
	}
	p.shut = true
	cancel := p.cancel
	p.mu.Unlock()
	if cancel == nil {
		return nil // never started
	}
	cancel()
	done := make(chan struct{})
	go func() {
		p.wg.Wait()
		if p.cfg.ownClient {
			p.cfg.client.CloseIdleConnections()
		}
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// emit announces an event, waiting for the SDK to take it unless the
// provider is shutting down. Only the provider's own goroutines call it.
func (p *Provider) emit(t openfeature.EventType, d openfeature.ProviderEventDetails) {
	select {
	case p.events <- openfeature.Event{ProviderName: Name, EventType: t, ProviderEventDetails: d}:
	case <-p.ctx.Done():
	}
}

// emitNow announces an event without waiting (from an evaluation); with a
// full channel the event is dropped and logged.
func (p *Provider) emitNow(t openfeature.EventType, d openfeature.ProviderEventDetails) {
	select {
	case p.events <- openfeature.Event{ProviderName: Name, EventType: t, ProviderEventDetails: d}:
	default:
		p.log.Warn("flagpole: event channel full; dropped an event", "event", t)
	}
}

// markSynced records a successful sync and returns the events it calls for
// (none while Init is still waiting: its outcome is the announcement).
func (p *Provider) markSynced(hadFlags bool, changed []string) []openfeature.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	prev := p.st
	p.live, p.lastErr = true, nil
	if p.st == statusFatal {
		return nil
	}
	p.st = statusReady
	p.syncOnce.Do(func() { close(p.synced) })
	if !p.initDone {
		return nil
	}
	var out []openfeature.Event
	if prev != statusReady {
		out = append(out, event(openfeature.ProviderReady, "flag set in sync with Flagpole", nil))
	}
	if hadFlags && len(changed) > 0 {
		out = append(out, event(openfeature.ProviderConfigChange, "flags changed", changed))
	}
	return out
}

// markDown records that the stream is down; it returns STALE when the
// flags were current until now.
func (p *Provider) markDown(err error) []openfeature.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastErr = err
	wasLive := p.live
	p.live = false
	if !p.initDone || !wasLive || p.st != statusReady {
		return nil
	}
	p.st = statusStale
	return []openfeature.Event{event(openfeature.ProviderStale, "lost the change stream; serving the last flags: "+err.Error(), nil)}
}

// markFatal records a refused key; it returns PROVIDER_ERROR (fatal) once
// Init has returned, and releases a waiting Init otherwise.
func (p *Provider) markFatal(err error) []openfeature.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.st == statusFatal {
		return nil
	}
	p.st, p.live, p.fatalErr, p.lastErr = statusFatal, false, err, err
	close(p.fatal)
	if !p.initDone {
		return nil
	}
	ev := event(openfeature.ProviderError, err.Error(), nil)
	ev.ErrorCode = openfeature.ProviderFatalCode
	return []openfeature.Event{ev}
}

func event(t openfeature.EventType, msg string, changed []string) openfeature.Event {
	return openfeature.Event{ProviderName: Name, EventType: t,
		ProviderEventDetails: openfeature.ProviderEventDetails{Message: msg, FlagChanges: changed}}
}

// announce sends events in order from a provider goroutine.
func (p *Provider) announce(evs []openfeature.Event) {
	for _, ev := range evs {
		p.emit(ev.EventType, ev.ProviderEventDetails)
	}
}
