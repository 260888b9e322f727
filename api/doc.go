// Package api is Flagpole's HTTP server (echo v4): OFREP evaluation for
// OpenFeature SDKs, the admin REST API under /api/v1, health probes and
// Prometheus metrics. [New] builds a [Server] from its dependencies;
// [Server.Run] loads every environment's flag set and keeps it current.
//
// # Evaluation
//
// OFREP requests never touch the store. Each environment's flag set is held
// compiled in memory (an atomic pointer per replica, swapped whole on every
// change) together with the response bodies that do not depend on the
// context, precomputed once per version. Run subscribes to the store's
// change notifications and reloads only the changed environment; a periodic
// poll (Config.SyncInterval) catches anything missed, and a notification
// that the subscription was re-established re-reads every environment. A
// stored flag set that fails to compile is logged and counted, and the last
// good one keeps being served. When the store is unreachable evaluation
// carries on with what it has (fail static).
//
// API keys are looked up by the SHA-256 of the secret and cached in memory.
// An entry older than two seconds is still used while one background
// refresh per key asks the key store again, so evaluation never waits on
// the store for a key it has seen. Revoking a key through a replica drops
// it from that replica's cache at once; other replicas stop accepting it
// within about two seconds (the TTL plus one refresh). While the key store
// is unreachable a key seen before keeps working; an unknown one gets 503.
//
// # Admin API
//
// Every admin failure has one JSON shape,
// {"error":{"code","message","details":[{"field","problem"}]}}, with a 4xx
// status for every client mistake (400 malformed input naming the field or
// position, 401, 403, 404, 409, 412, 413, 415, 422 invalid flags listing
// every problem) and 503 when the store is down, in which case nothing was
// changed. Writes go through flags.Service: the actor is the key's name,
// the reason comes from a "reason" member or X-Change-Reason, and If-Match
// carries the version the writer saw.
//
// The OpenAPI document at /api/v1/openapi.json describes every route.
package api
