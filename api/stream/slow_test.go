package stream

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// pipeWriter is a ResponseWriter for synctest bubbles: every write is
// handed to out, and when block is set each write first waits on it (a
// client that stopped reading).
type pipeWriter struct {
	header http.Header
	out    chan []byte
	block  chan struct{}
}

func newPipeWriter(blocked bool) *pipeWriter {
	w := &pipeWriter{header: http.Header{}, out: make(chan []byte, 1000)}
	if blocked {
		w.block = make(chan struct{})
	}
	return w
}

func (w *pipeWriter) Header() http.Header { return w.header }
func (w *pipeWriter) WriteHeader(int)     {}
func (w *pipeWriter) Flush()              {}
func (w *pipeWriter) Write(b []byte) (int, error) {
	if w.block != nil {
		<-w.block
	}
	w.out <- bytes.Clone(b)
	return len(b), nil
}

// drain returns everything written so far.
func (w *pipeWriter) drain() string {
	var sb strings.Builder
	for {
		select {
		case b := <-w.out:
			sb.Write(b)
		default:
			return sb.String()
		}
	}
}

// serve starts one stream in the bubble and returns a channel closed when
// Serve returns.
func serve(h *Hub, w http.ResponseWriter, ctx context.Context, fs *fakeServer) chan struct{} {
	done := make(chan struct{})
	r := httptest.NewRequest(http.MethodGet, "/api/v1/environments/prod/stream", nil).WithContext(ctx)
	go func() {
		defer close(done)
		h.Serve(w, r, "prod", fs.current)
	}()
	return done
}

func TestSlowSubscriberIsDroppedWithoutSlowingOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, _ := newTestHub(t, Options{Buffer: 2, Retry: -1, Heartbeat: time.Hour})
		fs := &fakeServer{}
		fs.set(1, `"e1"`, docV1)
		slow, fast := newPipeWriter(true), newPipeWriter(false)
		slowDone := serve(h, slow, t.Context(), fs)
		fastDone := serve(h, fast, t.Context(), fs)
		synctest.Wait() // slow is stuck writing its snapshot; fast waits for changes

		for v := int64(2); v <= 6; v++ {
			fs.set(v, `"e"`, docV2)
			h.Publish("prod", v, `"e"`, []byte(docV2)) // would deadlock the bubble if it blocked
			synctest.Wait()                            // the fast reader keeps up; the slow one's queue (2) fills
		}

		got := fast.drain()
		for _, id := range []string{"id: 1\nevent: snapshot", "id: 2\nevent: change", "id: 6\nevent: change"} {
			if !strings.Contains(got, id) {
				t.Errorf("fast subscriber's stream lacks %q:\n%s", id, got)
			}
		}
		if n := testutil.ToFloat64(h.m.drops); n != 1 {
			t.Errorf("drops = %v, want 1", n)
		}
		if n := h.Subscribers("prod"); n != 1 {
			t.Errorf("subscribers = %d, want 1 (the slow one dropped)", n)
		}

		close(slow.block) // the slow client's writes now complete; its stream must end
		synctest.Wait()
		select {
		case <-slowDone:
		default:
			t.Error("the dropped subscriber's Serve did not return")
		}
		select {
		case <-fastDone:
			t.Error("the fast subscriber's stream ended")
		default:
		}
		h.Close()
		<-fastDone
	})
}

func TestHeartbeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, _ := newTestHub(t, Options{Buffer: 2, Retry: -1, Heartbeat: 15 * time.Second})
		fs := &fakeServer{}
		fs.set(1, `"e1"`, docV1)
		live := newPipeWriter(false)
		dead := newPipeWriter(true)
		serve(h, live, t.Context(), fs)
		deadDone := serve(h, dead, t.Context(), fs)
		synctest.Wait()
		live.drain()

		time.Sleep(15*time.Second - time.Millisecond)
		synctest.Wait()
		if got := live.drain(); got != "" {
			t.Errorf("before the interval the stream got %q", got)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if got := live.drain(); got != ": heartbeat\n\n" {
			t.Errorf("at the interval the stream got %q, want one heartbeat comment", got)
		}

		// A client that reads nothing is found by heartbeats alone: its
		// queue (2) fills and the third heartbeat drops it.
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if n := h.Subscribers("prod"); n != 1 {
			t.Errorf("subscribers after the dead client's queue filled = %d, want 1", n)
		}
		close(dead.block)
		synctest.Wait()
		select {
		case <-deadDone:
		default:
			t.Error("the dead client's Serve did not return")
		}
		if got := testutil.ToFloat64(h.m.sent.WithLabelValues("heartbeat")); got < 3 {
			t.Errorf("heartbeats sent = %v, want at least 3", got)
		}
		h.Close()
	})
}

func TestClientGoneEndsServe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, _ := newTestHub(t, Options{Retry: -1})
		fs := &fakeServer{}
		fs.set(1, `"e1"`, docV1)
		ctx, cancel := context.WithCancel(t.Context())
		done := serve(h, newPipeWriter(false), ctx, fs)
		synctest.Wait()
		if h.Subscribers("prod") != 1 {
			t.Fatalf("subscribers = %d, want 1", h.Subscribers("prod"))
		}
		cancel()
		<-done
		if h.Subscribers("prod") != 0 || testutil.ToFloat64(h.m.subscribers) != 0 {
			t.Errorf("after the client left: %d subscribers, gauge %v", h.Subscribers("prod"), testutil.ToFloat64(h.m.subscribers))
		}
		h.Close()
	})
}
