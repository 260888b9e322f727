package canary

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Service is what the API does with analyses beyond plain reads: it stores
// validated templates, starts runs from them and cancels runs, over a Store.
// Executing runs is the Runner's job. It is safe for concurrent use.
type Service struct {
	store Store
	now   func() time.Time
}

// NewService returns a Service over store; now nil means time.Now.
func NewService(store Store, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{store: store, now: now}
}

// Store returns the store the service writes to.
func (s *Service) Store() Store { return s.store }

// PutTemplate validates t and stores it (see Store.PutTemplate), recording
// the current time. Errors: the template's *ValidationError, and the
// store's ErrExists, ErrNotFound, ErrConflict.
func (s *Service) PutTemplate(ctx context.Context, t *Template, o TemplateWrite) (StoredTemplate, error) {
	if err := t.Validate(); err != nil {
		return StoredTemplate{}, err
	}
	o.At = s.now().UTC()
	return s.store.PutTemplate(ctx, t, o)
}

// maxCancelAttempts bounds the retries of a cancellation racing a runner.
const maxCancelAttempts = 10

// Start starts a run of the named template's current version with args,
// in phase Pending; a Runner executes it. Errors: a *ValidationError naming
// "template" when there is no such template, or naming the bad arguments
// (see Template.CheckArgs); the store's errors.
func (s *Service) Start(ctx context.Context, template string, args Args) (StoredRun, error) {
	if template == "" {
		return StoredRun{}, fieldError("template", "required")
	}
	st, err := s.store.Template(ctx, template)
	if errors.Is(err, ErrNotFound) {
		return StoredRun{}, fieldError("template", "no analysis template is named %q", template)
	}
	if err != nil {
		return StoredRun{}, err
	}
	for attempt := 0; ; attempt++ {
		r, err := NewRun(NewRunID(template), &st.Template, args, s.now().UTC())
		if err != nil {
			return StoredRun{}, err
		}
		sr, err := s.store.CreateRun(ctx, r)
		if errors.Is(err, ErrExists) && attempt < 2 {
			continue // a random ID collided; draw another
		}
		return sr, err
	}
}

// Cancel ends a run as Cancelled with reason, retrying when a runner wrote
// in between. Errors: ErrNotFound, ErrRunEnded (wrapped, with the phase it
// ended in), the store's errors.
func (s *Service) Cancel(ctx context.Context, id, reason string) (StoredRun, error) {
	for attempt := 1; ; attempt++ {
		sr, err := s.store.Run(ctx, id)
		if err != nil {
			return StoredRun{}, err
		}
		if err := sr.Run.Cancel(s.now().UTC(), reason); err != nil {
			return sr, fmt.Errorf("run %s is already %s: %w", id, sr.Phase, err)
		}
		out, err := s.store.UpdateRun(ctx, RunUpdate{Run: &sr.Run, IfVersion: sr.Version})
		if errors.Is(err, ErrConflict) && attempt < maxCancelAttempts {
			continue
		}
		return out, err
	}
}

// NewRunID returns a fresh run ID: the template's name, a dash and 12
// random hexadecimal digits.
func NewRunID(template string) string {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return template + "-" + hex.EncodeToString(b[:])
}
