package canarytest_test

import (
	"errors"
	"testing"
	"time"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/canarytest"
)

func TestMemoryConformance(t *testing.T) {
	canarytest.Run(t, func(t *testing.T) canary.Store { return canarytest.NewMemory() })
}

func TestMemoryFail(t *testing.T) {
	m := canarytest.NewMemory()
	m.Fail(true)
	if _, err := m.Templates(t.Context()); !errors.Is(err, canary.ErrUnavailable) {
		t.Errorf("Templates while failing: err = %v; want ErrUnavailable", err)
	}
	if _, err := m.DueRuns(t.Context(), time.Now(), 10); !errors.Is(err, canary.ErrUnavailable) {
		t.Errorf("DueRuns while failing: err = %v; want ErrUnavailable", err)
	}
	m.Fail(false)
	if _, err := m.Templates(t.Context()); err != nil {
		t.Errorf("Templates after recovery: %v", err)
	}
}
