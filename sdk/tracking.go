package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/flagpole/flagpole/api/ofrep"
)

// tracker queues tracking events and exposures in bounded memory and sends
// them in batches from its own goroutine.
type tracker struct {
	cfg *config
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	queue   []item
	dropped int // events refused because the queue was full, since the last report
	seen    map[exposureKey]time.Time
	stopped bool
	kick    chan struct{}
}

// item is one queued event: an encoded Track event, or an exposure encoded
// when sent (exposures are recorded during evaluations, so they are kept
// as cheap as possible).
type item struct {
	raw []byte
	exp exposure
}

type exposure struct {
	key exposureKey
	at  time.Time
}

type exposureKey struct{ flag, variant, targetingKey string }

func newTracker(cfg *config) *tracker {
	return &tracker{
		cfg:  cfg,
		log:  cfg.logger,
		now:  time.Now,
		seen: map[exposureKey]time.Time{},
		kick: make(chan struct{}, 1),
	}
}

// Track queues a tracking event for POST /api/v1/environments/{env}/events:
// the name, the context's targeting key and attributes, the details' value
// (when not zero) and attributes, and the time. It never blocks on I/O. An
// event is dropped, and the drop logged, when the name is empty, when the
// context or details cannot be encoded as JSON, when the queue is full, when
// the provider is offline or after Shutdown.
func (p *Provider) Track(_ context.Context, name string, evalCtx openfeature.EvaluationContext, details openfeature.TrackingEventDetails) {
	t := p.track
	if t == nil {
		p.log.Debug("flagpole: offline; tracking event dropped", "event", name)
		return
	}
	if name == "" {
		p.log.Warn("flagpole: tracking event without a name dropped")
		return
	}
	ev := ofrep.TrackingEvent{Name: name, TargetingKey: evalCtx.TargetingKey(), Time: t.now().UTC()}
	if attrs := evalCtx.Attributes(); len(attrs) > 0 {
		ev.Context = attrs
	}
	if v := details.Value(); v != 0 {
		ev.Value = &v
	}
	if attrs := details.Attributes(); len(attrs) > 0 {
		ev.Details = attrs
	}
	raw, err := json.Marshal(ev)
	if err != nil {
		p.log.Warn("flagpole: tracking event dropped: its context or details cannot be encoded as JSON", "event", name, "err", err)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addLocked(item{raw: raw})
}

// expose records that targetingKey saw flag's variant, once per window.
func (t *tracker) expose(flag, variant, targetingKey string) {
	now := t.now()
	k := exposureKey{flag, variant, targetingKey}
	t.mu.Lock()
	defer t.mu.Unlock()
	if last, ok := t.seen[k]; ok && now.Sub(last) < t.cfg.exposureWindow {
		return
	}
	if len(t.seen) >= t.cfg.maxPending {
		t.pruneLocked(now)
	}
	t.seen[k] = now
	t.addLocked(item{exp: exposure{key: k, at: now}})
}

// pruneLocked forgets exposures older than the window; if that frees too
// little, it forgets all (de-duplication is best effort, memory is bounded).
func (t *tracker) pruneLocked(now time.Time) {
	for k, at := range t.seen {
		if now.Sub(at) >= t.cfg.exposureWindow {
			delete(t.seen, k)
		}
	}
	if len(t.seen) >= t.cfg.maxPending*3/4 {
		clear(t.seen)
	}
}

// addLocked queues it, or drops it when the queue is full or the tracker
// has stopped, and wakes the sender once a batch is ready.
func (t *tracker) addLocked(it item) {
	if t.stopped || len(t.queue) >= t.cfg.maxPending {
		t.dropped++
		return
	}
	t.queue = append(t.queue, it)
	if len(t.queue) >= t.cfg.batchSize {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
}

// run sends batches every flush interval or when one is full, until ctx
// ends; then it sends what is left (bounded by the request timeout) and
// stops accepting events.
func (t *tracker) run(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	tick := time.NewTicker(t.cfg.flushInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), t.cfg.requestTimeout)
			t.flush(fctx)
			cancel()
			t.mu.Lock()
			t.stopped = true
			lost := len(t.queue)
			t.queue = nil
			t.mu.Unlock()
			if lost > 0 {
				t.log.Warn("flagpole: tracking events not sent at shutdown", "count", lost)
			}
			return
		case <-tick.C:
		case <-t.kick:
		}
		t.flush(ctx)
	}
}

// flush sends every queued event, a batch at a time. A batch that fails
// for a reason that may pass (transport, 429, 5xx) goes back to the front
// of the queue for the next flush; one the server rejects is dropped.
func (t *tracker) flush(ctx context.Context) {
	for {
		t.mu.Lock()
		if t.dropped > 0 {
			t.log.Warn("flagpole: tracking queue full; events dropped", "count", t.dropped)
			t.dropped = 0
		}
		n := min(len(t.queue), t.cfg.batchSize)
		batch := make([]item, n)
		copy(batch, t.queue)
		rest := copy(t.queue, t.queue[n:])
		clear(t.queue[rest:])
		t.queue = t.queue[:rest]
		t.mu.Unlock()
		if n == 0 {
			return
		}
		retry, err := t.send(ctx, batch)
		if err == nil {
			continue
		}
		if !retry {
			t.log.Warn("flagpole: the server rejected tracking events; dropped", "count", n, "err", err)
			continue
		}
		t.log.Debug("flagpole: sending tracking events failed; will retry", "count", n, "err", err)
		t.mu.Lock()
		room := max(t.cfg.maxPending-len(t.queue), 0)
		keep := batch[:min(n, room)]
		t.dropped += n - len(keep)
		t.queue = append(keep, t.queue...)
		t.mu.Unlock()
		return
	}
}

// send posts one batch; retry says whether a failure may pass.
func (t *tracker) send(ctx context.Context, batch []item) (retry bool, err error) {
	body := []byte(`{"events":[`)
	for i, it := range batch {
		if i > 0 {
			body = append(body, ',')
		}
		raw := it.raw
		if raw == nil {
			raw, err = json.Marshal(ofrep.TrackingEvent{
				Name:         ofrep.ExposureEvent,
				TargetingKey: it.exp.key.targetingKey,
				Details:      map[string]any{"flagKey": it.exp.key.flag, "variant": it.exp.key.variant},
				Time:         it.exp.at.UTC(),
			})
			if err != nil {
				return false, err
			}
		}
		body = append(body, raw...)
	}
	body = append(body, "]}"...)

	ctx, cancel := context.WithTimeout(ctx, t.cfg.requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.cfg.endpoint(ofrep.EventsPath(t.cfg.env)), bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	t.cfg.authorize(req)
	resp, err := t.cfg.client.Do(req)
	if err != nil {
		return true, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return false, nil
	}
	err = fmt.Errorf("%s: %s", resp.Status, errorMessage(resp.Body))
	return resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500, err
}

// ExperimentMetadataKey is the flag metadata member that marks a flag as
// serving an experiment (its value is the experiment's key): the exposure
// hook records exposures of these flags only.
const ExperimentMetadataKey = "experiment"

// exposureHook records an exposure after each successful evaluation that
// chose a variant of an experiment flag (its metadata has a non-empty
// string "experiment") for a subject with a targeting key.
type exposureHook struct {
	openfeature.UnimplementedHook
	t *tracker
}

// After records the exposure; it never fails an evaluation.
func (h exposureHook) After(_ context.Context, hc openfeature.HookContext, d openfeature.InterfaceEvaluationDetails, _ openfeature.HookHints) error {
	if d.Variant == "" {
		return nil
	}
	if exp, _ := d.FlagMetadata[ExperimentMetadataKey].(string); exp == "" {
		return nil
	}
	tk := hc.EvaluationContext().TargetingKey()
	if tk == "" {
		return nil
	}
	h.t.expose(hc.FlagKey(), d.Variant, tk)
	return nil
}
