package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-feature/go-sdk/openfeature"

	"github.com/flagpole/flagpole/api/ofrep"
	"github.com/flagpole/flagpole/flags"
)

// maxResponse bounds an OFREP response body.
const maxResponse = 1 << 20

// remoteClient evaluates flags with OFREP requests.
type remoteClient struct {
	p   *Provider
	now func() time.Time
	// retryAt is when a 429's Retry-After ends (Unix nanoseconds); until
	// then evaluations answer the caller's default without a request.
	retryAt atomic.Int64
	// healthy is false after a transport or server failure, until a
	// request succeeds; transitions are announced.
	healthy  atomic.Bool
	healthMu sync.Mutex
}

func newRemoteClient(p *Provider) *remoteClient {
	return &remoteClient{p: p, now: time.Now}
}

// remoteResult is one OFREP answer, before conversion to the caller's type.
type remoteResult struct {
	ev  ofrep.Evaluation
	err *openfeature.ResolutionError
}

func failed(code openfeature.ErrorCode, msg string) remoteResult {
	e := resolutionError(code, msg)
	return remoteResult{err: &e}
}

// evaluate asks the server for one flag. It never panics and maps every
// outcome to a result: HTTP 200 a success (an undecodable body:
// PARSE_ERROR); 400 and 404 the OFREP error code in the body (an unknown
// code: GENERAL; none: FLAG_NOT_FOUND for 404, GENERAL for 400); 401 and
// 403 PROVIDER_FATAL; 429 GENERAL, and no request until Retry-After has
// passed (1 s without the header); 5xx, other statuses, transport failures
// and timeouts GENERAL.
func (c *remoteClient) evaluate(ctx context.Context, flag string, flatCtx openfeature.FlattenedContext) remoteResult {
	if until := c.retryAt.Load(); until != 0 {
		if wait := time.Duration(until - c.now().UnixNano()); wait > 0 {
			return failed(openfeature.GeneralCode, fmt.Sprintf("rate limited by Flagpole; retrying in %s", wait.Round(time.Millisecond)))
		}
	}
	body, err := json.Marshal(ofrep.EvaluationRequest{Context: flatCtx})
	if err != nil {
		return failed(openfeature.InvalidContextCode, "the evaluation context cannot be sent as JSON: "+err.Error())
	}
	cfg := &c.p.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.endpoint(ofrep.PathEvaluateFlag+url.PathEscape(flag)), bytes.NewReader(body))
	if err != nil {
		return failed(openfeature.GeneralCode, "building the OFREP request: "+err.Error())
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	cfg.authorize(req)
	resp, err := cfg.client.Do(req)
	if err != nil {
		c.unhealthy(err)
		return failed(openfeature.GeneralCode, "OFREP request failed: "+err.Error())
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		c.unhealthy(err)
		return failed(openfeature.GeneralCode, "reading the OFREP response: "+err.Error())
	}

	switch s := resp.StatusCode; {
	case s == http.StatusOK, s == http.StatusBadRequest, s == http.StatusNotFound:
		c.healthyAgain()
		var ev ofrep.Evaluation
		if err := json.Unmarshal(data, &ev); err != nil {
			if s == http.StatusOK {
				return failed(openfeature.ParseErrorCode, fmt.Sprintf("undecodable OFREP response: %v", err))
			}
			ev = ofrep.Evaluation{} // an error status without OFREP's body: the status decides
		}
		ev.Metadata = primitives(ev.Metadata)
		if s == http.StatusOK && ev.ErrorCode == "" {
			return remoteResult{ev: ev}
		}
		code := openfeature.ErrorCode(ev.ErrorCode)
		switch {
		case code == "" && s == http.StatusNotFound:
			code = openfeature.FlagNotFoundCode
		case code == "":
			code = openfeature.GeneralCode
		}
		msg := ev.ErrorDetails
		if msg == "" {
			msg = resp.Status
		}
		r := failed(code, msg)
		r.ev = ev
		return r
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		err := fmt.Errorf("the server refused the SDK key (%s)", resp.Status)
		c.p.remoteFatal(err)
		return failed(openfeature.ProviderFatalCode, err.Error())
	case s == http.StatusTooManyRequests:
		wait := retryAfter(resp.Header.Get("Retry-After"), c.now())
		if wait == 0 {
			wait = time.Second
		}
		c.retryAt.Store(c.now().Add(wait).UnixNano())
		return failed(openfeature.GeneralCode, fmt.Sprintf("rate limited by Flagpole (429); retrying after %s", wait))
	default:
		msg := fmt.Sprintf("OFREP answered %s: %s", resp.Status, errorMessage(bytes.NewReader(data)))
		if s >= 500 {
			c.unhealthy(errors.New(msg))
		}
		return failed(openfeature.GeneralCode, msg)
	}
}

// primitives drops metadata values OpenFeature metadata cannot carry.
func primitives(m map[string]any) map[string]any {
	for k, v := range m {
		if !primitive(v) {
			delete(m, k)
		}
	}
	return m
}

// remoteTyped evaluates flag remotely and converts the value to T,
// reporting TYPE_MISMATCH (with the caller's default) as the in-process
// engine does.
func remoteTyped[T any](ctx context.Context, c *remoteClient, flag string, def T, flatCtx openfeature.FlattenedContext,
	want flags.ValueType, conv func(any) (T, string)) openfeature.GenericResolutionDetail[T] {
	res := c.evaluate(ctx, flag, flatCtx)
	out := openfeature.GenericResolutionDetail[T]{Value: def}
	out.Reason = openfeature.Reason(res.ev.Reason)
	out.Variant = res.ev.Variant
	if res.ev.Metadata != nil {
		out.FlagMetadata = openfeature.FlagMetadata(res.ev.Metadata)
	}
	if res.err != nil {
		out.ResolutionError = *res.err
		out.Reason = openfeature.ErrorReason
		return out
	}
	if res.ev.Value == nil {
		return out // code default or DISABLED: the caller's default
	}
	v, mismatch := conv(res.ev.Value)
	if mismatch != "" {
		out.ResolutionError = openfeature.NewTypeMismatchResolutionError(mismatch)
		out.Reason = openfeature.ErrorReason
		if typeOf(res.ev.Value) != want {
			out.Variant = "" // as the engine, which checks the type before resolving
		}
		return out
	}
	out.Value = v
	return out
}

// typeOf names the type of a decoded JSON value as flags does.
func typeOf(v any) flags.ValueType {
	switch v.(type) {
	case bool:
		return flags.TypeBoolean
	case string:
		return flags.TypeString
	case float64:
		return flags.TypeNumber
	case map[string]any:
		return flags.TypeObject
	}
	return "unknown"
}

func mismatch(v any, want flags.ValueType) string {
	return "flag is of type " + string(typeOf(v)) + ", not " + string(want)
}

func asBool(v any) (bool, string) {
	b, ok := v.(bool)
	if !ok {
		return false, mismatch(v, flags.TypeBoolean)
	}
	return b, ""
}

func asString(v any) (string, string) {
	s, ok := v.(string)
	if !ok {
		return "", mismatch(v, flags.TypeString)
	}
	return s, ""
}

func asFloat(v any) (float64, string) {
	f, ok := v.(float64)
	if !ok {
		return 0, mismatch(v, flags.TypeNumber)
	}
	return f, ""
}

func asInt(v any) (int64, string) {
	f, ok := v.(float64)
	if !ok {
		return 0, mismatch(v, flags.TypeNumber)
	}
	if f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return 0, "value " + strconv.FormatFloat(f, 'g', -1, 64) + " is not an integer"
	}
	return int64(f), ""
}

func asObject(v any) (any, string) {
	if _, ok := v.(map[string]any); !ok {
		return nil, mismatch(v, flags.TypeObject)
	}
	return v, ""
}

// probe checks at start that the server answers and accepts the key,
// retrying with backoff until it does (or refuses the key).
func (c *remoteClient) probe(ctx context.Context) {
	p := c.p
	defer p.wg.Done()
	for attempt := 0; ; attempt++ {
		wait, err := c.probeOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if fe, ok := errors.AsType[*fatalError](err); ok {
			p.announce(p.markFatal(fe))
			return
		}
		if err == nil {
			c.healthy.Store(true)
			p.announce(p.markSynced(false, nil))
			return
		}
		p.mu.Lock()
		p.lastErr = err
		p.mu.Unlock()
		t := time.NewTimer(max(backoff(attempt, p.cfg.backoffMin, p.cfg.backoffMax), wait))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// probeOnce makes one bulk evaluation with an empty context.
func (c *remoteClient) probeOnce(ctx context.Context) (time.Duration, error) {
	cfg := &c.p.cfg
	ctx, cancel := context.WithTimeout(ctx, cfg.requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.endpoint(ofrep.PathEvaluateFlags), bytes.NewReader([]byte(`{"context":{}}`)))
	if err != nil {
		return 0, &fatalError{err}
	}
	req.Header.Set("Content-Type", "application/json")
	cfg.authorize(req)
	resp, err := cfg.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	switch s := resp.StatusCode; {
	case s == http.StatusOK, s == http.StatusNotModified, s == http.StatusTooManyRequests:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
		return 0, nil
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		return 0, &fatalError{fmt.Errorf("the server refused the SDK key (%s)", resp.Status)}
	default:
		return retryAfter(resp.Header.Get("Retry-After"), time.Now()), fmt.Errorf("OFREP answered %s: %s", resp.Status, errorMessage(resp.Body))
	}
}

// unhealthy records a transport or server failure; the first one after a
// success announces PROVIDER_ERROR (not fatal). It never blocks.
func (c *remoteClient) unhealthy(err error) {
	if !c.healthy.Load() {
		return
	}
	c.healthMu.Lock()
	defer c.healthMu.Unlock()
	if !c.healthy.CompareAndSwap(true, false) {
		return
	}
	p := c.p
	p.mu.Lock()
	p.lastErr = err
	announce := p.initDone && p.st == statusReady
	if announce {
		p.st = statusError
	}
	p.mu.Unlock()
	if announce {
		p.emitNow(openfeature.ProviderError, openfeature.ProviderEventDetails{Message: "Flagpole unreachable: " + err.Error(), ErrorCode: openfeature.GeneralCode})
	}
}

// healthyAgain records a successful request; the first one after a
// failure announces PROVIDER_READY. It never blocks.
func (c *remoteClient) healthyAgain() {
	if c.healthy.Load() {
		return
	}
	c.healthMu.Lock()
	defer c.healthMu.Unlock()
	if !c.healthy.CompareAndSwap(false, true) {
		return
	}
	p := c.p
	p.mu.Lock()
	announce := p.initDone && (p.st == statusError || p.st == statusStale)
	if p.st != statusFatal {
		p.st = statusReady
		p.syncOnce.Do(func() { close(p.synced) })
	}
	p.mu.Unlock()
	if announce {
		p.emitNow(openfeature.ProviderReady, openfeature.ProviderEventDetails{Message: "Flagpole reachable again"})
	}
}

// remoteFatal records a refused key during an evaluation.
func (p *Provider) remoteFatal(err error) {
	for _, ev := range p.markFatal(&fatalError{err}) {
		p.emitNow(ev.EventType, ev.ProviderEventDetails)
	}
}
