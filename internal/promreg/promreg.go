// Package promreg registers Prometheus collectors so that two components
// sharing one registry (two stores, two senders, a test that builds a
// second server) share their metrics instead of failing. The adapters use
// it; domain packages never import client_golang, so they never do.
package promreg

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Register adds c to reg and returns it, or returns the collector of the
// same type already registered under the same description. Errors: reg's
// error when c clashes with a collector of another type or shape (an
// inconsistent description, a name used with other labels).
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}
