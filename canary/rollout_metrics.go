package canary

import (
	"context"
	"time"
)

// RolloutMetrics receives what rollouts do, for Prometheus or anything
// else. The RolloutService and the RolloutController call it inline, from
// many goroutines: implementations must be safe for concurrent use and
// quick. Every call but ActiveRollouts follows a stored change whose
// effects are done, so each step, ending and rollback is reported once
// however many replicas tried to perform it.
type RolloutMetrics interface {
	// StepApplied is called once a step's split (a rollout's start, its
	// next step, or a step restarted by retry) is written to the flag of
	// env and the rollout records it.
	StepApplied(env string)
	// RolloutEnded is called once a rollout that ended (state is
	// RolloutSucceeded, RolloutFailed or RolloutAborted; the kill switch
	// aborts) has its final flag write recorded.
	RolloutEnded(state RolloutState)
	// RolledBack is called once a rollout failed by its analysis has
	// written the old variant back: delay runs from the verdict (the
	// analysis run's end) to the end of the flag write.
	RolledBack(delay time.Duration)
	// ActiveRollouts is called by the controller after every poll with
	// how many active rollouts this process last saw in each active state
	// (RolloutScheduled, RolloutRunning and RolloutPaused are all keys),
	// from what its controller reads and its API changes: no store scan.
	// Each replica counts the rollouts it drove or changed last, so the
	// sum over replicas is exact on one replica and approximate on
	// several (a rollout changed by another replica's API stays counted
	// here in its old state until it is next due); a rollout untouched
	// since this process started (say, paused before a restart) is not
	// counted until it is due again.
	ActiveRollouts(counts map[RolloutState]int)
}

// activeStates are the keys of RolloutMetrics.ActiveRollouts.
var activeStates = [...]RolloutState{RolloutScheduled, RolloutRunning, RolloutPaused}

// recordSynced reports to s.met what a sync just recorded: fresh are the
// history events whose effects it performed, wrote whether it wrote the
// flag and at when the write ended. A step counts only when its split was
// written; an ending counts even without a write (an aborted scheduled
// rollout never touched the flag).
func (s *RolloutService) recordSynced(ctx context.Context, r *Rollout, fresh []RolloutEvent, wrote bool, at time.Time) {
	if s.met == nil {
		return
	}
	ended := false
	for _, ev := range fresh {
		switch ev.Event {
		case EventStarted, EventStep, EventRetried:
			if wrote {
				s.met.StepApplied(r.Env)
			}
		case EventSucceeded, EventFailed, EventAborted, EventKilled:
			ended = true
		}
	}
	if !ended || !r.State.Terminal() {
		return
	}
	s.met.RolloutEnded(r.State)
	if r.State != RolloutFailed || r.Evidence == nil || !wrote {
		return
	}
	verdict := time.Time{}
	if run, err := s.analyses.Run(ctx, r.Evidence.AnalysisID); err == nil {
		verdict = run.EndedAt
	}
	if verdict.IsZero() { // the run is gone: the rollout's failure is the closest record
		for _, ev := range fresh {
			if ev.Event == EventFailed {
				verdict = ev.Time
			}
		}
	}
	if !verdict.IsZero() {
		s.met.RolledBack(max(0, at.Sub(verdict)))
	}
}

// seeRollout notes the state rollout id was in at version, as this
// process last saw it (the controller's reads, the API's changes). A sight
// older than the one recorded is ignored: the controller may finish a poll
// that read a rollout before the API changed it, and must not put the old
// state back. An ended rollout is remembered as ended for endedMemory (so
// that no late, older sight revives it; a retry comes back at a newer
// version) but not counted; st "" (another replica drives it, or it is
// gone) forgets an active one. Without metrics it does nothing.
func (s *RolloutService) seeRollout(id string, st RolloutState, version int64) {
	if s.met == nil || id == "" {
		return
	}
	s.seenMu.Lock()
	defer s.seenMu.Unlock()
	cur, ok := s.seen[id]
	switch {
	case st == "":
		if !ok || !cur.state.Terminal() { // an ended one stays remembered
			delete(s.seen, id)
		}
	case ok && version < cur.version:
		// an older sight (a retried rollout comes back at a newer version)
	case st.Terminal():
		s.seen[id] = seenRollout{state: st, version: version, ended: s.now()}
	default:
		s.seen[id] = seenRollout{state: st, version: version}
	}
}

// endedMemory is how long an ended rollout stays remembered (and
// uncounted) by the active-rollouts gauge: far longer than any poll that
// read it before it ended can take.
const endedMemory = 10 * time.Minute

// seenRollout is a rollout's state at a version, as last seen; ended is
// when it was first seen ended.
type seenRollout struct {
	state   RolloutState
	version int64
	ended   time.Time
}

// reportActive hands the counts of the active rollouts last seen to the
// metrics.
func (s *RolloutService) reportActive() {
	if s.met == nil {
		return
	}
	counts := make(map[RolloutState]int, len(activeStates))
	for _, st := range activeStates {
		counts[st] = 0
	}
	s.seenMu.Lock()
	now := s.now()
	for id, r := range s.seen {
		switch {
		case r.state.Active():
			counts[r.state]++
		case now.Sub(r.ended) > endedMemory:
			delete(s.seen, id)
		}
	}
	s.seenMu.Unlock()
	s.met.ActiveRollouts(counts)
}
