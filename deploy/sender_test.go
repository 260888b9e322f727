package deploy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/outboxtest"
	"github.com/flagpole/flagpole/deploy"
	"github.com/flagpole/flagpole/redis"
)

const testSecret = "0123456789abcdef-secret"

// receiver is a webhook receiver that verifies signatures and counts what
// it accepted by delivery ID. While down it refuses every request with
// status (0: the transport fails as if the connection were refused).
type receiver struct {
	t      testing.TB
	secret string
	now    func() time.Time

	mu       sync.Mutex
	down     bool
	status   int
	header   http.Header // extra response headers while down
	got      map[string]int
	bodies   map[string][]byte
	attempts map[string][]string // X-Flagpole-Attempt values by delivery
	requests int
	refused  int
}

func newReceiver(t testing.TB) *receiver {
	return &receiver{t: t, secret: testSecret, now: time.Now, got: map[string]int{}, bodies: map[string][]byte{}, attempts: map[string][]string{}}
}

func (r *receiver) setDown(down bool, status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down, r.status = down, status
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	id := req.Header.Get("X-Flagpole-Delivery")
	r.attempts[id] = append(r.attempts[id], req.Header.Get("X-Flagpole-Attempt"))
	if r.down {
		r.refused++
		for k, v := range r.header {
			w.Header()[k] = v
		}
		w.WriteHeader(r.status)
		_, _ = w.Write([]byte("maintenance <b>window</b>"))
		return
	}
	if r.secret != "" {
		if err := deploy.VerifySignature(r.secret, req.Header.Get(deploy.SignatureHeader), body, r.now(), 0); err != nil {
			r.t.Errorf("delivery %s: signature: %v", id, err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	}
	if req.Header.Get("Content-Type") != "application/json" || req.Header.Get("X-Flagpole-Event") == "" || id == "" {
		r.t.Errorf("delivery %q arrived with headers %v", id, req.Header)
	}
	r.got[id]++
	r.bodies[id] = body
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) delivered() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.got {
		out[k] = v
	}
	return out
}

// transport is an in-process http.RoundTripper: requests go straight to
// the receiver's handler (through httptest.NewRecorder), so that tests in
// a synctest bubble involve no sockets. While the receiver is down with
// status 0 it fails like a refused connection.
type transport struct{ r *receiver }

func (tr transport) RoundTrip(req *http.Request) (*http.Response, error) {
	tr.r.mu.Lock()
	refused := tr.r.down && tr.r.status == 0
	if refused {
		tr.r.requests++
		tr.r.refused++
	}
	tr.r.mu.Unlock()
	if refused {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	}
	rec := httptest.NewRecorder()
	tr.r.ServeHTTP(rec, req)
	return rec.Result(), nil
}

func sub(name, url string) deploy.Subscription {
	return deploy.Subscription{Name: name, URL: url, Secret: testSecret}
}

func newSender(t *testing.T, cfg deploy.SenderConfig) *deploy.Sender {
	t.Helper()
	s, err := deploy.NewSender(cfg)
	if err != nil {
		t.Fatalf("NewSender: %v", err)
	}
	return s
}

func notification(id string, e canary.EventType) canary.Notification {
	return canary.Notification{ID: id, Event: e, Subject: "analysis/" + id, Payload: json.RawMessage(`{"verdict":"fail","score":41.7,"reason":"error rate 3.1x baseline","analysisId":"` + id + `"}`)}
}

func TestSenderDeliversSignedGenericAndSlack(t *testing.T) {
	rcv := newReceiver(t)
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	slack := newReceiver(t)
	slack.secret = ""
	slackSrv := httptest.NewServer(slack)
	defer slackSrv.Close()

	ob := outboxtest.NewMemory()
	reg := prometheus.NewRegistry()
	s := newSender(t, deploy.SenderConfig{
		Outbox:     ob,
		Registerer: reg,
		Subscriptions: []deploy.Subscription{
			sub("ops", srv.URL+"/hooks"),
			{Name: "chat", URL: slackSrv.URL, Format: deploy.FormatSlack, Events: []string{"analysis.*"}},
			{Name: "rollouts-only", URL: srv.URL, Secret: testSecret, Events: []string{"rollout.failed"}},
		},
	})
	n, targets, err := s.Notify(t.Context(), notification("run-1", canary.EventAnalysisCompleted))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(targets, ",") != "ops,chat" {
		t.Errorf("targets = %v, want [ops chat] (the rollout-only subscription filters it out)", targets)
	}
	if n.Time.IsZero() || n.ID != "run-1" {
		t.Errorf("notified %+v", n)
	}
	if got, err := s.RunOnce(t.Context()); err != nil || got != 2 {
		t.Fatalf("RunOnce = %d, %v; want 2 attempts", got, err)
	}
	var generic deploy.GenericBody
	if err := json.Unmarshal(rcv.bodies["run-1/ops"], &generic); err != nil {
		t.Fatalf("generic body %s: %v", rcv.bodies["run-1/ops"], err)
	}
	if generic.ID != "run-1" || generic.Event != canary.EventAnalysisCompleted || generic.Subject != "analysis/run-1" || !strings.Contains(string(generic.Data), `"verdict":"fail"`) {
		t.Errorf("generic body = %+v", generic)
	}
	var msg struct {
		Text   string `json:"text"`
		Blocks []struct {
			Type string `json:"type"`
		} `json:"blocks"`
	}
	if err := json.Unmarshal(slack.bodies["run-1/chat"], &msg); err != nil {
		t.Fatalf("slack body %s: %v", slack.bodies["run-1/chat"], err)
	}
	if !strings.Contains(msg.Text, "analysis.completed analysis/run-1: fail (score 42) — error rate 3.1x baseline") || len(msg.Blocks) != 2 || msg.Blocks[0].Type != "section" {
		t.Errorf("slack message = %+v", msg)
	}
	log, err := ob.Notification(t.Context(), "run-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range log.Deliveries {
		if d.State != canary.DeliveryDelivered || d.Attempts != 1 || d.LastStatus != http.StatusNoContent {
			t.Errorf("delivery %+v", d)
		}
	}
	if got := metricValue(t, reg, "flagpole_webhook_deliveries_total", map[string]string{"subscription": "ops", "result": "delivered"}); got != 1 {
		t.Errorf("delivered counter = %v, want 1", got)
	}
	// Notifying the same ID again changes nothing.
	if _, targets, err := s.Notify(t.Context(), notification("run-1", canary.EventAnalysisCompleted)); err != nil || len(targets) != 2 {
		t.Errorf("repeated Notify = %v, %v", targets, err)
	}
	if got, _ := s.RunOnce(t.Context()); got != 0 {
		t.Errorf("a repeated notification was delivered again (%d attempts)", got)
	}
	// An event nobody wants stores nothing.
	// ops takes every event; chat only analysis.*; rollouts-only only rollout.failed.
	if _, targets, err := s.Notify(t.Context(), canary.Notification{Event: "flag.changed", Payload: json.RawMessage(`{}`)}); err != nil || strings.Join(targets, ",") != "ops" {
		t.Errorf("Notify(flag.changed) targets = %v, %v; want [ops]", targets, err)
	}
	s2 := newSender(t, deploy.SenderConfig{Outbox: ob, Subscriptions: []deploy.Subscription{{Name: "chat", URL: slackSrv.URL, Format: deploy.FormatSlack, Events: []string{"analysis.*"}}}})
	if _, targets, err := s2.Notify(t.Context(), canary.Notification{ID: "nobody", Event: "flag.changed", Payload: json.RawMessage(`{}`)}); err != nil || len(targets) != 0 {
		t.Errorf("Notify of an event nobody wants = %v, %v", targets, err)
	}
	if _, err := ob.Notification(t.Context(), "nobody"); !errors.Is(err, canary.ErrNotFound) {
		t.Errorf("an event nobody wants was stored: %v", err)
	}
}

func TestSenderNotifyValidation(t *testing.T) {
	s := newSender(t, deploy.SenderConfig{Outbox: outboxtest.NewMemory(), Subscriptions: []deploy.Subscription{sub("ops", "http://127.0.0.1:1")}})
	_, _, err := s.Notify(t.Context(), canary.Notification{Event: "Bad Event", Payload: json.RawMessage(`{}`)})
	var ve *canary.ValidationError
	if !errors.As(err, &ve) || ve.Problems[0].Field != "event" {
		t.Errorf("Notify with a bad event = %v, want a validation error naming event", err)
	}
	_, _, err = s.Notify(t.Context(), canary.Notification{Event: canary.EventTest, Payload: json.RawMessage(`[1]`)})
	if !errors.As(err, &ve) || ve.Problems[0].Field != "payload" {
		t.Errorf("Notify with an array payload = %v, want a validation error naming payload", err)
	}
	ob := outboxtest.NewMemory()
	ob.Fail(true)
	s = newSender(t, deploy.SenderConfig{Outbox: ob, Subscriptions: []deploy.Subscription{sub("ops", "http://127.0.0.1:1")}})
	if _, _, err := s.Notify(t.Context(), notification("x", canary.EventTest)); !errors.Is(err, canary.ErrUnavailable) {
		t.Errorf("Notify on a failed outbox = %v, want ErrUnavailable", err)
	}
}

// metricValue returns the value of the counter or gauge name with exactly
// these labels in reg, or 0 when there is none.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metric
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestBackoffDelay(t *testing.T) {
	b := deploy.Backoff{Base: time.Second, Max: time.Minute}
	tests := []struct {
		attempt int
		jitter  float64
		want    time.Duration
	}{
		{1, 0, 500 * time.Millisecond},
		{1, 0.999999, time.Second - 500*time.Nanosecond},
		{2, 0, time.Second},
		{3, 0.5, 3 * time.Second}, // d = 4s: 2s + 1s
		{6, 0, 16 * time.Second},
		{7, 0, 30 * time.Second}, // 64s capped at 60s
		{100, 1, time.Minute},    // no overflow
		{0, 0, 500 * time.Millisecond},
		{1, -3, 500 * time.Millisecond}, // jitter clamped
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("attempt %d jitter %v", tc.attempt, tc.jitter), func(t *testing.T) {
			if got := b.Delay(tc.attempt, tc.jitter); got != tc.want {
				t.Errorf("Delay = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestSenderRetriesThenDeadLetters runs in a synctest bubble: a receiver
// that always answers 503 gets exactly Attempts attempts, spaced by the
// backoff (jitter 0: half the doubling delay), and the delivery ends dead
// with every attempt logged; one answering 410 is dead at once; a
// Retry-After longer than the backoff is honoured.
func TestSenderRetriesThenDeadLetters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rcv := newReceiver(t)
		rcv.setDown(true, http.StatusServiceUnavailable)
		ob := outboxtest.NewMemory()
		s := newSender(t, deploy.SenderConfig{
			Outbox:        ob,
			Subscriptions: []deploy.Subscription{sub("ops", "http://receiver.test/hook")},
			Client:        &http.Client{Transport: transport{rcv}},
			Jitter:        func() float64 { return 0 },
			Backoff:       deploy.Backoff{Base: 2 * time.Second, Max: time.Minute, Attempts: 5},
			Poll:          100 * time.Millisecond,
		})
		start := time.Now()
		if _, _, err := s.Notify(t.Context(), notification("n1", canary.EventRolloutFailed)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- s.Run(ctx) }()
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		log, err := ob.Notification(t.Context(), "n1")
		if err != nil {
			t.Fatal(err)
		}
		if d := log.Deliveries[0]; d.State != canary.DeliveryDead || d.Attempts != 5 || d.LastStatus != 503 {
			t.Fatalf("delivery = %+v, want dead after 5 attempts", d)
		}
		// Waits of 1s, 2s, 4s, 8s (half of 2s·2^(n−1)), each measured from
		// the previous attempt, within a poll interval.
		wantGaps := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
		for i, a := range log.Attempts {
			if a.Number != i+1 {
				t.Errorf("attempt %d has number %d", i, a.Number)
			}
			if i == 0 {
				if a.At.Sub(start) > 100*time.Millisecond {
					t.Errorf("first attempt %v after the notification", a.At.Sub(start))
				}
				continue
			}
			gap := a.At.Sub(log.Attempts[i-1].At)
			if gap < wantGaps[i-1] || gap > wantGaps[i-1]+100*time.Millisecond {
				t.Errorf("attempt %d came %v after the previous, want %v", i+1, gap, wantGaps[i-1])
			}
		}
		last := log.Attempts[len(log.Attempts)-1]
		if last.Outcome != canary.OutcomeDead || !strings.Contains(last.Error, "gave up after 5 attempts") || !strings.Contains(last.Error, "503") {
			t.Errorf("last attempt = %+v", last)
		}
		if got := rcv.requests; got != 5 {
			t.Errorf("receiver saw %d requests, want 5", got)
		}
		if got := strings.Join(rcv.attempts["n1/ops"], ","); got != "1,2,3,4,5" {
			t.Errorf("X-Flagpole-Attempt values = %s", got)
		}

		// 410 Gone: dead at once. Retry-After: honoured.
		rcv.setDown(true, http.StatusGone)
		if _, _, err := s.Notify(t.Context(), notification("gone", canary.EventTest)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if log, _ := ob.Notification(t.Context(), "gone"); log.Deliveries[0].State != canary.DeliveryDead || log.Deliveries[0].Attempts != 1 {
			t.Errorf("410 delivery = %+v, want dead after one attempt", log.Deliveries[0])
		}
		rcv.setDown(true, http.StatusTooManyRequests)
		rcv.mu.Lock()
		rcv.header = http.Header{"Retry-After": {"45"}}
		rcv.mu.Unlock()
		if _, _, err := s.Notify(t.Context(), notification("later", canary.EventTest)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		log, _ = ob.Notification(t.Context(), "later")
		if len(log.Attempts) != 1 || log.Attempts[0].RetryAt.Sub(log.Attempts[0].At) != 45*time.Second {
			t.Errorf("after a 429 with Retry-After: 45, attempts = %+v", log.Attempts)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

// TestSenderReceiverDownForAWhile: the receiver refuses connections for
// 20 minutes (fake time) while 30 notifications to two subscriptions pile
// up; once it is back every delivery arrives exactly once, within one
// backoff cap, and each delivery's log shows the failures then the success.
func TestSenderReceiverDownForAWhile(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rcv := newReceiver(t)
		rcv.setDown(true, 0)
		ob := outboxtest.NewMemory()
		reg := prometheus.NewRegistry()
		s := newSender(t, deploy.SenderConfig{
			Outbox:        ob,
			Registerer:    reg,
			Subscriptions: []deploy.Subscription{sub("a", "http://receiver.test/a"), sub("b", "http://receiver.test/b")},
			Client:        &http.Client{Transport: transport{rcv}},
			Backoff:       deploy.Backoff{Base: time.Second, Max: 2 * time.Minute, Attempts: 100},
			Parallel:      4,
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- s.Run(ctx) }()
		for i := range 30 {
			if _, _, err := s.Notify(t.Context(), notification(fmt.Sprintf("n%02d", i), canary.EventAnalysisCompleted)); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Second)
		}
		time.Sleep(15 * time.Minute)
		synctest.Wait()
		if got := len(rcv.delivered()); got != 0 {
			t.Fatalf("%d delivered while the receiver was down", got)
		}
		st, err := ob.Stats(t.Context(), time.Now())
		if err != nil || st.Pending != 60 || st.Dead != 0 {
			t.Fatalf("stats while down = %+v, %v; want 60 pending, none dead", st, err)
		}
		back := time.Now()
		rcv.setDown(false, 0)
		time.Sleep(2*time.Minute + 2*time.Second) // the backoff cap plus a poll
		synctest.Wait()
		got := rcv.delivered()
		if len(got) != 60 {
			t.Fatalf("delivered %d of 60 within the backoff cap of the receiver's return", len(got))
		}
		for id, n := range got {
			if n != 1 {
				t.Errorf("%s delivered %d times", id, n)
			}
		}
		page, err := ob.Notifications(t.Context(), canary.NotificationQuery{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, nl := range page.Notifications {
			log, _ := ob.Notification(t.Context(), nl.Notification.ID)
			for _, d := range log.Deliveries {
				if d.State != canary.DeliveryDelivered || d.Attempts < 2 {
					t.Errorf("delivery %+v: want delivered after failed attempts", d)
				}
			}
			for i, a := range log.Attempts {
				if i < len(log.Attempts)-2 && (a.Outcome != canary.OutcomeRetry || !strings.Contains(a.Error, "could not reach the receiver")) {
					t.Errorf("%s attempt %d = %+v, want a refused-connection retry", nl.Notification.ID, i, a)
				}
				if a.Outcome == canary.OutcomeDelivered && a.At.Before(back) {
					t.Errorf("%s delivered at %v, before the receiver was back", nl.Notification.ID, a.At)
				}
			}
		}
		if st, _ := ob.Stats(t.Context(), time.Now()); st.Pending != 0 {
			t.Errorf("stats after recovery = %+v", st)
		}
		cancel()
		<-done
		if v := metricValue(t, reg, "flagpole_webhook_deliveries_total", map[string]string{"subscription": "a", "result": "delivered"}); v != 30 {
			t.Errorf("delivered counter for a = %v, want 30", v)
		}
		if v := metricValue(t, reg, "flagpole_webhook_deliveries_total", map[string]string{"subscription": "a", "result": "retry"}); v < 30 {
			t.Errorf("retry counter for a = %v, want at least one per notification", v)
		}
	})
}

// TestSenderTakesOverLapsedClaim: a sender that claimed a delivery and died
// (its claim is never recorded) delays it by one lease; another sender then
// delivers it, and the dead sender's late record is refused.
func TestSenderTakesOverLapsedClaim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rcv := newReceiver(t)
		ob := outboxtest.NewMemory()
		cfg := deploy.SenderConfig{
			Outbox:        ob,
			Subscriptions: []deploy.Subscription{sub("ops", "http://receiver.test/")},
			Client:        &http.Client{Transport: transport{rcv}},
			Timeout:       5 * time.Second,
			Lease:         30 * time.Second,
		}
		s := newSender(t, cfg)
		if _, _, err := s.Notify(t.Context(), notification("n1", canary.EventTest)); err != nil {
			t.Fatal(err)
		}
		dead, err := ob.Claim(t.Context(), "crashed-replica", time.Now(), 30*time.Second, 10)
		if err != nil || len(dead) != 1 {
			t.Fatalf("claim = %v, %v", dead, err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- s.Run(ctx) }()
		time.Sleep(29 * time.Second)
		synctest.Wait()
		if len(rcv.delivered()) != 0 {
			t.Fatal("delivered while another replica's claim held")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := rcv.delivered()["n1/ops"]; got != 1 {
			t.Fatalf("delivered %d times after the claim lapsed, want 1", got)
		}
		if _, err := ob.Record(t.Context(), dead[0], canary.Attempt{At: time.Now(), Outcome: canary.OutcomeDelivered}); !errors.Is(err, canary.ErrLeaseLost) {
			t.Errorf("the crashed replica's late record = %v, want ErrLeaseLost", err)
		}
		cancel()
		<-done
	})
}

func TestSenderDeadLettersRemovedSubscription(t *testing.T) {
	ob := outboxtest.NewMemory()
	if err := ob.Enqueue(t.Context(), canary.Notification{ID: "n", Event: canary.EventTest, Payload: json.RawMessage(`{}`), Time: time.Now()}, []string{"old"}); err != nil {
		t.Fatal(err)
	}
	s := newSender(t, deploy.SenderConfig{Outbox: ob, Subscriptions: []deploy.Subscription{sub("new", "http://127.0.0.1:1")}})
	if n, err := s.RunOnce(t.Context()); err != nil || n != 1 {
		t.Fatalf("RunOnce = %d, %v", n, err)
	}
	log, _ := ob.Notification(t.Context(), "n")
	if d := log.Deliveries[0]; d.State != canary.DeliveryDead || !strings.Contains(d.LastError, `"old" is no longer configured`) {
		t.Errorf("delivery to a removed subscription = %+v", d)
	}
}

// TestSenderReceiverDownRealSockets is the same story over real sockets
// with short backoffs: connections to the receiver's port are refused
// until a server starts listening there; everything is then delivered once.
func TestSenderReceiverDownRealSockets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: connections are refused
	rcv := newReceiver(t)
	ob := outboxtest.NewMemory()
	s := newSender(t, deploy.SenderConfig{
		Outbox:        ob,
		Subscriptions: []deploy.Subscription{sub("ops", "http://"+addr+"/hook")},
		Backoff:       deploy.Backoff{Base: 10 * time.Millisecond, Max: 80 * time.Millisecond, Attempts: 1000},
		Poll:          10 * time.Millisecond,
		Timeout:       2 * time.Second,
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	for i := range 10 {
		if _, _, err := s.Notify(t.Context(), notification(fmt.Sprintf("n%d", i), canary.EventTest)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "every delivery to fail at least twice", func() bool {
		page, _ := ob.Notifications(t.Context(), canary.NotificationQuery{})
		for _, n := range page.Notifications {
			if n.Deliveries[0].Attempts < 2 {
				return false
			}
		}
		return len(page.Notifications) == 10
	})
	var srv *httptest.Server
	waitFor(t, 10*time.Second, "the receiver to listen on its old port", func() bool {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		srv = &httptest.Server{Listener: l, Config: &http.Server{Handler: rcv}}
		srv.Start()
		return true
	})
	defer srv.Close()
	waitFor(t, 10*time.Second, "all ten to be delivered", func() bool { return len(rcv.delivered()) == 10 })
	cancel()
	<-done
	for id, n := range rcv.delivered() {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
}

// TestSenderRestartDrainsOutbox: a sender enqueues while the receiver is
// down and the process stops; a new sender (another owner) over the same
// embedded store, reopened from its data directory, delivers everything.
func TestSenderRestartDrainsOutbox(t *testing.T) {
	dir := t.TempDir()
	rcv := newReceiver(t)
	rcv.setDown(true, http.StatusBadGateway)
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	cfg := deploy.SenderConfig{
		Subscriptions: []deploy.Subscription{sub("ops", srv.URL)},
		Backoff:       deploy.Backoff{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond, Attempts: 100},
		Poll:          10 * time.Millisecond,
	}
	store, err := redis.OpenEmbedded(t.Context(), dir, redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Outbox = store
	first := newSender(t, cfg)
	for i := range 5 {
		if _, _, err := first.Notify(t.Context(), notification(fmt.Sprintf("n%d", i), canary.EventTest)); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := first.RunOnce(t.Context()); err != nil || n != 5 {
		t.Fatalf("first RunOnce = %d, %v", n, err)
	}
	if err := store.Close(); err != nil { // the process stops
		t.Fatal(err)
	}
	if len(rcv.delivered()) != 0 {
		t.Fatal("delivered while the receiver was down")
	}
	rcv.setDown(false, 0)

	store2, err := redis.OpenEmbedded(t.Context(), dir, redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store2.Close()
	cfg.Outbox = store2
	second := newSender(t, cfg)
	if second.Owner() == first.Owner() {
		t.Fatal("two senders share an owner name")
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error)
	go func() { done <- second.Run(ctx) }()
	waitFor(t, 10*time.Second, "the new sender to deliver all five", func() bool { return len(rcv.delivered()) == 5 })
	cancel()
	<-done
	for i := range 5 {
		log, err := store2.Notification(t.Context(), fmt.Sprintf("n%d", i))
		if err != nil {
			t.Fatal(err)
		}
		d := log.Deliveries[0]
		if d.State != canary.DeliveryDelivered || d.Attempts != 2 || log.Attempts[0].Status != http.StatusBadGateway || log.Attempts[1].Status != http.StatusNoContent {
			t.Errorf("n%d: delivery %+v, attempts %+v", i, d, log.Attempts)
		}
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNewSenderRejectsBadConfig(t *testing.T) {
	ob := outboxtest.NewMemory()
	tests := []struct {
		name string
		cfg  deploy.SenderConfig
		want string
	}{
		{"no outbox", deploy.SenderConfig{}, "Outbox is required"},
		{"lease not above timeout", deploy.SenderConfig{Outbox: ob, Timeout: time.Minute, Lease: time.Minute}, "must exceed Timeout"},
		{"negative poll", deploy.SenderConfig{Outbox: ob, Poll: -1}, "Poll"},
		{"negative backoff", deploy.SenderConfig{Outbox: ob, Backoff: deploy.Backoff{Attempts: -1}}, "Backoff"},
		{"bad subscription", deploy.SenderConfig{Outbox: ob, Subscriptions: []deploy.Subscription{{Name: "x", URL: "ftp://h"}}}, "webhooks[0].url"},
		{"duplicate names", deploy.SenderConfig{Outbox: ob, Subscriptions: []deploy.Subscription{sub("x", "http://a"), sub("x", "http://b")}}, "webhooks[1].name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := deploy.NewSender(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewSender = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}
