package rollouttest_test

import (
	"testing"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/rollouttest"
)

func TestMemoryConformance(t *testing.T) {
	rollouttest.Run(t, func(t *testing.T) canary.RolloutStore { return rollouttest.NewMemory() })
}
