package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flagpole/flagpole/redis"
)

// startExperimentConsumer runs this replica's member of the experiment
// consumer group until ctx ends: it folds every environment's tracking
// events and exposures into the statistics of running experiments, and
// claims what dead replicas left pending. Its metrics go to reg.
func startExperimentConsumer(ctx context.Context, wg *sync.WaitGroup, store *redis.Store, reg prometheus.Registerer, log *slog.Logger) error {
	c, err := store.ExperimentConsumer(redis.ConsumerOptions{Registerer: reg, Logger: log})
	if err != nil {
		return fmt.Errorf("starting the experiment consumer: %w", err)
	}
	wg.Go(func() { _ = c.Run(ctx) })
	log.Debug("experiment consumer running", "consumer", c.Name())
	return nil
}
