// Package deploy holds Flagpole's integrations with deployment orchestrators
// (Argo Rollouts, Flagger, outbound webhooks) and, as data, the manifests under
// deploy/kubernetes, deploy/argo-rollouts and deploy/flagger that run Flagpole
// and wire it into those tools. The tests in this package check every manifest.
package deploy
