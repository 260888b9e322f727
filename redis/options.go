package redis

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/flagpole/flagpole/flags"
)

// DefaultPrefix is the key prefix used when Options.Prefix is empty.
const DefaultPrefix = "flagpole:"

// DefaultAuditLimit is how many audit entries each environment keeps when
// Options.AuditLimit is 0. Older entries are dropped as new ones arrive.
const DefaultAuditLimit = 100_000

// Options configure a Store.
type Options struct {
	// URL says where Redis is (ignored by OpenEmbedded):
	//   redis://[user:pass@]host:port[/db]           a single node
	//   rediss://…                                    the same over TLS
	//   redis+sentinel://[:pass@]h1:p,h2:p/master[/db] a Sentinel-managed primary
	//   redis+cluster://[user:pass@]h1:p,h2:p          a Redis Cluster
	// A missing port means 6379 (26379 for Sentinel).
	URL string
	// Prefix starts every key and channel name; "" means DefaultPrefix. It
	// must not contain '{' or '}' (they delimit Cluster hash tags).
	Prefix string
	// Logger receives connection-state changes; nil discards.
	Logger *slog.Logger
	// Registerer, when set, receives the store's metrics.
	Registerer prometheus.Registerer
	// AuditLimit caps each environment's audit log; 0 means DefaultAuditLimit.
	AuditLimit int

	// pingEvery is how often the connection-state probe runs; 0 means 2s.
	// Unexported: tests shorten it.
	pingEvery time.Duration
}

// clientKind says which go-redis client an URL maps onto.
type clientKind int

const (
	kindSimple clientKind = iota
	kindSentinel
	kindCluster
)

// parseURL maps o.URL onto go-redis options. Errors are *flags.InputError
// naming the field "url"; the URL itself is never echoed (it may carry a
// password).
func parseURL(raw string) (clientKind, *goredis.UniversalOptions, error) {
	bad := func(format string, args ...any) error {
		return &flags.InputError{Field: "url", Problem: fmt.Sprintf(format, args...)}
	}
	if strings.TrimSpace(raw) == "" {
		return 0, nil, bad("is required")
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return 0, nil, bad("must look like redis://host:port")
	}
	switch strings.ToLower(scheme) {
	case "redis", "rediss":
		if u, err := url.Parse(raw); err != nil || u.Hostname() == "" {
			return 0, nil, bad("needs a host, as in redis://host:6379")
		}
		o, err := goredis.ParseURL(raw)
		if err != nil {
			// go-redis quotes the URL in some messages; keep only our words.
			return 0, nil, bad("is not a valid redis:// URL (host, port or database is malformed)")
		}
		return kindSimple, &goredis.UniversalOptions{
			Addrs: []string{o.Addr}, Username: o.Username, Password: o.Password, DB: o.DB, TLSConfig: o.TLSConfig,
		}, nil
	case "redis+sentinel", "rediss+sentinel":
		u, err := splitMultiHost(rest, "26379")
		if err != nil {
			return 0, nil, bad("%s", err)
		}
		parts := strings.Split(strings.Trim(u.path, "/"), "/")
		if parts[0] == "" {
			return 0, nil, bad("needs the master name as its path, as in redis+sentinel://host:26379/mymaster")
		}
		if len(parts) > 2 {
			return 0, nil, bad("path must be /master or /master/db")
		}
		db := 0
		if len(parts) == 2 {
			if db, err = strconv.Atoi(parts[1]); err != nil || db < 0 {
				return 0, nil, bad("database %q must be a non-negative number", parts[1])
			}
		}
		o := &goredis.UniversalOptions{Addrs: u.hosts, MasterName: parts[0], DB: db, Username: u.user, Password: u.pass}
		if strings.HasPrefix(strings.ToLower(scheme), "rediss") {
			o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		return kindSentinel, o, nil
	case "redis+cluster", "rediss+cluster":
		u, err := splitMultiHost(rest, "6379")
		if err != nil {
			return 0, nil, bad("%s", err)
		}
		if p := strings.Trim(u.path, "/"); p != "" && p != "0" {
			return 0, nil, bad("a cluster has only database 0")
		}
		o := &goredis.UniversalOptions{Addrs: u.hosts, IsClusterMode: true, Username: u.user, Password: u.pass}
		if strings.HasPrefix(strings.ToLower(scheme), "rediss") {
			o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		return kindCluster, o, nil
	default:
		return 0, nil, bad("scheme %q is not one of redis, rediss, redis+sentinel, redis+cluster", scheme)
	}
}

type multiHost struct {
	user, pass string
	hosts      []string
	path       string
}

// splitMultiHost parses "[user:pass@]h1:p,h2:p[/path]" (the part after "://").
func splitMultiHost(rest, defaultPort string) (multiHost, error) {
	var m multiHost
	if i := strings.IndexAny(rest, "?#"); i >= 0 {
		return m, fmt.Errorf("query parameters and fragments are not supported")
	}
	hostPart := rest
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		hostPart, m.path = rest[:i], rest[i:]
	}
	if i := strings.LastIndexByte(hostPart, '@'); i >= 0 {
		info := hostPart[:i]
		hostPart = hostPart[i+1:]
		user, pass, _ := strings.Cut(info, ":")
		var err error
		if m.user, err = url.PathUnescape(user); err != nil {
			return m, fmt.Errorf("user name is badly escaped")
		}
		if m.pass, err = url.PathUnescape(pass); err != nil {
			return m, fmt.Errorf("password is badly escaped")
		}
	}
	if hostPart == "" {
		return m, fmt.Errorf("needs at least one host:port")
	}
	for h := range strings.SplitSeq(hostPart, ",") {
		if h == "" {
			return m, fmt.Errorf("has an empty host in its host list")
		}
		host, port, err := net.SplitHostPort(h)
		if err != nil {
			host, port = h, defaultPort
			if strings.Contains(h, ":") && !strings.HasPrefix(h, "[") {
				return m, fmt.Errorf("host %q is malformed", h)
			}
			host = strings.Trim(host, "[]")
		}
		if host == "" {
			return m, fmt.Errorf("host %q has no name", h)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return m, fmt.Errorf("port %q of host %q must be 1 to 65535", port, host)
		}
		m.hosts = append(m.hosts, net.JoinHostPort(host, port))
	}
	return m, nil
}

// checkPrefix validates Options.Prefix and applies the default.
func checkPrefix(p string) (string, error) {
	if p == "" {
		return DefaultPrefix, nil
	}
	if strings.ContainsAny(p, "{}") {
		return "", &flags.InputError{Field: "prefix", Problem: "must not contain '{' or '}' (they delimit Redis Cluster hash tags)"}
	}
	return p, nil
}
