package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/api"
	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/flags"
	"github.com/flagpole/flagpole/redis"
)

// Progressive flag rollouts in `flagpole serve`: the rollout service the
// API's rollout routes and kill switch use, and the controller that moves
// rollouts on. Every replica runs a controller; leases make exactly one
// drive each rollout. Rollout events go to the webhooks when --webhooks is
// given.

// Environment variables tuning the rollout controller (for tests and
// operators; the defaults suit production): how often due rollouts are
// looked at, and how long a dead replica's rollouts wait for another.
const (
	envRolloutPoll     = "FLAGPOLE_ROLLOUT_POLL"
	envRolloutLeaseTTL = "FLAGPOLE_ROLLOUT_LEASE_TTL"
)

// rolloutWiring is what serve runs for rollouts.
type rolloutWiring struct {
	svc  *canary.RolloutService
	ctl  *canary.RolloutController
	log  *slog.Logger
	hook bool
}

// newRollouts builds the rollout service and controller over store, with
// the rollout metrics (api.RolloutMetrics) registered on reg, the server's
// registry; a nil reg means none. Errors:
// a configuration the canary package refuses, a metric registration
// conflict.
func (a *app) newRollouts(store *redis.Store, fs *flags.Service, dep *deployWiring, reg prometheus.Registerer, log *slog.Logger) (*rolloutWiring, error) {
	var poll, ttl time.Duration
	for _, e := range []struct {
		name string
		dst  *time.Duration
	}{{envRolloutPoll, &poll}, {envRolloutLeaseTTL, &ttl}} {
		if v := a.getenv(e.name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("%s %q: must be a positive duration such as 200ms", e.name, v)
			}
			*e.dst = d
		}
	}
	rlog := log.With("component", "rollouts")
	cfg := canary.RolloutServiceConfig{Rollouts: store, Analyses: store, Flags: fs, FlagReader: store, Logger: rlog}
	w := &rolloutWiring{log: rlog}
	if reg != nil {
		m, err := api.NewRolloutMetrics(reg)
		if err != nil {
			return nil, fmt.Errorf("registering the rollout metrics: %w", err)
		}
		cfg.Metrics = m
	}
	if dep != nil && dep.watch != nil { // webhooks configured
		cfg.Notifier, w.hook = dep.sender, true
	}
	svc, err := canary.NewRolloutService(cfg)
	if err != nil {
		return nil, fmt.Errorf("configuring rollouts: %w", err)
	}
	ctl, err := canary.NewRolloutController(canary.RolloutControllerConfig{Service: svc, Logger: rlog, Owner: replicaName(), Poll: poll, LeaseTTL: ttl})
	if err != nil {
		return nil, fmt.Errorf("configuring the rollout controller: %w", err)
	}
	w.svc, w.ctl = svc, ctl
	return w, nil
}

// start runs the controller on wg until ctx ends.
func (w *rolloutWiring) start(ctx context.Context, wg *sync.WaitGroup) {
	w.log.Info("rollout controller on", "owner", w.ctl.Owner(), "notifications", w.hook)
	wg.Go(func() { _ = w.ctl.Run(ctx) })
}
