package experiments

import "time"

// Folding turns an environment's raw events into an experiment's
// [Observations] one event at a time, keeping a small [UserState] per user
// instead of the events: the rules are here, pure; a consumer in an adapter
// stores the states and adds the deltas atomically.
//
// The rules, per user of a running experiment:
//   - An exposure ([ExposureEvent]) on the experiment's flag to one of its
//     arms, for a user [Experiment.Assign] puts in the experiment, makes the
//     user a member of that arm from the exposure's time (the first exposure;
//     a later-arriving one of the same arm with an earlier time moves the
//     start back). Exposures to variants that are not arms, and of users
//     outside the traffic, are ignored.
//   - An exposure to a second arm makes the user a crossover: their
//     contribution is removed from every statistic, the arm loses the user,
//     Crossovers counts them, and nothing they do afterwards counts.
//   - A tracking event feeds every metric whose numerator or denominator
//     event it is ([Metric.NumeratorEvent], [Metric.DenominatorEvent]):
//     the user's [Tally] of the event grows and the metric's statistics
//     change from the user's old [Metric.UserValue] to the new one (so caps
//     apply to the user's total, as the metric defines).
//   - Events before the user's exposure do not count, beyond a grace of
//     [ExposureGrace]: an exposure recorded by the server carries the
//     server's clock and an event the client's, so an event stamped up to
//     that much before the exposure still counts. Events of a member of the
//     experiment that arrive before their exposure (the exposure may be
//     recorded asynchronously) wait in the state, at most [MaxPendingEvents]
//     of them, and count when the exposure arrives if they happened at or
//     after it, within the same grace.

// ExposureGrace is how much earlier than a user's exposure an event may be
// stamped and still count: the clock skew between clients (which stamp
// tracking events) and the server (which stamps OFREP exposures) that
// folding tolerates. Events further before the exposure do not count.
const ExposureGrace = 2 * time.Minute

// exposureGraceMillis is ExposureGrace in the unit of UserState times.
const exposureGraceMillis = int64(ExposureGrace / time.Millisecond)

// MaxPendingEvents bounds the events kept for a user whose exposure has not
// arrived yet; later ones are dropped.
const MaxPendingEvents = 16

// UserState is what folding keeps about one user of one experiment run.
// Its JSON form is compact; the zero value is a user not seen yet.
type UserState struct {
	// Arm is the variant the user was exposed to; "" before any exposure.
	Arm string `json:"a,omitempty"`
	// ExposedAt is the time of the exposure in Unix milliseconds.
	ExposedAt int64 `json:"t,omitempty"`
	// Crossover is true once the user was exposed to a second arm.
	Crossover bool `json:"x,omitempty"`
	// Tallies are the user's counted events by name (metric events only).
	Tallies map[string]Tally `json:"n,omitempty"`
	// Pending are metric events that arrived before the user's exposure.
	Pending []PendingEvent `json:"p,omitempty"`
}

// PendingEvent is a tracking event waiting for its user's exposure.
type PendingEvent struct {
	Name  string  `json:"n"`
	Value float64 `json:"v,omitempty"`
	// At is the event's time in Unix milliseconds.
	At int64 `json:"t"`
}

// Folder applies the folding rules of one experiment run. Build it with
// [NewFolder]; it is read-only afterwards and safe for concurrent use.
type Folder struct {
	e       Experiment
	arms    map[string]bool
	metrics map[string][]int // event name → indexes of the metrics it feeds
}

// NewFolder returns the folder of e as it is now (metrics, arms, salt).
func NewFolder(e *Experiment) *Folder {
	f := &Folder{e: e.clone(), arms: map[string]bool{}, metrics: map[string][]int{}}
	for _, a := range f.e.Arms() {
		f.arms[a] = true
	}
	for i := range f.e.Metrics {
		m := &f.e.Metrics[i]
		num, den := m.NumeratorEvent(), m.DenominatorEvent()
		if num != "" {
			f.metrics[num] = append(f.metrics[num], i)
		}
		if den != "" && den != num {
			f.metrics[den] = append(f.metrics[den], i)
		}
	}
	return f
}

// Experiment returns the experiment the folder was built from.
func (f *Folder) Experiment() *Experiment { return &f.e }

// Relevant reports whether ev can change the experiment's statistics: an
// exposure to an arm on its flag, or an event one of its metrics uses, for
// a user the experiment's assignment puts in the experiment, not before the
// run started (an earlier run, before a restart, was assigned differently).
func (f *Folder) Relevant(ev *Event) bool {
	if ev.TargetingKey == "" {
		return false
	}
	if s := f.e.StartedAt; s != nil && ev.Time.UnixMilli() < s.UnixMilli() {
		return false
	}
	if ev.IsExposure() {
		if ev.FlagKey != f.e.FlagKey || !f.arms[ev.Variant] {
			return false
		}
	} else if len(f.metrics[ev.Name]) == 0 {
		return false
	}
	return f.e.Assign(ev.TargetingKey).InExperiment
}

// Fold applies ev, one of st's user's events that is [Folder.Relevant], to
// st and adds the change it makes to the statistics to d (a delta: its
// numbers may be negative; nil maps are created). It reports whether st
// changed.
func (f *Folder) Fold(st *UserState, ev *Event, d *Observations) bool {
	at := ev.Time.UnixMilli()
	if st.Crossover {
		return false
	}
	if ev.IsExposure() {
		switch {
		case st.Arm == "":
			st.Arm, st.ExposedAt = ev.Variant, at
			addUsers(d, st.Arm, 1)
			pending := st.Pending
			st.Pending = nil
			for _, p := range pending {
				if p.At >= at-exposureGraceMillis {
					f.count(st, p.Name, p.Value, d)
				}
			}
			return true
		case st.Arm == ev.Variant:
			if at < st.ExposedAt {
				st.ExposedAt = at
				return true
			}
			return false
		default:
			f.contribute(st, d, -1)
			addUsers(d, st.Arm, -1)
			d.Crossovers++
			*st = UserState{Arm: st.Arm, ExposedAt: st.ExposedAt, Crossover: true}
			return true
		}
	}
	v := 0.0
	if ev.Value != nil {
		v = finite(*ev.Value)
	}
	if st.Arm == "" {
		if len(st.Pending) >= MaxPendingEvents {
			return false
		}
		st.Pending = append(st.Pending, PendingEvent{Name: ev.Name, Value: v, At: at})
		return true
	}
	if at < st.ExposedAt-exposureGraceMillis {
		return false
	}
	f.count(st, ev.Name, v, d)
	return true
}

// count adds one event to st's tallies and the change in st's metric
// values to d.
func (f *Folder) count(st *UserState, name string, v float64, d *Observations) {
	idx := f.metrics[name]
	if len(idx) == 0 {
		return
	}
	for _, i := range idx {
		f.metricContribution(st, i, d, -1)
	}
	if st.Tallies == nil {
		st.Tallies = map[string]Tally{}
	}
	t := st.Tallies[name]
	t.Count++
	t.Sum = finite(t.Sum + v)
	st.Tallies[name] = t
	for _, i := range idx {
		f.metricContribution(st, i, d, 1)
	}
}

// contribute adds sign × st's contribution to every metric to d.
func (f *Folder) contribute(st *UserState, d *Observations, sign float64) {
	for i := range f.e.Metrics {
		f.metricContribution(st, i, d, sign)
	}
}

// metricContribution adds sign × st's contribution to metric i to d.
func (f *Folder) metricContribution(st *UserState, i int, d *Observations, sign float64) {
	m := &f.e.Metrics[i]
	var den Tally
	if e := m.DenominatorEvent(); e != "" {
		den = st.Tallies[e]
	}
	x, y := m.UserValue(st.Tallies[m.NumeratorEvent()], den)
	x, y = finite(x), finite(y)
	if x == 0 && y == 0 {
		return
	}
	if d.Metrics == nil {
		d.Metrics = map[string]map[string]Stats{}
	}
	arms := d.Metrics[m.Key]
	if arms == nil {
		arms = map[string]Stats{}
		d.Metrics[m.Key] = arms
	}
	s := arms[st.Arm]
	if x != 0 {
		s.Conversions += int64(sign)
	}
	s.Sum += sign * x
	s.SumSquares += sign * finite(x*x)
	if m.IsRatio() {
		s.DenominatorSum += sign * y
		s.DenominatorSumSquares += sign * finite(y*y)
		s.SumProducts += sign * finite(x*y)
	}
	arms[st.Arm] = s
}

func addUsers(d *Observations, arm string, n int64) {
	if d.Users == nil {
		d.Users = map[string]int64{}
	}
	d.Users[arm] += n
}

// IsZero reports whether s holds no data at all.
func (s Stats) IsZero() bool { return s == Stats{} }

// MergeDelta adds the delta d into o (users, crossovers and every statistic,
// field by field). Metric users are not tracked by folding: Analyze pads
// them up to the arm's users.
func (o *Observations) MergeDelta(d Observations) {
	for a, n := range d.Users {
		addUsers(o, a, n)
	}
	o.Crossovers += d.Crossovers
	for k, arms := range d.Metrics {
		if o.Metrics == nil {
			o.Metrics = map[string]map[string]Stats{}
		}
		if o.Metrics[k] == nil {
			o.Metrics[k] = map[string]Stats{}
		}
		for a, s := range arms {
			t := o.Metrics[k][a]
			t.Users += s.Users
			t.Conversions += s.Conversions
			t.Sum += s.Sum
			t.SumSquares += s.SumSquares
			t.DenominatorSum += s.DenominatorSum
			t.DenominatorSumSquares += s.DenominatorSumSquares
			t.SumProducts += s.SumProducts
			o.Metrics[k][a] = t
		}
	}
}
