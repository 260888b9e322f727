package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/redis"
)

// envExperimentMetricsEvery tunes how often the experiment consumer
// refreshes its gauges (consumer lag and pending entries, experiments by
// status and health, crossover users); a Go duration, default 15s. Each
// refresh reads every experiment's statistics, so production keeps the
// default; tests and dashboards wanting fresher gauges lower it.
const envExperimentMetricsEvery = "FLAGPOLE_EXPERIMENT_METRICS_EVERY"

// experimentConsumerOptions reads the consumer's settings from the
// environment. Errors: a value of FLAGPOLE_EXPERIMENT_METRICS_EVERY that is
// not a positive duration, naming the variable.
func experimentConsumerOptions(getenv func(string) string) (redis.ConsumerOptions, error) {
	var o redis.ConsumerOptions
	if v := getenv(envExperimentMetricsEvery); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return o, fmt.Errorf("%s %q: must be a positive duration such as 5s", envExperimentMetricsEvery, v)
		}
		o.MetricsEvery = d
	}
	return o, nil
}

// startExperimentConsumer runs this replica's member of the experiment
// consumer group until ctx ends: it folds every environment's tracking
// events and exposures into the statistics of running experiments, and
// claims what dead replicas left pending. Its metrics go to reg. Errors: a
// bad FLAGPOLE_EXPERIMENT_METRICS_EVERY, a metric registration conflict.
func (a *app) startExperimentConsumer(ctx context.Context, wg *sync.WaitGroup, store *redis.Store, reg prometheus.Registerer, log *slog.Logger) error {
	o, err := experimentConsumerOptions(a.getenv)
	if err != nil {
		return err
	}
	o.Registerer, o.Logger = reg, log
	c, err := store.ExperimentConsumer(o)
	if err != nil {
		return fmt.Errorf("starting the experiment consumer: %w", err)
	}
	wg.Go(func() { _ = c.Run(ctx) })
	log.Debug("experiment consumer running", "consumer", c.Name())
	return nil
}
