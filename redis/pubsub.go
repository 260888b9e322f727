package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/flagpole/flagpole/flags"
)

// idleProbe is how long Subscribe waits for traffic before it pings the
// subscription connection to find out whether it is still alive.
const idleProbe = 15 * time.Second

// Subscribe calls fn for every change published by any store sharing this
// Redis and prefix, until ctx ends; it then returns ctx.Err(). After each
// (re)subscription, once Redis has confirmed it, fn is called with Resync
// set, so changes missed while disconnected are caught by re-reading. A lost
// connection is re-established by itself with a capped backoff. fn runs on
// Subscribe's goroutine, one call at a time. A deletion arrives as a Change
// with Version 0. If the store is closed, Subscribe returns a wrapped
// flags.ErrUnavailable.
func (s *Store) Subscribe(ctx context.Context, fn func(flags.Change)) error {
	backoff := 50 * time.Millisecond
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.closed.Load() {
			return errClosed
		}
		confirmed, err := s.subscribeOnce(ctx, fn)
		if err := ctx.Err(); err != nil {
			return err
		}
		if confirmed {
			backoff = 50 * time.Millisecond
		}
		s.log.Warn("redis subscription lost; reconnecting", "error", translate("subscribe", err), "retryIn", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// subscribeOnce runs one subscription connection until it fails; confirmed
// says whether Redis ever confirmed the subscription on it.
func (s *Store) subscribeOnce(ctx context.Context, fn func(flags.Change)) (confirmed bool, err error) {
	ps := s.rdb.Subscribe(ctx)
	defer ps.Close()
	// A read blocks regardless of ctx cancellation; closing unblocks it.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	if err := ps.Subscribe(ctx, s.keys.changes()); err != nil {
		return false, err
	}
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, idleProbe)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
				if pinged {
					return confirmed, fmt.Errorf("no answer to a ping in %s", idleProbe)
				}
				// Quiet channel: a ping proves the connection alive (its pong
				// arrives as a message) or fails and forces a reconnect.
				if err := ps.Ping(ctx); err != nil {
					return confirmed, err
				}
				pinged = true
				continue
			}
			return confirmed, err
		}
		pinged = false
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" && m.Channel == s.keys.changes() {
				confirmed = true
				fn(flags.Change{Resync: true})
			}
		case *goredis.Message:
			if c, ok := parseChange(m.Payload); ok {
				fn(c)
			} else {
				s.log.Warn("ignoring a malformed change message", "channel", m.Channel)
			}
		case *goredis.Pong:
		}
	}
}

// parseChange decodes "VERSION ENV".
func parseChange(p string) (flags.Change, bool) {
	vs, env, ok := strings.Cut(p, " ")
	v, err := strconv.ParseInt(vs, 10, 64)
	if !ok || err != nil || v < 0 || env == "" {
		return flags.Change{}, false
	}
	return flags.Change{Env: env, Version: v}, true
}
