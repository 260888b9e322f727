// Package stat holds the special functions and multiple-testing adjustments
// that the canary judge and the experiment analysis share: the standard
// normal and Student t distributions, the chi-square distribution, the
// regularized incomplete beta function in log space, ln B(a, b), and the Holm
// and Benjamini–Hochberg adjustments.
//
// Everything is computed from the standard library (math.Erfc,
// math.Erfcinv, math.Lgamma) and continued fractions; the package has no
// other dependency. Every function is total: a NaN or out-of-domain argument
// yields NaN (or the documented limit) and nothing panics. Accuracy is
// checked against reference values computed outside this code (published
// tables, mpmath and scipy) in the package's tests.
package stat
