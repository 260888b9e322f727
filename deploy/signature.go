package deploy

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader carries a webhook's signature:
//
//	X-Flagpole-Signature: t=1735689600,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd
//
// t is the Unix time (seconds) at which the request was signed and v1 the
// hexadecimal HMAC-SHA256, keyed by the subscription's secret, of the
// signed payload: t, a full stop, and the raw request body ("1735689600.{...}").
// Every attempt is signed afresh, so a delivery retried hours later still
// carries a current timestamp. Receivers recompute the HMAC over the raw
// body, compare in constant time, and reject a timestamp further than a
// tolerance (5 minutes is usual) from their clock, which bounds replays.
// A header may carry several v1 values (during a secret rotation); one
// match suffices. Unknown keys are ignored, for future schemes.
const SignatureHeader = "X-Flagpole-Signature"

// DefaultSignatureTolerance is the replay window VerifySignature applies
// when given none.
const DefaultSignatureTolerance = 5 * time.Minute

// Errors of VerifySignature; test with errors.Is.
var (
	// ErrNoSignature: the header is empty or carries no t or v1.
	ErrNoSignature = errors.New("no webhook signature")
	// ErrSignatureMalformed: the header is not t=<unix>,v1=<hex>[,…].
	ErrSignatureMalformed = errors.New("malformed webhook signature")
	// ErrSignatureExpired: the timestamp is outside the tolerance (an old
	// request replayed, or a badly skewed clock).
	ErrSignatureExpired = errors.New("webhook signature timestamp outside the tolerance")
	// ErrSignatureMismatch: no v1 value matches the body and secret.
	ErrSignatureMismatch = errors.New("webhook signature does not match")
)

// Sign returns the SignatureHeader value for body signed with secret at t.
func Sign(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// VerifySignature checks a SignatureHeader value against the raw body and
// secret: the timestamp must be within tolerance of now (either side;
// tolerance <= 0 means DefaultSignatureTolerance) and one v1 value must be
// the HMAC of "t.body". It returns nil when the request is authentic, or
// an error wrapping ErrNoSignature, ErrSignatureMalformed,
// ErrSignatureExpired or ErrSignatureMismatch. It never panics, whatever
// the header.
func VerifySignature(secret, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultSignatureTolerance
	}
	header = strings.TrimSpace(header)
	if header == "" {
		return ErrNoSignature
	}
	if len(header) > 4096 {
		return fmt.Errorf("%w: longer than 4096 bytes", ErrSignatureMalformed)
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return fmt.Errorf("%w: %q is not key=value", ErrSignatureMalformed, part)
		}
		switch k {
		case "t":
			if ts != "" {
				return fmt.Errorf("%w: more than one t", ErrSignatureMalformed)
			}
			ts = v
		case "v1":
			sig, err := hex.DecodeString(v)
			if err != nil || len(sig) != sha256.Size {
				return fmt.Errorf("%w: v1 is not 64 hexadecimal digits", ErrSignatureMalformed)
			}
			sigs = append(sigs, sig)
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if ts != "" && (err != nil || unix < 0) {
		return fmt.Errorf("%w: t is not a Unix time", ErrSignatureMalformed)
	}
	if ts == "" || len(sigs) == 0 {
		return fmt.Errorf("%w: needs t= and v1=", ErrNoSignature)
	}
	// Compare in seconds without converting to a Duration, which could
	// overflow for absurd timestamps.
	skew := now.Unix() - unix
	if skew < 0 {
		skew = -skew
	}
	if skew > int64(tolerance/time.Second) {
		return fmt.Errorf("%w: signed at %d, %ds from now (tolerance %s)", ErrSignatureExpired, unix, skew, tolerance)
	}
	want := mac(secret, ts, body)
	for _, sig := range sigs {
		if hmac.Equal(sig, want) {
			return nil
		}
	}
	return ErrSignatureMismatch
}
