package outboxtest_test

import (
	"errors"
	"testing"

	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/canary/outboxtest"
)

func TestMemoryConformance(t *testing.T) {
	outboxtest.Run(t, func(t *testing.T) canary.Outbox { return outboxtest.NewMemory() })
}

func TestMemoryFail(t *testing.T) {
	m := outboxtest.NewMemory()
	m.Fail(true)
	err := m.Enqueue(t.Context(), outboxtest.Notification("n", outboxtest.T0), []string{"t"})
	if !errors.Is(err, canary.ErrUnavailable) {
		t.Fatalf("Enqueue on a failed outbox = %v, want ErrUnavailable", err)
	}
	if _, err := m.Stats(t.Context(), outboxtest.T0); !errors.Is(err, canary.ErrUnavailable) {
		t.Fatalf("Stats on a failed outbox = %v, want ErrUnavailable", err)
	}
	m.Fail(false)
	if err := m.Enqueue(t.Context(), outboxtest.Notification("n", outboxtest.T0), []string{"t"}); err != nil {
		t.Fatalf("Enqueue after recovery: %v", err)
	}
}
