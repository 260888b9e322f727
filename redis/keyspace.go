package redis

// keyspace names every Redis key and channel the store uses. All of an
// environment's keys share the hash tag {env:NAME}, so a Lua script may touch
// them together on a Redis Cluster; the API keys share the tag {keys}.
//
//	PREFIX{env:NAME}:meta       hash: version, doc, updatedAt, lastms, lastid, op
//	PREFIX{env:NAME}:log        sorted set: audit entries scored by version, member "ID JSON"
//	PREFIX{env:NAME}:flags      set: flag keys that have a per-flag index
//	PREFIX{env:NAME}:flag:KEY   sorted set: versions whose audit entry changed KEY
//	PREFIX environments         set: every environment name (global index)
//	PREFIX changes              pub/sub channel: "VERSION ENV" after each write (VERSION 0: deleted)
//	PREFIX{keys}:byid           hash: key ID → key JSON (with its hash)
//	PREFIX{keys}:byhash         hash: secret hash → key ID
//	PREFIX{keys}:revoked        hash: key ID → revocation time
type keyspace struct{ prefix string }

func (k keyspace) envTag(env string) string { return k.prefix + "{env:" + env + "}:" }
func (k keyspace) meta(env string) string   { return k.envTag(env) + "meta" }
func (k keyspace) log(env string) string    { return k.envTag(env) + "log" }
func (k keyspace) flagSet(env string) string {
	return k.envTag(env) + "flags"
}
func (k keyspace) flagIndexPrefix(env string) string { return k.envTag(env) + "flag:" }
func (k keyspace) flagIndex(env, flag string) string { return k.flagIndexPrefix(env) + flag }
func (k keyspace) environments() string              { return k.prefix + "environments" }
func (k keyspace) changes() string                   { return k.prefix + "changes" }
func (k keyspace) keysByID() string                  { return k.prefix + "{keys}:byid" }
func (k keyspace) keysByHash() string                { return k.prefix + "{keys}:byhash" }
func (k keyspace) keysRevoked() string               { return k.prefix + "{keys}:revoked" }
