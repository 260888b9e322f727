package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"github.com/flagpole/flagpole/canary"
)

// AnalysisWatch notifies analysis.completed when an analysis run ends,
// whoever ended it (a runner's verdict, a deadline, a cancellation). Every
// replica may run one: notification IDs derive from the run ID, so the
// outbox keeps one notification per run however many replicas saw it end.
//
// Each poll lists the runs that have not ended (the store's due index,
// cheap) and reads those that have left it since the last poll, plus the
// runs created since the last poll (a run that started and ended between
// two polls). At start it looks back over the runs created in the last
// CatchUp and notifies those that ended within Horizon, so that runs that
// ended while no replica watched are notified too.
type AnalysisWatch struct {
	store    canary.Store
	notifier Notifier
	log      *slog.Logger
	now      func() time.Time
	poll     time.Duration
	horizon  time.Duration
	catchUp  time.Duration
	most     int

	active   map[string]bool
	notified map[string]time.Time
	lastScan time.Time
}

// AnalysisWatchConfig configures an AnalysisWatch. Store and Notifier are
// required.
type AnalysisWatchConfig struct {
	Store    canary.Store
	Notifier Notifier
	// Logger receives problems; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Poll is how often runs are checked; default 5s.
	Poll time.Duration
	// Horizon: at start, runs that ended this long ago or less are
	// notified (duplicates are dropped by the outbox); default 1h.
	Horizon time.Duration
	// CatchUp: at start, runs created this long ago or less are looked at;
	// default 24h.
	CatchUp time.Duration
	// MaxActive bounds the runs read from the due index per poll; default
	// 10,000.
	MaxActive int
}

// NewAnalysisWatch checks cfg. Errors name the missing field.
func NewAnalysisWatch(cfg AnalysisWatchConfig) (*AnalysisWatch, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("deploy: AnalysisWatchConfig.Store is required")
	case cfg.Notifier == nil:
		return nil, errors.New("deploy: AnalysisWatchConfig.Notifier is required")
	case cfg.Poll < 0 || cfg.Horizon < 0 || cfg.CatchUp < 0 || cfg.MaxActive < 0:
		return nil, errors.New("deploy: AnalysisWatchConfig has a negative field")
	}
	w := &AnalysisWatch{store: cfg.Store, notifier: cfg.Notifier, log: cfg.Logger, now: cfg.Now,
		poll: cfg.Poll, horizon: cfg.Horizon, catchUp: cfg.CatchUp, most: cfg.MaxActive, notified: map[string]time.Time{}}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	if w.now == nil {
		w.now = time.Now
	}
	if w.poll == 0 {
		w.poll = 5 * time.Second
	}
	if w.horizon == 0 {
		w.horizon = time.Hour
	}
	if w.catchUp == 0 {
		w.catchUp = 24 * time.Hour
	}
	if w.most == 0 {
		w.most = 10000
	}
	return w, nil
}

// Run polls until ctx ends and returns nil. Store failures are logged and
// retried at the next poll.
func (w *AnalysisWatch) Run(ctx context.Context) error {
	t := time.NewTicker(w.poll)
	defer t.Stop()
	for {
		if err := w.Poll(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("could not check analyses for completion; retrying", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Poll checks once for runs that ended and notifies them. Errors: the
// store's; the runs it could not check are checked again next time.
func (w *AnalysisWatch) Poll(ctx context.Context) error {
	now := w.now()
	first := w.active == nil
	ids, err := w.store.DueRuns(ctx, now.AddDate(100, 0, 0), w.most)
	if err != nil {
		return err
	}
	current := make(map[string]bool, len(ids))
	for _, id := range ids {
		current[id] = true
	}
	for id := range w.active {
		if current[id] {
			continue
		}
		sr, err := w.store.Run(ctx, id)
		switch {
		case errors.Is(err, canary.ErrNotFound):
			continue
		case err != nil:
			current[id] = true // look again next time
			continue
		}
		if sr.Phase.Terminal() {
			if err := w.notify(ctx, &sr.Run); err != nil {
				current[id] = true
			}
		}
	}
	// Runs created since the last scan (or, at start, within CatchUp).
	since := w.lastScan.Add(-time.Minute)
	if first {
		since = now.Add(-w.catchUp)
	}
	if err := w.scanCreated(ctx, since, now, first); err != nil {
		return err
	}
	w.active, w.lastScan = current, now
	for id, at := range w.notified {
		if now.Sub(at) > w.catchUp+w.horizon {
			delete(w.notified, id)
		}
	}
	return nil
}

// scanCreated notifies the ended runs created at or after since. At start
// (catchUp) only runs that ended within the horizon are notified.
func (w *AnalysisWatch) scanCreated(ctx context.Context, since, now time.Time, catchUp bool) error {
	cursor := ""
	for {
		page, err := w.store.Runs(ctx, canary.RunQuery{Limit: 50, Cursor: cursor})
		if err != nil {
			return err
		}
		for i := range page.Runs {
			r := &page.Runs[i].Run
			if r.CreatedAt.Before(since) {
				return nil
			}
			if !r.Phase.Terminal() || (catchUp && now.Sub(r.EndedAt) > w.horizon) {
				continue
			}
			if err := w.notify(ctx, r); err != nil {
				return err
			}
		}
		if page.Next == "" {
			return nil
		}
		cursor = page.Next
	}
}

// completedPayload is the payload of analysis.completed.
type completedPayload struct {
	Verdict
	Template  string      `json:"template"`
	Args      canary.Args `json:"args"`
	CreatedAt time.Time   `json:"createdAt"`
	EndedAt   time.Time   `json:"endedAt,omitzero"`
}

// CompletedNotificationID is the ID of a run's analysis.completed
// notification.
func CompletedNotificationID(runID string) string {
	id := "analysis.completed." + runID
	if len(id) > 128 {
		h := sha256.Sum256([]byte(runID))
		id = "analysis.completed." + hex.EncodeToString(h[:12])
	}
	return id
}

func (w *AnalysisWatch) notify(ctx context.Context, r *canary.Run) error {
	if _, done := w.notified[r.ID]; done {
		return nil
	}
	payload, err := json.Marshal(completedPayload{Verdict: VerdictOf(r), Template: r.Template.Name, Args: r.Args, CreatedAt: r.CreatedAt, EndedAt: r.EndedAt})
	if err != nil {
		return err
	}
	at := r.EndedAt
	if at.IsZero() {
		at = w.now()
	}
	n := canary.Notification{ID: CompletedNotificationID(r.ID), Event: canary.EventAnalysisCompleted, Subject: "analysis/" + r.ID, Payload: payload, Time: at}
	if _, _, err := w.notifier.Notify(ctx, n); err != nil {
		w.log.Warn("could not notify a completed analysis; retrying", "analysis", r.ID, "error", err)
		return err
	}
	w.notified[r.ID] = w.now()
	return nil
}
