package canary

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// RolloutControllerConfig configures a RolloutController; Service is
// required.
type RolloutControllerConfig struct {
	Service *RolloutService
	// Logger receives rollout events and problems; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means the service's. Waiting uses the
	// runtime's timers (tests fake both with testing/synctest).
	Now func() time.Time
	// Owner names this controller in leases; it must differ between
	// replicas. Default: "rollouts-" and random hexadecimal digits.
	Owner string
	// Poll is how often due rollouts are looked at, and so how late a
	// finished analysis is noticed at most; default DefaultRolloutPoll.
	Poll time.Duration
	// LeaseTTL is how long a rollout's lease lasts unless the controller
	// looks at the rollout again; a replica that dies mid-step delays its
	// rollouts by at most this. Default DefaultRolloutLeaseTTL.
	LeaseTTL time.Duration
	// Parallel is how many rollouts are handled at once; default 8.
	Parallel int
}

// Rollout controller defaults.
const (
	DefaultRolloutPoll     = 200 * time.Millisecond
	DefaultRolloutLeaseTTL = 15 * time.Second
	defaultRolloutParallel = 8
	maxDueRollouts         = 1000
)

// RolloutController drives rollouts: on every poll it takes the due ones
// (pending effects, analysis gates, ended minimum durations, scheduled
// starts), leases each, and moves it on through the Rollout methods and
// the service's effects, writing every change fenced by the lease's token.
// A controller keeps a rollout's lease while it drives it (each look
// extends it) and releases it when the rollout no longer needs driving;
// when a replica dies, its leases lapse after LeaseTTL and another replica
// resumes each rollout where its stored state says, at the same step.
type RolloutController struct {
	svc      *RolloutService
	log      *slog.Logger
	now      func() time.Time
	owner    string
	poll     time.Duration
	ttl      time.Duration
	parallel int

	mu   sync.Mutex
	held map[string]Lease
	down bool
}

// NewRolloutController checks cfg. Errors name the RolloutControllerConfig
// field.
func NewRolloutController(cfg RolloutControllerConfig) (*RolloutController, error) {
	switch {
	case cfg.Service == nil:
		return nil, errors.New("canary: RolloutControllerConfig.Service is required")
	case cfg.Poll < 0:
		return nil, fmt.Errorf("canary: RolloutControllerConfig.Poll %v is negative", cfg.Poll)
	case cfg.LeaseTTL < 0:
		return nil, fmt.Errorf("canary: RolloutControllerConfig.LeaseTTL %v is negative", cfg.LeaseTTL)
	case cfg.Parallel < 0:
		return nil, fmt.Errorf("canary: RolloutControllerConfig.Parallel %d is negative", cfg.Parallel)
	}
	c := &RolloutController{svc: cfg.Service, log: cfg.Logger, now: cfg.Now, owner: cfg.Owner, poll: cfg.Poll,
		ttl: cfg.LeaseTTL, parallel: cfg.Parallel, held: map[string]Lease{}}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = func() time.Time { return c.svc.now() }
	}
	if c.owner == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		c.owner = "rollouts-" + hex.EncodeToString(b[:])
	}
	if c.poll == 0 {
		c.poll = DefaultRolloutPoll
	}
	if c.ttl == 0 {
		c.ttl = DefaultRolloutLeaseTTL
	}
	if c.parallel == 0 {
		c.parallel = defaultRolloutParallel
	}
	return c, nil
}

// Owner is the name this controller leases rollouts under.
func (c *RolloutController) Owner() string { return c.owner }

// Run drives rollouts until ctx ends, then releases the leases it holds
// and returns nil. Store failures are logged and retried at every poll.
func (c *RolloutController) Run(ctx context.Context) error {
	defer c.releaseAll(context.WithoutCancel(ctx))
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		_, _ = c.Tick(ctx)
		t.Reset(c.poll)
	}
}

// Tick does one poll's work: every due rollout is looked at once. It
// returns how many were. Errors: the store's when due rollouts cannot be
// listed.
func (c *RolloutController) Tick(ctx context.Context) (int, error) {
	ids, err := c.svc.store.DueRollouts(ctx, c.now(), maxDueRollouts)
	c.mu.Lock()
	was := c.down
	c.down = err != nil && ctx.Err() == nil
	c.mu.Unlock()
	switch {
	case err != nil && ctx.Err() == nil && !was:
		c.log.Warn("cannot list due rollouts; retrying every poll", "owner", c.owner, "error", err)
	case err == nil && was:
		c.log.Info("listing due rollouts works again", "owner", c.owner)
	}
	if err != nil {
		return 0, err
	}
	sem := make(chan struct{}, c.parallel)
	var wg sync.WaitGroup
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := c.drive(ctx, id); err != nil && ctx.Err() == nil {
				c.log.Debug("rollout not moved on; retrying at the next poll", "rollout", id, "owner", c.owner, "error", err)
			}
		})
	}
	wg.Wait()
	c.svc.reportActive()
	return len(ids), nil
}

// drive does what is due for rollout id under its lease.
func (c *RolloutController) drive(ctx context.Context, id string) error {
	// A lease held with two thirds of its time left is used as it is: each
	// extension is a store write, and the token fences every write anyway.
	c.mu.Lock()
	lease, ok := c.held[id]
	c.mu.Unlock()
	if !ok || !c.now().Before(lease.ExpiresAt.Add(-c.ttl/3)) {
		l, err := c.svc.store.AcquireRolloutLease(ctx, id, c.owner, c.now(), c.ttl)
		switch {
		case errors.Is(err, ErrLeaseHeld), errors.Is(err, ErrNotFound):
			c.forget(id)
			c.svc.seeRollout(id, "", 0)
			return nil // another replica drives (and counts) it, or it is gone
		case err != nil:
			return err
		}
		if ok && lease.Token != l.Token {
			c.log.Info("rollout lease taken anew", "rollout", id, "owner", c.owner, "token", l.Token)
		}
		lease = l
		c.mu.Lock()
		c.held[id] = lease
		c.mu.Unlock()
	}
	sr, err := c.svc.store.Rollout(ctx, id)
	if err != nil {
		return err
	}
	out, err := c.step(ctx, sr, lease.Token)
	if err != nil {
		c.svc.seeRollout(id, sr.State, sr.Version)
	} else {
		c.svc.seeRollout(id, out.State, out.Version)
	}
	if errors.Is(err, ErrLeaseLost) {
		// Another replica holds the rollout now: drop the stale lease, so
		// that the next poll asks for the lease again instead of repeating
		// writes its old token can never make.
		c.forget(id)
		return nil
	}
	if errors.Is(err, ErrConflict) {
		return nil // someone acted meanwhile; the next poll looks afresh
	}
	if err != nil {
		return err
	}
	if !out.State.Active() || out.WakeAt().IsZero() {
		c.release(ctx, id)
	}
	return nil
}

// step moves sr on by at most one change and its effects.
func (c *RolloutController) step(ctx context.Context, sr StoredRollout, token int64) (StoredRollout, error) {
	if sr.Pending {
		return c.settle(ctx, sr, token)
	}
	now := c.now().UTC()
	r := &sr.Rollout
	switch {
	case r.State == RolloutScheduled:
		if now.Before(r.StartAt) {
			return sr, nil
		}
		if err := r.Start(now, controllerActor); err != nil {
			return sr, err
		}
	case r.NeedsAnalysis():
		runID, err := c.svc.startAnalysis(ctx, r)
		var ve *ValidationError
		switch {
		case errors.As(err, &ve):
			r.pauseOnGate(now, controllerActor, fmt.Sprintf("step %d analysis cannot start: %v", r.Step+1, err), nil)
		case err != nil:
			return sr, err
		default:
			r.AnalysisStarted(now, runID, controllerActor)
			out, err := c.svc.store.UpdateRollout(ctx, RolloutUpdate{Rollout: r, IfVersion: sr.Version, Token: token})
			if errors.Is(err, ErrConflict) {
				// Someone acted on the rollout between our read and our
				// write (a pause, an abort, a promotion): whatever it is
				// now, it will not wait for this run under this ID.
				if cerr := c.svc.cancelRun(ctx, runID, fmt.Sprintf("rollout %s changed while this run started", r.ID)); cerr != nil {
					c.log.Warn("cannot cancel an analysis run the rollout no longer waits for", "rollout", r.ID, "run", runID, "error", cerr)
				}
			}
			if err != nil {
				return sr, err
			}
			c.logChange(sr.Version, &out)
			return c.settle(ctx, out, token)
		}
	case r.State == RolloutRunning:
		var run *Run
		if r.AnalysisID != "" {
			rr, err := c.svc.analyses.Run(ctx, r.AnalysisID)
			switch {
			case err == nil:
				run = &rr.Run
			case !errors.Is(err, ErrNotFound):
				return sr, err
			}
		}
		if !r.Evaluate(now, run, controllerActor) {
			return sr, nil
		}
	default:
		return sr, nil
	}
	out, err := c.svc.store.UpdateRollout(ctx, RolloutUpdate{Rollout: r, IfVersion: sr.Version, Token: token})
	if err != nil {
		return sr, err
	}
	c.logChange(sr.Version, &out)
	return c.settle(ctx, out, token)
}

func (c *RolloutController) settle(ctx context.Context, sr StoredRollout, token int64) (StoredRollout, error) {
	if !sr.Pending {
		return sr, nil
	}
	return c.svc.sync(ctx, sr, token)
}

func (c *RolloutController) logChange(from int64, r *StoredRollout) {
	ev := RolloutEvent{}
	if n := len(r.History); n > 0 {
		ev = r.History[n-1]
	}
	level := slog.LevelInfo
	if r.State == RolloutFailed {
		level = slog.LevelWarn
	}
	c.log.Log(context.Background(), level, "rollout "+ev.Event, "rollout", r.ID, "env", r.Env, "flag", r.Flag, "state", r.State,
		"step", r.Step+1, "percent", r.Percent, "reason", ev.Reason, "owner", c.owner, "version", r.Version)
}

func (c *RolloutController) forget(id string) {
	c.mu.Lock()
	delete(c.held, id)
	c.mu.Unlock()
}

// release gives up the lease of a rollout that needs no driving.
func (c *RolloutController) release(ctx context.Context, id string) {
	c.mu.Lock()
	l, ok := c.held[id]
	delete(c.held, id)
	c.mu.Unlock()
	if ok {
		_ = c.svc.store.ReleaseRolloutLease(ctx, l)
	}
}

func (c *RolloutController) releaseAll(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c.mu.Lock()
	held := c.held
	c.held = map[string]Lease{}
	c.mu.Unlock()
	for _, l := range held {
		_ = c.svc.store.ReleaseRolloutLease(ctx, l)
	}
}
