package deploy_test

import (
	"errors"
	"testing"
	"time"

	"github.com/flagpole/flagpole/deploy"
)

// The reference signature was computed outside Go:
//
//	python3 -c 'import hmac,hashlib; print(hmac.new(b"whsec_test", b"1735689600.{\"event\":\"test\"}", hashlib.sha256).hexdigest())'
const (
	refSecret = "whsec_test"
	refBody   = `{"event":"test"}`
	refSig    = "e2cf9ffc0501bfc8b152bdee14d223dfe4579ed0c4247e0aea33603f3c38d044"
	refOther  = "cb1d7ba5d76db61d3a6b7872257c01029bb95cf5cb0a87521b2f96078c0b3eab" // the same with secret "other"
)

var refTime = time.Unix(1735689600, 0)

func TestSignMatchesReference(t *testing.T) {
	if got, want := deploy.Sign(refSecret, refTime, []byte(refBody)), "t=1735689600,v1="+refSig; got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
}

func TestVerifySignature(t *testing.T) {
	tests := []struct {
		name      string
		header    string
		body      string
		now       time.Time
		tolerance time.Duration
		want      error // nil: authentic
	}{
		{"reference", "t=1735689600,v1=" + refSig, refBody, refTime, 0, nil},
		{"spaces around parts", " t=1735689600 , v1=" + refSig + " ", refBody, refTime, 0, nil},
		{"rotation: second v1 matches", "t=1735689600,v1=" + refOther + ",v1=" + refSig, refBody, refTime, 0, nil},
		{"unknown scheme ignored", "t=1735689600,v0=abc,v1=" + refSig, refBody, refTime, 0, nil},
		{"within tolerance after", "t=1735689600,v1=" + refSig, refBody, refTime.Add(5 * time.Minute), 0, nil},
		{"within tolerance before", "t=1735689600,v1=" + refSig, refBody, refTime.Add(-5 * time.Minute), 0, nil},
		{"replayed later", "t=1735689600,v1=" + refSig, refBody, refTime.Add(5*time.Minute + time.Second), 0, deploy.ErrSignatureExpired},
		{"from the future", "t=1735689600,v1=" + refSig, refBody, refTime.Add(-6 * time.Minute), 0, deploy.ErrSignatureExpired},
		{"custom tolerance", "t=1735689600,v1=" + refSig, refBody, refTime.Add(time.Hour), 2 * time.Hour, nil},
		{"body changed", "t=1735689600,v1=" + refSig, `{"event":"tset"}`, refTime, 0, deploy.ErrSignatureMismatch},
		{"timestamp changed", "t=1735689601,v1=" + refSig, refBody, refTime, 0, deploy.ErrSignatureMismatch},
		{"wrong secret", "t=1735689600,v1=" + refOther, refBody, refTime, 0, deploy.ErrSignatureMismatch},
		{"empty", "", refBody, refTime, 0, deploy.ErrNoSignature},
		{"no v1", "t=1735689600", refBody, refTime, 0, deploy.ErrNoSignature},
		{"no t", "v1=" + refSig, refBody, refTime, 0, deploy.ErrNoSignature},
		{"two t", "t=1,t=2,v1=" + refSig, refBody, refTime, 0, deploy.ErrSignatureMalformed},
		{"t not a number", "t=soon,v1=" + refSig, refBody, refTime, 0, deploy.ErrSignatureMalformed},
		{"negative t", "t=-5,v1=" + refSig, refBody, refTime, 0, deploy.ErrSignatureMalformed},
		{"huge t", "t=9223372036854775807,v1=" + refSig, refBody, refTime, 0, deploy.ErrSignatureExpired},
		{"v1 not hex", "t=1735689600,v1=zz", refBody, refTime, 0, deploy.ErrSignatureMalformed},
		{"v1 short", "t=1735689600,v1=abcd", refBody, refTime, 0, deploy.ErrSignatureMalformed},
		{"not key=value", "t=1735689600;v1=" + refSig, refBody, refTime, 0, deploy.ErrSignatureMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := deploy.VerifySignature(refSecret, tc.header, []byte(tc.body), tc.now, tc.tolerance)
			if tc.want == nil {
				if err != nil {
					t.Errorf("VerifySignature = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("VerifySignature = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	body := []byte(`{"id":"n1","event":"analysis.completed","data":{"verdict":"fail"}}`)
	now := time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)
	h := deploy.Sign("s3cr3t", now, body)
	if err := deploy.VerifySignature("s3cr3t", h, body, now.Add(time.Minute), 0); err != nil {
		t.Fatalf("a fresh signature does not verify: %v", err)
	}
	if err := deploy.VerifySignature("s3cr3t2", h, body, now, 0); !errors.Is(err, deploy.ErrSignatureMismatch) {
		t.Fatalf("another secret verifies: %v", err)
	}
}

func FuzzVerifySignature(f *testing.F) {
	f.Add("t=1735689600,v1="+refSig, []byte(refBody))
	f.Add("t=,v1=", []byte{})
	f.Add(",,,=", []byte("x"))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		err := deploy.VerifySignature(refSecret, header, body, refTime, time.Minute)
		if err == nil && deploy.Sign(refSecret, refTime, body) != header {
			// Accepting anything but a signature made with the secret would
			// need a forged HMAC; headers may differ only in spacing, extra
			// keys or extra v1 values.
			if !containsSig(header, deploy.Sign(refSecret, refTime, body)[len("t=1735689600,v1="):]) {
				t.Fatalf("accepted %q for body %q", header, body)
			}
		}
	})
}

func containsSig(header, sig string) bool {
	for i := 0; i+len(sig) <= len(header); i++ {
		if header[i:i+len(sig)] == sig {
			return true
		}
	}
	return false
}
