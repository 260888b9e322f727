// Package deploy connects Flagpole's canary analyses to deployment
// orchestrators and tells the world what happened:
//
//   - Flagger: webhooks for every hook type (Flagger, FlaggerPayload), which
//     start an analysis per canary revision from the webhook's metadata and
//     answer 2xx to go on and 4xx to hold or fail, with the reason;
//   - Argo Rollouts: an idempotent start-and-poll endpoint (Argo) for the
//     web metric provider, answering the orchestrator Verdict;
//   - Kayenta clients (Argo's kayenta provider, Spinnaker): the three
//     Kayenta calls mapped onto templates and runs (Kayenta);
//   - outbound webhooks: a Sender that delivers notifications
//     (analysis.completed, rollout.*) to subscriptions through a persistent
//     canary.Outbox, signed (Sign, VerifySignature), retried with backoff
//     and dead-lettered, with a delivery log (NotificationsAPI), and an
//     AnalysisWatch that notifies the end of every analysis run.
//
// Handlers are plain net/http; they are served by the api package through
// api.Config.Extra (see Route). As data, the manifests under
// deploy/kubernetes, deploy/argo-rollouts and deploy/flagger run Flagpole
// and wire it into those tools; the tests in this package check every
// manifest and that the orchestrator examples match the handlers.
package deploy
