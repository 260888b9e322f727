// Command rollout-app is the example service of docs/rollouts.md: a checkout
// that asks Flagpole, through the OpenFeature provider, which checkout each
// request gets, and counts requests and errors labelled with the flag's key
// and the variant that served them. A rollout's analysis then compares the
// new variant's users with the old variant's on those two counters.
//
//	FLAGPOLE_URL=http://127.0.0.1:8080 FLAGPOLE_SDK_KEY=<sdk key> \
//	  go run ./cmd/flagpole/testdata/rollout-app -env prod -addr :9100
//
// GET /checkout?user=ID serves one checkout; GET /metrics is for Prometheus.
// -simulate N also sends itself N checkouts a second from -users users, and
// -new-error-rate makes the new checkout fail that share of them: enough to
// watch a rollout ramp up, or roll back.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flagpole/flagpole/sdk"
)

// The metric label convention: every metric a rollout's analysis reads
// carries the flag's key and the variant the evaluation returned.
var (
	requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "checkout_requests_total",
		Help: "Checkout requests, by the feature flag variant that served them.",
	}, []string{"feature_flag_key", "feature_flag_variant"})
	failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "checkout_errors_total",
		Help: "Checkout requests that failed, by the feature flag variant that served them.",
	}, []string{"feature_flag_key", "feature_flag_variant"})
)

// service is the checkout and its flag.
type service struct {
	flags   *openfeature.Client
	flagKey string
	// Demo knobs: the share of checkouts each implementation fails.
	oldErrorRate, newErrorRate float64
}

// checkout serves one request of user: the flag decides which checkout runs,
// and the outcome is counted under the variant that decided it.
func (s *service) checkout(ctx context.Context, user string) error {
	d, _ := s.flags.BooleanValueDetails(ctx, s.flagKey, false, openfeature.NewEvaluationContext(user, nil))
	variant := d.Variant
	if variant == "" {
		variant = "default" // Flagpole unreachable or the flag missing: the code's default served
	}
	var err error
	if d.Value {
		err = s.newCheckout()
	} else {
		err = s.oldCheckout()
	}
	requests.WithLabelValues(s.flagKey, variant).Inc()
	if err != nil {
		failures.WithLabelValues(s.flagKey, variant).Inc()
	}
	return err
}

func (s *service) oldCheckout() error { return failSome(s.oldErrorRate) }
func (s *service) newCheckout() error { return failSome(s.newErrorRate) }

func failSome(rate float64) error {
	if rand.Float64() < rate {
		return errors.New("payment provider timeout")
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "rollout-app:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	addr := flag.String("addr", "127.0.0.1:9100", "address of /checkout and /metrics")
	env := flag.String("env", "default", "Flagpole environment")
	flagKey := flag.String("flag", "new-checkout", "the boolean flag choosing the new checkout")
	simulate := flag.Float64("simulate", 0, "checkouts a second to send itself (0: none)")
	users := flag.Int("users", 10000, "distinct users of the simulated checkouts")
	oldRate := flag.Float64("old-error-rate", 0.02, "share of old checkouts that fail")
	newRate := flag.Float64("new-error-rate", 0.02, "share of new checkouts that fail")
	flag.Parse()

	provider := sdk.NewProvider(
		sdk.WithURL(os.Getenv("FLAGPOLE_URL")),
		sdk.WithSDKKey(os.Getenv("FLAGPOLE_SDK_KEY")),
		sdk.WithEnvironment(*env),
	)
	if err := openfeature.SetProviderAndWait(provider); err != nil {
		return fmt.Errorf("connecting to Flagpole: %w", err)
	}
	defer openfeature.Shutdown()

	reg := prometheus.NewRegistry()
	reg.MustRegister(requests, failures)
	s := &service{flags: openfeature.NewClient("checkout"), flagKey: *flagKey, oldErrorRate: *oldRate, newErrorRate: *newRate}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /checkout", func(w http.ResponseWriter, r *http.Request) {
		if err := s.checkout(r.Context(), r.URL.Query().Get("user")); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Printf("rollout-app listening on %s\n", ln.Addr())

	if *simulate > 0 {
		go simulateTraffic(ctx, s, *simulate, *users)
	}
	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// simulateTraffic sends rps checkouts a second, each from a random user.
func simulateTraffic(ctx context.Context, s *service, rps float64, users int) {
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	owed := 0.0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		owed += rps * tick.Seconds()
		for ; owed >= 1; owed-- {
			_ = s.checkout(ctx, fmt.Sprintf("user-%d", rand.IntN(max(users, 1))))
		}
	}
}
