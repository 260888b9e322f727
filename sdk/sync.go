package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/flagpole/flagpole/api/ofrep"
	"github.com/flagpole/flagpole/flags"
)

// fatalError is a failure that retrying cannot fix (a refused key).
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

var (
	errIdle  = errors.New("the change stream was silent for too long")
	errEnded = errors.New("the server ended the change stream")
)

// syncLoop follows the change stream until ctx ends or the key is refused,
// reconnecting with jittered exponential backoff.
func (p *Provider) syncLoop(ctx context.Context) {
	defer p.wg.Done()
	attempt := 0
	for {
		synced, wait, err := p.streamOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if fe, ok := errors.AsType[*fatalError](err); ok {
			p.log.Error("flagpole: the server refused the key; stopping", "err", fe)
			p.announce(p.markFatal(fe))
			return
		}
		p.log.Warn("flagpole: change stream down; reconnecting", "err", err, "environment", p.cfg.env)
		p.announce(p.markDown(err))
		if synced {
			attempt = 0
		}
		d := max(backoff(attempt, p.cfg.backoffMin, p.cfg.backoffMax), wait)
		attempt++
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// streamOnce runs one connection of the change stream. It reports whether
// the flags were brought in sync, how long the server asked to wait
// (Retry-After), and why the connection ended.
func (p *Provider) streamOnce(ctx context.Context) (synced bool, wait time.Duration, err error) {
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, p.cfg.endpoint(ofrep.StreamPath(p.cfg.env)), nil)
	if err != nil {
		return false, 0, &fatalError{err}
	}
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Cache-Control", "no-cache")
	p.cfg.authorize(req)
	if s := p.current.Load(); s != nil && s.version > 0 {
		req.Header.Set(ofrep.HeaderLastEventID, strconv.FormatInt(s.version, 10))
	}
	idle := time.AfterFunc(p.cfg.idleTimeout, func() { cancel(errIdle) })
	defer idle.Stop()

	resp, err := p.cfg.client.Do(req)
	if err != nil {
		return false, 0, causeOf(rctx, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return false, 0, &fatalError{fmt.Errorf("the server refused the SDK key for environment %q (%s)", p.cfg.env, resp.Status)}
	case resp.StatusCode != http.StatusOK:
		return false, retryAfter(resp.Header.Get("Retry-After"), time.Now()),
			fmt.Errorf("the change stream answered %s: %s", resp.Status, errorMessage(resp.Body))
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return false, 0, fmt.Errorf("the change stream answered with Content-Type %q, not text/event-stream", resp.Header.Get("Content-Type"))
	}

	r := newSSEReader(resp.Body, p.cfg.maxSnapshot, func() { idle.Reset(p.cfg.idleTimeout) })
	for {
		ev, err := r.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errEnded
			}
			return synced, 0, causeOf(rctx, err)
		}
		switch ev.event {
		case ofrep.StreamSnapshot, ofrep.StreamChange:
			if err := p.apply(ev.data); err != nil {
				p.log.Error("flagpole: ignoring a flag set from the stream; serving the last good one", "err", err)
				continue
			}
			synced = true
		case ofrep.StreamResume:
			if err := p.resume(ev.data); err != nil {
				return synced, 0, err
			}
			synced = true
		}
	}
}

// causeOf prefers the cancellation cause of ctx (such as errIdle) to err.
func causeOf(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c
	}
	return err
}

// apply installs the flag set of a snapshot or change message.
func (p *Provider) apply(data []byte) error {
	msg, fast, err := decodeMessage(data)
	if err != nil {
		return fmt.Errorf("undecodable stream message: %w", err)
	}
	if len(msg.Flags) == 0 {
		return fmt.Errorf("stream message for version %d has no flags", msg.Version)
	}
	old := p.current.Load()
	// Recompile reuses every flag whose bytes did not change (Load when
	// there is no previous set): a change costs in proportion to what
	// changed, not to the size of the set.
	var prev *flags.Set
	if old != nil {
		prev = old.set
	}
	set, err := prev.Recompile(msg.Flags)
	if err != nil && fast {
		// The shortcut may have misread the message: encoding/json decides.
		slow, derr := decodeMessageSlow(data)
		if derr != nil {
			return fmt.Errorf("undecodable stream message: %w", derr)
		}
		if len(slow.Flags) == 0 {
			return fmt.Errorf("stream message for version %d has no flags", slow.Version)
		}
		if !bytes.Equal(slow.Flags, msg.Flags) {
			set, err = prev.Recompile(slow.Flags)
		}
		msg = slow
	}
	if err != nil {
		return fmt.Errorf("flag set version %d: %w", msg.Version, err)
	}
	// A change event names the flags changed since the version this
	// stream delivered before it (the hub sends a connected subscriber
	// every version in order or drops it); a snapshot is compared here.
	changed := msg.Changed
	if len(changed) == 0 || old == nil {
		var oldSet *flags.Set
		if old != nil {
			oldSet = old.set
		}
		changed = changedFlags(oldSet, set)
	}
	p.current.Store(newFlagState(set, p.cfg.env, msg.Version, msg.ETag))
	p.saveCache(msg)
	p.announce(p.markSynced(old != nil, changed))
	return nil
}

// resume confirms that the flags held are the server's current ones.
func (p *Provider) resume(data []byte) error {
	var msg ofrep.StreamMessage
	if err := json.Unmarshal(data, &msg); err != nil {
		return fmt.Errorf("undecodable resume message: %w", err)
	}
	s := p.current.Load()
	if s == nil || s.version != msg.Version {
		return fmt.Errorf("the server resumed at version %d, which this provider does not hold", msg.Version)
	}
	if s.etag != "" && msg.ETag != "" && s.etag != msg.ETag {
		// Same version, other content (the environment was recreated, or
		// the cache came from elsewhere): forget the version so that the
		// next connection asks for a snapshot.
		c := *s
		c.version = 0
		p.current.Store(&c)
		return fmt.Errorf("the server's version %d is not the one held (ETag %s, not %s); resyncing", msg.Version, msg.ETag, s.etag)
	}
	p.announce(p.markSynced(true, nil))
	return nil
}

// loadLocal installs the cached or bootstrap flags, preferring the cache.
func (p *Provider) loadLocal() error {
	var errs []error
	if path := p.cfg.cacheFile; path != "" {
		st, err := p.readCache(path)
		if err == nil {
			p.current.Store(st)
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) || p.cfg.bootstrap == "" {
			errs = append(errs, fmt.Errorf("cache file %s: %w", path, err))
		}
	}
	if path := p.cfg.bootstrap; path != "" {
		data, err := os.ReadFile(path)
		var set *flags.Set
		if err == nil {
			set, err = flags.Load(data)
		}
		if err == nil {
			p.current.Store(newFlagState(set, p.cfg.env, 0, ""))
			return nil
		}
		errs = append(errs, fmt.Errorf("bootstrap file %s: %w", path, err))
	}
	if len(errs) == 0 {
		return errors.New("no bootstrap or cache file configured")
	}
	return errors.Join(errs...)
}

// readCache loads a cache file written by saveCache.
func (p *Provider) readCache(path string) (*flagState, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var msg ofrep.StreamMessage
	if err := json.Unmarshal(data, &msg); err != nil {
		return nil, fmt.Errorf("not a flag cache: %w", err)
	}
	if msg.Environment != p.cfg.env {
		return nil, fmt.Errorf("the cache holds environment %q, not %q", msg.Environment, p.cfg.env)
	}
	set, err := flags.Load(msg.Flags)
	if err != nil {
		return nil, err
	}
	return newFlagState(set, msg.Environment, msg.Version, msg.ETag), nil
}

// saveCache writes msg's flag set to the cache file, atomically (a
// temporary file renamed over it). Failures are logged.
func (p *Provider) saveCache(msg ofrep.StreamMessage) {
	path := p.cfg.cacheFile
	if path == "" {
		return
	}
	msg.Environment, msg.Changed = p.cfg.env, nil
	data, err := json.Marshal(msg)
	if err == nil {
		err = writeFileAtomic(path, data)
	}
	if err != nil {
		p.log.Warn("flagpole: could not write the flag cache", "path", path, "err", err)
	}
}

func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// backoff is the delay before reconnection attempt n (from 0): lo doubled
// n times, at most hi, with "equal jitter" (uniform in [d/2, d]).
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 0; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// maxRetryAfter caps what a server may ask a client to wait.
const maxRetryAfter = time.Hour

// retryAfter parses a Retry-After header (seconds or an HTTP date); 0 when
// absent or unusable.
func retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(h, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return min(time.Duration(secs)*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(h); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}

// errorMessage extracts a readable message from an error response body:
// the API's {"error":{"message"}} or OFREP's {"errorDetails"}.
func errorMessage(body io.Reader) string {
	data, _ := io.ReadAll(io.LimitReader(body, 8<<10))
	var v struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
		ErrorDetails string `json:"errorDetails"`
	}
	if json.Unmarshal(data, &v) == nil {
		if v.Error.Message != "" {
			return v.Error.Message
		}
		if v.ErrorDetails != "" {
			return v.ErrorDetails
		}
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return "no details"
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
