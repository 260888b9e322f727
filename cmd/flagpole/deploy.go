package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/flagpole/flagpole/api"
	"github.com/flagpole/flagpole/canary"
	"github.com/flagpole/flagpole/deploy"
	"github.com/flagpole/flagpole/redis"
)

// Orchestrator integration and notifications in `flagpole serve`: the
// Flagger hooks, Argo's start-and-poll endpoint, the Kayenta-compatible
// API, the webhook sender with
// its delivery log, and analysis.completed notifications. deploy's
// handlers reach the API server through api.Config.Extra.

// envWebhooksFile stands in for --webhooks.
const envWebhooksFile = "FLAGPOLE_WEBHOOKS_FILE"

// deployServeFlags are serve's options for orchestrators and webhooks.
type deployServeFlags struct {
	webhooksFile string
	subs         []deploy.Subscription // read from webhooksFile by resolve
}

// addDeployServeFlags registers serve's deploy flags.
func addDeployServeFlags(fs *pflag.FlagSet, o *deployServeFlags) {
	fs.StringVar(&o.webhooksFile, "webhooks", "", "webhook subscriptions file (YAML or JSON; see docs/deploy.md); notifications are sent only with it ($"+envWebhooksFile+")")
}

// resolveDeployServeFlags reads and checks the webhook file; problems are
// usage errors naming the file and every bad field.
func (a *app) resolveDeployServeFlags(cmd *cobra.Command, o *deployServeFlags) error {
	if !cmd.Flags().Changed("webhooks") {
		if v := a.getenv(envWebhooksFile); v != "" {
			o.webhooksFile = v
		}
	}
	if o.webhooksFile == "" {
		return nil
	}
	data, err := os.ReadFile(o.webhooksFile)
	if err != nil {
		return usagef(cmd, "--webhooks: %v", err)
	}
	subs, err := deploy.ParseSubscriptions(data, a.getenv)
	var ve *canary.ValidationError
	if errors.As(err, &ve) {
		var lines []string
		for _, p := range ve.Problems {
			lines = append(lines, "  "+p.String())
		}
		return usagef(cmd, "--webhooks %s:\n%s", o.webhooksFile, strings.Join(lines, "\n"))
	}
	if err != nil {
		return usagef(cmd, "--webhooks %s: %v", o.webhooksFile, err)
	}
	o.subs = subs
	return nil
}

// deployWiring is what serve runs for deploy.
type deployWiring struct {
	routes []api.Route
	sender *deploy.Sender
	watch  *deploy.AnalysisWatch
	log    *slog.Logger
}

// newDeploy builds the hooks, the sender and the watcher over store.
// Errors: a configuration the deploy package refuses.
func (a *app) newDeploy(o *deployServeFlags, store *redis.Store, reg prometheus.Registerer, log *slog.Logger) (*deployWiring, error) {
	dlog := log.With("component", "deploy")
	sender, err := deploy.NewSender(deploy.SenderConfig{
		Outbox: store, Subscriptions: o.subs, Logger: dlog.With("part", "webhooks"), Registerer: reg, Owner: replicaName(),
	})
	if err != nil {
		return nil, fmt.Errorf("configuring webhooks: %w", err)
	}
	d := &deployWiring{sender: sender, log: dlog}
	var notifier deploy.Notifier
	if len(o.subs) > 0 {
		notifier = sender
		if d.watch, err = deploy.NewAnalysisWatch(deploy.AnalysisWatchConfig{Store: store, Notifier: sender, Logger: dlog.With("part", "analysis-watch")}); err != nil {
			return nil, err
		}
	}
	analyses := deploy.NewAnalyses(canary.NewService(store, nil), nil)
	flagger, err := deploy.NewFlagger(deploy.FlaggerConfig{Analyses: analyses, Notifier: notifier, CheckKey: deploy.CheckKeys(store), Logger: dlog.With("part", "flagger")})
	if err != nil {
		return nil, err
	}
	argo, err := deploy.NewArgo(analyses, dlog.With("part", "argo"))
	if err != nil {
		return nil, err
	}
	kayenta, err := deploy.NewKayenta(analyses, deploy.CheckKeys(store), dlog.With("part", "kayenta"))
	if err != nil {
		return nil, err
	}
	var routes []deploy.Route
	routes = append(routes, flagger.Routes()...)
	routes = append(routes, argo.Routes()...)
	routes = append(routes, kayenta.Routes()...)
	routes = append(routes, deploy.NewNotificationsAPI(sender, nil, dlog).Routes()...)
	for _, r := range routes {
		d.routes = append(d.routes, api.Route{Method: r.Method, Path: r.Path, Auth: r.Auth, Handler: r.Handler})
	}
	return d, nil
}

// start runs the sender and the watcher on wg until ctx ends, when
// webhooks are configured.
func (d *deployWiring) start(ctx context.Context, wg *sync.WaitGroup) {
	if d.watch == nil {
		d.log.Info("webhook notifications off: no --webhooks file")
		return
	}
	var names []string
	for _, s := range d.sender.Subscriptions() {
		names = append(names, s.Name)
	}
	d.log.Info("webhook notifications on", "subscriptions", names, "owner", d.sender.Owner())
	wg.Go(func() { _ = d.sender.Run(ctx) })
	wg.Go(func() { _ = d.watch.Run(ctx) })
}
