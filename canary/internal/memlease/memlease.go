// Package memlease holds the lease rules that canary's in-memory test
// stores share (canarytest.Memory for analysis runs, rollouttest.Memory for
// rollouts), so that both grant, renew and release leases as the Redis
// store's lease scripts do. Each store keeps one canary.Lease beside each
// leased object and calls these functions with it under its own lock.
package memlease

import (
	"fmt"
	"time"

	"github.com/flagpole/flagpole/canary"
)

// Acquire grants owner the lease cur of the object named what and id (such
// as "run" and its ID), storing the new lease in cur and returning it. A
// live lease of the same owner is extended with its token; an expired or
// released one is taken with the next token. Errors: canary.ErrLeaseHeld,
// naming the holder, while another owner's lease is live.
func Acquire(cur *canary.Lease, what, id, owner string, now time.Time, ttl time.Duration) (canary.Lease, error) {
	live := cur.Owner != "" && now.Before(cur.ExpiresAt)
	switch {
	case live && cur.Owner != owner:
		return canary.Lease{}, fmt.Errorf("%s %s: held by %s until %s: %w", what, id, cur.Owner, cur.ExpiresAt.UTC().Format(time.RFC3339Nano), canary.ErrLeaseHeld)
	case !live:
		cur.Token++
	}
	cur.RunID, cur.Owner, cur.ExpiresAt = id, owner, expiry(now, ttl)
	return *cur, nil
}

// Renew extends cur, the lease of the object named what and l.RunID, to
// now+ttl if l is still that lease (same owner and token). Errors:
// canary.ErrLeaseLost when it is not.
func Renew(cur *canary.Lease, what string, l canary.Lease, now time.Time, ttl time.Duration) (canary.Lease, error) {
	if cur.Token != l.Token || cur.Owner != l.Owner {
		return canary.Lease{}, fmt.Errorf("%s %s: token %d, current lease %d: %w", what, l.RunID, l.Token, cur.Token, canary.ErrLeaseLost)
	}
	cur.ExpiresAt = expiry(now, ttl)
	return *cur, nil
}

// Release gives cur up if l, with an owner, is still that lease; otherwise
// it leaves cur alone. The token stays, so the next holder's is higher.
func Release(cur *canary.Lease, l canary.Lease) {
	if l.Owner != "" && cur.Token == l.Token && cur.Owner == l.Owner {
		cur.Owner, cur.ExpiresAt = "", time.Time{}
	}
}

// expiry is now+ttl at millisecond precision, as a real store keeps it.
func expiry(now time.Time, ttl time.Duration) time.Time {
	return time.UnixMilli(now.Add(ttl).UnixMilli()).UTC()
}
