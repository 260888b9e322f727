package deploy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/canary"
)

// Backoff is the retry schedule of a failed delivery: the n-th retry waits
// about Base·2^(n−1), capped at Max, with "equal jitter" (half the delay
// fixed, half random) so that deliveries that failed together do not
// retry together. After Attempts attempts the delivery is dead-lettered.
type Backoff struct {
	Base     time.Duration
	Max      time.Duration
	Attempts int
}

// Backoff defaults: about 20 attempts over roughly 8 hours.
const (
	DefaultBackoffBase     = 5 * time.Second
	DefaultBackoffMax      = 30 * time.Minute
	DefaultBackoffAttempts = 20
)

// Delay is the wait after the attempt-th failed attempt (from 1), with
// jitter in [0, 1) choosing where in [d/2, d) it falls.
func (b Backoff) Delay(attempt int, jitter float64) time.Duration {
	d := b.Max
	if attempt < 1 {
		attempt = 1
	}
	if shift := attempt - 1; shift < 62 {
		if step := b.Base << shift; step > 0 && step < b.Max && step>>shift == b.Base {
			d = step
		}
	}
	jitter = min(max(jitter, 0), 1)
	return d/2 + time.Duration(jitter*float64(d/2))
}

// Sender defaults.
const (
	DefaultSendPoll      = time.Second
	DefaultSendTimeout   = 10 * time.Second
	DefaultSendParallel  = 8
	DefaultSendRetention = 7 * 24 * time.Hour
	// maxResponseBody is how much of a receiver's answer is read (and
	// quoted, up to 200 bytes, in the attempt's error).
	maxResponseBody = 4 << 10
)

// SenderConfig configures a Sender. Outbox is required.
type SenderConfig struct {
	// Outbox holds the deliveries; every replica's sender shares it.
	Outbox canary.Outbox
	// Subscriptions are the receivers (see CheckSubscriptions).
	Subscriptions []Subscription
	// Client sends the requests; nil means a client that follows no
	// redirects (a 3xx is a failed attempt). Its own timeout, if any, is
	// kept; Timeout bounds each attempt in any case.
	Client *http.Client
	// Logger receives delivery events; nil discards them.
	Logger *slog.Logger
	// Registerer, when set, receives the sender's metrics.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now. Waiting uses the runtime's
	// timers (tests fake both with testing/synctest).
	Now func() time.Time
	// Jitter returns numbers in [0, 1) for the backoff; nil means
	// math/rand/v2.
	Jitter func() float64
	// Owner names this sender in claims; it must differ between replicas.
	// Default: "sender-" and random hexadecimal digits.
	Owner string
	// Poll is how often the sender looks for due deliveries when not woken
	// by a new notification; default DefaultSendPoll.
	Poll time.Duration
	// Timeout bounds one attempt; default DefaultSendTimeout.
	Timeout time.Duration
	// Lease is how long a claimed delivery stays invisible to other
	// senders; it must exceed Timeout. Default: 3×Timeout.
	Lease time.Duration
	// Parallel is how many attempts run at once; default
	// DefaultSendParallel.
	Parallel int
	// Backoff is the retry schedule; zero fields take the defaults.
	Backoff Backoff
	// Retention is how long notifications whose deliveries have ended are
	// kept for the delivery log; default DefaultSendRetention.
	Retention time.Duration
}

// Sender delivers notifications to webhook subscriptions through a
// persistent outbox: Notify enqueues one delivery per interested
// subscription, and Run claims due deliveries, posts them (signed), and
// records each attempt, retrying failures with exponential backoff and
// jitter until they are delivered or dead-lettered. A sender that stops
// (or dies) loses nothing: another sender, or the same after a restart,
// claims what is due, including deliveries whose claim lapsed. Delivery is
// at least once; receivers deduplicate by the X-Flagpole-Delivery header.
type Sender struct {
	outbox    canary.Outbox
	subs      map[string]Subscription
	order     []Subscription
	client    *http.Client
	log       *slog.Logger
	met       *senderMetrics
	now       func() time.Time
	jitter    func() float64
	owner     string
	poll      time.Duration
	timeout   time.Duration
	lease     time.Duration
	parallel  int
	backoff   Backoff
	retention time.Duration

	wake      chan struct{}
	lastStats time.Time
	lastPrune time.Time
}

// NewSender checks cfg and returns a Sender; call Run to start it. Errors
// name the SenderConfig field, or are CheckSubscriptions' problems, or a
// metrics registration conflict.
func NewSender(cfg SenderConfig) (*Sender, error) {
	if cfg.Outbox == nil {
		return nil, errors.New("deploy: SenderConfig.Outbox is required")
	}
	if err := CheckSubscriptions(cfg.Subscriptions); err != nil {
		return nil, err
	}
	s := &Sender{
		outbox: cfg.Outbox, subs: map[string]Subscription{}, order: cfg.Subscriptions,
		client: cfg.Client, log: cfg.Logger, now: cfg.Now, jitter: cfg.Jitter, owner: cfg.Owner,
		poll: cfg.Poll, timeout: cfg.Timeout, lease: cfg.Lease, parallel: cfg.Parallel,
		backoff: cfg.Backoff, retention: cfg.Retention,
		wake: make(chan struct{}, 1),
	}
	for _, sub := range cfg.Subscriptions {
		s.subs[sub.Name] = sub
	}
	switch {
	case cfg.Poll < 0:
		return nil, fmt.Errorf("deploy: SenderConfig.Poll %v is negative", cfg.Poll)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("deploy: SenderConfig.Timeout %v is negative", cfg.Timeout)
	case cfg.Parallel < 0:
		return nil, fmt.Errorf("deploy: SenderConfig.Parallel %d is negative", cfg.Parallel)
	case cfg.Backoff.Base < 0 || cfg.Backoff.Max < 0 || cfg.Backoff.Attempts < 0:
		return nil, fmt.Errorf("deploy: SenderConfig.Backoff %+v has a negative field", cfg.Backoff)
	case cfg.Retention < 0:
		return nil, fmt.Errorf("deploy: SenderConfig.Retention %v is negative", cfg.Retention)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.jitter == nil {
		s.jitter = mrand.Float64
	}
	if s.owner == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		s.owner = "sender-" + hex.EncodeToString(b[:])
	}
	if s.poll == 0 {
		s.poll = DefaultSendPoll
	}
	if s.timeout == 0 {
		s.timeout = DefaultSendTimeout
	}
	if s.lease == 0 {
		s.lease = 3 * s.timeout
	}
	if s.lease <= s.timeout {
		return nil, fmt.Errorf("deploy: SenderConfig.Lease %v must exceed Timeout %v, or a slow attempt's delivery is claimed twice", s.lease, s.timeout)
	}
	if s.parallel == 0 {
		s.parallel = DefaultSendParallel
	}
	if s.backoff.Base == 0 {
		s.backoff.Base = DefaultBackoffBase
	}
	if s.backoff.Max == 0 {
		s.backoff.Max = max(DefaultBackoffMax, s.backoff.Base)
	}
	if s.backoff.Attempts == 0 {
		s.backoff.Attempts = DefaultBackoffAttempts
	}
	if s.retention == 0 {
		s.retention = DefaultSendRetention
	}
	if s.client == nil {
		s.client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	var err error
	if s.met, err = newSenderMetrics(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("deploy: registering webhook metrics: %w", err)
	}
	return s, nil
}

// Owner is the name this sender claims deliveries under.
func (s *Sender) Owner() string { return s.owner }

// Subscriptions returns the configured subscriptions, in order.
func (s *Sender) Subscriptions() []Subscription { return append([]Subscription(nil), s.order...) }

// Notify enqueues n for every subscription that wants its event and wakes
// the sender. An empty n.ID gets a fresh one and a zero n.Time the current
// time. It returns the notification as enqueued and the names of the
// subscriptions it goes to (none: nothing was stored). Enqueuing an ID that
// is already in the outbox does nothing and is not an error, so callers may
// derive IDs from events to deduplicate. Errors: a *canary.ValidationError
// naming the bad field, the outbox's (wrapped canary.ErrUnavailable).
func (s *Sender) Notify(ctx context.Context, n canary.Notification) (canary.Notification, []string, error) {
	if n.ID == "" {
		n.ID = canary.NewNotificationID(n.Event)
	}
	if n.Time.IsZero() {
		n.Time = s.now()
	}
	n.Time = n.Time.UTC()
	if len(n.Payload) == 0 {
		n.Payload = json.RawMessage("{}")
	}
	if err := canary.CheckNotification(n); err != nil {
		return n, nil, err
	}
	var targets []string
	for _, sub := range s.order {
		if sub.Wants(n.Event) {
			targets = append(targets, sub.Name)
		}
	}
	if len(targets) == 0 {
		return n, nil, nil
	}
	err := s.outbox.Enqueue(ctx, n, targets)
	switch {
	case errors.Is(err, canary.ErrExists):
		return n, targets, nil
	case err != nil:
		s.met.outboxError("enqueue")
		return n, nil, err
	}
	s.met.notified(n.Event)
	s.log.Debug("notification enqueued", "notification", n.ID, "event", n.Event, "targets", targets)
	s.wakeUp()
	return n, targets, nil
}

// wakeUp makes Run look for due deliveries now.
func (s *Sender) wakeUp() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run delivers due notifications until ctx ends, then lets the attempts in
// flight finish (each bounded by Timeout) and returns nil. Outbox failures
// are logged and retried; they never stop it.
func (s *Sender) Run(ctx context.Context) error {
	done := make(chan struct{}, s.parallel) // one signal per finished attempt
	inflight := 0
	backlog := false // the last claim was a full batch: more may be due
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-s.wake:
		case <-done:
			inflight--
			if !backlog {
				continue
			}
		}
		for drained := false; !drained; {
			select {
			case <-done:
				inflight--
			default:
				drained = true
			}
		}
		backlog = true
		if free := s.parallel - inflight; free > 0 {
			claims := s.claim(ctx, free)
			for _, c := range claims {
				inflight++
				wg.Go(func() {
					defer func() { done <- struct{}{} }()
					s.attempt(ctx, c)
				})
			}
			backlog = len(claims) == free
		}
		s.housekeeping(ctx)
		resetTimer(timer, s.poll)
	}
}

func resetTimer(t *time.Timer, d time.Duration) {
	t.Stop()
	select {
	case <-t.C:
	default:
	}
	t.Reset(d)
}

// RunOnce claims up to Parallel due deliveries, attempts them all, and
// returns how many it attempted: one poll of Run, for tools and tests.
// Errors: the outbox's when claiming fails, ctx's when it has ended.
func (s *Sender) RunOnce(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	claims, err := s.outbox.Claim(ctx, s.owner, s.now(), s.lease, s.parallel)
	if err != nil {
		s.met.outboxError("claim")
		return 0, err
	}
	var wg sync.WaitGroup
	for _, c := range claims {
		wg.Go(func() { s.attempt(ctx, c) })
	}
	wg.Wait()
	return len(claims), nil
}

func (s *Sender) claim(ctx context.Context, limit int) []canary.Claim {
	claims, err := s.outbox.Claim(ctx, s.owner, s.now(), s.lease, limit)
	if err != nil {
		if ctx.Err() == nil {
			s.met.outboxError("claim")
			s.log.Warn("could not claim webhook deliveries; retrying", "error", err)
		}
		return nil
	}
	return claims
}

// housekeeping refreshes the queue-depth gauges (at most once per poll)
// and prunes old notifications (hourly).
func (s *Sender) housekeeping(ctx context.Context) {
	now := s.now()
	if now.Sub(s.lastStats) >= s.poll {
		s.lastStats = now
		if st, err := s.outbox.Stats(ctx, now); err == nil {
			s.met.stats(st)
		} else if ctx.Err() == nil {
			s.met.outboxError("stats")
		}
	}
	if now.Sub(s.lastPrune) >= time.Hour {
		s.lastPrune = now
		n, err := s.outbox.Prune(ctx, now.Add(-s.retention), 1000)
		switch {
		case err != nil && ctx.Err() == nil:
			s.met.outboxError("prune")
			s.log.Warn("could not prune old notifications", "error", err)
		case n > 0:
			s.log.Info("pruned old notifications", "count", n, "older_than", s.retention.String())
		}
	}
}

// attempt makes one delivery attempt and records it. The request and the
// record outlive ctx (bounded by the timeout), so a stopping sender
// finishes what it started.
func (s *Sender) attempt(ctx context.Context, c canary.Claim) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	sub, ok := s.subs[c.Delivery.Target]
	a := canary.Attempt{At: s.now()}
	if !ok {
		a.Outcome, a.Error = canary.OutcomeDead, "subscription "+strconv.Quote(c.Delivery.Target)+" is no longer configured"
	} else {
		s.post(actx, sub, c, &a)
	}
	number := c.Delivery.Attempts + 1
	if a.Outcome == canary.OutcomeRetry {
		if number >= s.backoff.Attempts {
			a.Outcome, a.RetryAt = canary.OutcomeDead, time.Time{}
			a.Error = fmt.Sprintf("gave up after %d attempts; last: %s", number, a.Error)
		}
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer rcancel()
	d, err := s.outbox.Record(rctx, c, a)
	log := s.log.With("subscription", c.Delivery.Target, "delivery", c.Delivery.ID, "event", c.Notification.Event, "attempt", number)
	switch {
	case errors.Is(err, canary.ErrLeaseLost):
		s.met.attempt(c.Delivery.Target, resultLost, a.Duration.D())
		log.Warn("webhook attempt not recorded: another sender took the delivery over", "outcome", a.Outcome)
		return
	case err != nil:
		s.met.outboxError("record")
		s.met.attempt(c.Delivery.Target, resultLost, a.Duration.D())
		log.Warn("webhook attempt made but not recorded; it will be retried when the claim lapses", "outcome", a.Outcome, "error", err)
		return
	}
	switch a.Outcome {
	case canary.OutcomeDelivered:
		s.met.attempt(c.Delivery.Target, resultDelivered, a.Duration.D())
		log.Debug("webhook delivered", "status", a.Status, "duration", a.Duration.D().String())
	case canary.OutcomeRetry:
		s.met.attempt(c.Delivery.Target, resultRetry, a.Duration.D())
		log.Info("webhook attempt failed; will retry", "status", a.Status, "error", a.Error, "retry_at", d.NextAt)
	case canary.OutcomeDead:
		s.met.attempt(c.Delivery.Target, resultDead, a.Duration.D())
		log.Warn("webhook delivery given up (dead-lettered)", "status", a.Status, "error", a.Error)
	}
}

// post sends one attempt and fills a's outcome, status, error, duration
// and retry time.
func (s *Sender) post(ctx context.Context, sub Subscription, c canary.Claim, a *canary.Attempt) {
	number := c.Delivery.Attempts + 1
	retry := func(after time.Duration, format string, args ...any) {
		a.Outcome, a.Error = canary.OutcomeRetry, fmt.Sprintf(format, args...)
		delay := s.backoff.Delay(number, s.jitter())
		a.RetryAt = a.At.Add(max(delay, min(after, s.backoff.Max)))
	}
	payload, err := body(sub.Format, c.Notification)
	if err != nil {
		a.Outcome, a.Error = canary.OutcomeDead, "the notification cannot be encoded: "+err.Error()
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sub.URL, bytes.NewReader(payload))
	if err != nil {
		a.Outcome, a.Error = canary.OutcomeDead, "the subscription's URL cannot be used"
		return
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "Flagpole-Webhook/1")
	h.Set("X-Flagpole-Event", string(c.Notification.Event))
	h.Set("X-Flagpole-Delivery", c.Delivery.ID)
	h.Set("X-Flagpole-Attempt", strconv.Itoa(number))
	if sub.Secret != "" {
		h.Set(SignatureHeader, Sign(sub.Secret, s.now(), payload))
	}
	start := s.now()
	resp, err := s.client.Do(req)
	if err != nil {
		a.Duration = canary.Duration(s.now().Sub(start))
		retry(0, "%s", describeSendError(err))
		return
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // let the connection be reused
	resp.Body.Close()
	a.Duration = canary.Duration(s.now().Sub(start))
	a.Status = resp.StatusCode
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		a.Outcome = canary.OutcomeDelivered
	case resp.StatusCode == http.StatusGone:
		a.Outcome, a.Error = canary.OutcomeDead, "the receiver answered 410 Gone: it no longer wants deliveries"+quote(snippet)
	default:
		retry(retryAfter(resp.Header.Get("Retry-After"), a.At), "the receiver answered %d%s", resp.StatusCode, quote(snippet))
	}
}

// describeSendError says why a request failed without the URL (which may
// carry a token).
func describeSendError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return "no answer within the timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	return "could not reach the receiver: " + err.Error()
}

func quote(b []byte) string {
	s := oneLine(string(bytes.ToValidUTF8(b, []byte("?"))), 200)
	if s == "" {
		return ""
	}
	return ": " + strconv.Quote(s)
}

// retryAfter reads a Retry-After header (seconds or an HTTP date); 0 when
// absent or unreadable.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs > 0 {
		return time.Duration(min(secs, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
