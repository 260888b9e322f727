package redis_test

import (
	"context"
	"testing"

	"github.com/flagpole/flagpole/experiments"
	"github.com/flagpole/flagpole/experiments/storetest"
	"github.com/flagpole/flagpole/redis"
	"github.com/flagpole/flagpole/redis/redistest"
)

// ingest appends events through the event log and folds until nothing is left.
func ingest(t *testing.T, s experiments.Store, env string, events []experiments.Event) {
	t.Helper()
	st := s.(*redis.Store)
	ctx := context.Background()
	if err := st.EventLog(0).Append(ctx, env, events); err != nil {
		t.Fatalf("Append: %v", err)
	}
	c, err := st.ExperimentConsumer(redis.ConsumerOptions{})
	if err != nil {
		t.Fatalf("ExperimentConsumer: %v", err)
	}
	for {
		n, err := c.FoldOnce(ctx)
		if err != nil {
			t.Fatalf("FoldOnce: %v", err)
		}
		if n == 0 {
			return
		}
	}
}

func TestExperimentStoreConformance(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		storetest.Run(t, storetest.Harness{New: func(t *testing.T) experiments.Store { return openEmbedded(t) }, Ingest: ingest})
	})
	t.Run("redis-server", func(t *testing.T) {
		srv := redistest.Start(t)
		storetest.Run(t, storetest.Harness{New: func(t *testing.T) experiments.Store { return openReal(t, srv) }, Ingest: ingest})
	})
}
