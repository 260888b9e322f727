package sdk

import (
	"testing"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestShutdownStopsEveryGoroutine runs each mode through its work (stream
// or requests, a change, tracking, exposures, a reconnection) and checks
// that Shutdown leaves nothing running.
func TestShutdownStopsEveryGoroutine(t *testing.T) {
	tests := []struct {
		name string
		opts []Option
	}{
		{name: "in-process"},
		{name: "remote", opts: []Option{WithRemoteEvaluation()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := goleak.IgnoreCurrent()
			s := newFlagServer(t, parityFlags)
			p := NewProvider(fastOptions(s, append(tc.opts, WithEventFlush(10*time.Millisecond, 2))...)...)
			if err := p.Init(openfeature.EvaluationContext{}); err != nil {
				t.Fatal(err)
			}
			stop, drained := make(chan struct{}), make(chan struct{})
			go func() { // the SDK would drain events; here the test does
				defer close(drained)
				for {
					select {
					case <-p.EventChannel():
					case <-stop:
						return
					}
				}
			}()
			flat := openfeature.FlattenedContext{"targetingKey": "u1", "plan": "pro"}
			if d := p.StringEvaluation(bg, "targeted", "", flat); d.Value != "A" {
				t.Fatalf("targeted = %+v", d)
			}
			p.Track(bg, "e", openfeature.NewEvaluationContext("u1", nil), openfeature.NewTrackingEventDetails(1))
			p.track.expose("targeted", "a", "u1")
			s.setFlags(parityFlags)
			s.mu.Lock()
			s.srv.CloseClientConnections() // a reconnection
			s.mu.Unlock()
			collect(t, s, 2)

			p.Shutdown()
			s.stop()
			close(stop)
			<-drained
			goleak.VerifyNone(t, before)
		})
	}
}
