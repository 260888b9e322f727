package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync"

	"github.com/flagpole/flagpole/api/ofrep"
	"github.com/flagpole/flagpole/auth"
)

// Change streams. The hub (package api/stream) does the streaming; the
// server authenticates subscribers, answers with the flag sets it serves,
// and publishes to the hub whenever loadSnapshot or removeEnv changes what
// it serves. Publishing runs on a goroutine of its own (started by Run), so
// that writes and syncs never wait for the hub, and bursts of changes to one
// environment coalesce into one publication of the newest version.

// streamFeed is the set of environments changed since the publisher last
// looked.
type streamFeed struct {
	mu      sync.Mutex
	pending map[string]struct{}
	wake    chan struct{}
}

func newStreamFeed() *streamFeed {
	return &streamFeed{pending: map[string]struct{}{}, wake: make(chan struct{}, 1)}
}

// streamChanged tells the publisher that env's served set changed (or that
// env is gone). It never blocks.
func (s *Server) streamChanged(env string) {
	f := s.feed
	f.mu.Lock()
	f.pending[env] = struct{}{}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// startStreams starts the publisher; the returned function stops it and
// closes the hub, ending every stream.
func (s *Server) startStreams(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.publishLoop(ctx)
	}()
	return func() {
		cancel()
		<-done
		s.hub.Close()
	}
}

// publishLoop publishes each changed environment's served set until ctx
// ends.
func (s *Server) publishLoop(ctx context.Context) {
	published := map[string]*envState{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.feed.wake:
		}
		s.feed.mu.Lock()
		envs := s.feed.pending
		s.feed.pending = make(map[string]struct{}, len(envs))
		s.feed.mu.Unlock()
		for env := range envs {
			st, prev := s.env(env), published[env]
			switch {
			case st == nil:
				s.hub.Remove(env)
				delete(published, env)
			case st == prev:
			default:
				if prev != nil && st.version <= prev.version {
					// Deleted and created again: its versions start over,
					// and the hub ignores versions it has seen.
					s.hub.Remove(env)
				}
				s.hub.Publish(env, st.version, st.streamETag(), st.doc)
				published[env] = st
			}
		}
	}
}

// streamETag is the validator the change stream gives this version:
// `"<version>-<first 16 hex digits of the set's SHA-256>"`. The content
// part matters when an environment is deleted and created again: its
// versions start over, so a reconnecting SDK may hold the same version
// number with other flags, and only the content tells them apart (the SDK
// then resyncs instead of resuming).
func (e *envState) streamETag() string {
	h := e.hash
	if len(h) > 16 {
		h = h[:16]
	}
	return `"` + strconv.FormatInt(e.version, 10) + "-" + h + `"`
}

// CloseStreams ends every change stream and makes new ones answer 503, so
// that a graceful http.Server.Shutdown is not held up by them (register it
// with http.Server.RegisterOnShutdown); subscribers reconnect to another
// replica. Every other route keeps working. Run's end closes them too.
// CloseStreams is idempotent and returns once every stream has ended.
func (s *Server) CloseStreams() { s.hub.Close() }

// streamFlags serves GET /api/v1/environments/{env}/stream: the
// environment's flag set as Server-Sent Events (docs/streams.md). Any key
// that may evaluate the environment may follow it: its sdk key, an editor
// key of it, or an admin key.
func (s *Server) streamFlags(rc *reqCtx, k auth.Key) error {
	env, err := envParam(rc)
	if err != nil {
		return err
	}
	if !k.CanEvaluate(env) {
		if k.Role == auth.RoleSDK {
			return forbidden("this sdk key belongs to another environment")
		}
		return forbidden("this key may not read environment " + fmt.Sprintf("%q", env))
	}
	if !s.ready.Load() {
		rc.Response().Header().Set("Retry-After", "1")
		return newError(http.StatusServiceUnavailable, codeUnavailable, "flag sets are still loading; retry shortly")
	}
	s.hub.Serve(rc.Response(), rc.Request(), env, func() (int64, string, []byte, bool) {
		st := s.env(env)
		if st == nil {
			return 0, "", nil, false
		}
		return st.version, st.streamETag(), st.doc, true
	})
	return nil
}

// appendEventStreams appends the "eventStreams" member of env's bulk
// evaluation responses (OFREP ADR 0008): the change stream, relative to
// the OFREP server's origin. It is part of the precomputed bulk tail.
func appendEventStreams(b []byte, env string) []byte {
	b = append(b, `,"eventStreams":[{"type":"sse","endpoint":{"requestUri":`...)
	b = appendString(b, ofrep.StreamPath(env))
	return append(b, `}}]`...)
}
