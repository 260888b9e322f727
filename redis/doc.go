// Package redis is Flagpole's store: environments, their flag sets, the
// audit log and API keys, kept in Redis through go-redis (a single node,
// Sentinel or Cluster, chosen by URL) or in an embedded in-process Redis
// (miniredis) persisted to a data directory. It implements flags.Store and
// auth.Store; go-redis types never leave the package.
//
// Every key, Lua script and pub/sub channel lives here (see keyspace for the
// layout). An environment's keys share one Cluster hash tag, so each write is
// a single atomic Lua script: check the version, write the document, bump the
// version, set updatedAt, append the audit entry to the environment's log and
// to a per-flag index for each changed flag, and publish the change. The list
// of environments is a separate key, maintained idempotently beside the
// script.
//
// Audit entries get store-assigned IDs "MILLIS-VERSION" (zero-padded) that
// sort by time. Each environment's log is capped: Options.AuditLimit,
// default DefaultAuditLimit (100,000) entries; older entries are dropped,
// oldest first, as new ones arrive.
//
// OpenEmbedded runs miniredis in-process for single-node use without a Redis
// server; its state is kept in a data directory as a snapshot plus an
// fsynced journal, so nothing acknowledged is lost across a restart.
// Production deployments use a real Redis through Open.
//
// Errors are translated once: missing data becomes flags.ErrNotFound (or
// auth.ErrNotFound), and a server that cannot be reached, is loading, is
// read-only or refuses the connection becomes a wrapped flags.ErrUnavailable.
package redis
