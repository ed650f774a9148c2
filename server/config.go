package server

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/listeners"
)

// Config is the server's whole configuration, filled from flags and MQTT_* environment
// variables (a flag given on the command line wins over its variable), validated once.
//
// Redis topologies: at most one of RedisURL (a single server; the URL may carry
// user, password and database), RedisSentinelMaster with RedisSentinelAddrs (Sentinel)
// or RedisCluster (Redis Cluster seed nodes) is set. Sentinel and Cluster modes take
// their credentials from RedisUsername / RedisPassword, which are refused next to a
// URL so that a password is never given twice.
type Config struct {
	Listen string // -listen, default ":1883"
	HTTP   string // -http, default ":8080"; "" (or "off") turns the health/metrics endpoint off
	// HTTPDefault is true when -http was not given (flag or environment):
	// the server then starts even if the default port is taken.
	HTTPDefault         bool
	Pprof               bool           // -pprof, default false: serve /debug/pprof on the -http listener
	RedisURL            string         // -redis-url, "" = single node; redis://, rediss://, unix://
	RedisPrefix         string         // -redis-prefix, default "mqtt:"
	RedisMaxPatterns    int            // -redis-max-patterns, default 256
	RedisSentinelMaster string         // -redis-sentinel-master; with it, -redis-sentinel-addrs is required
	RedisSentinelAddrs  []string       // -redis-sentinel-addrs host:port,host:port
	RedisCluster        []string       // -redis-cluster host:port,host:port (Redis Cluster seed nodes)
	RedisUsername       string         // -redis-username, Sentinel and Cluster modes only
	RedisPassword       string         // -redis-password, Sentinel and Cluster modes only
	NodeID              string         // -node-id, default: hostname + "-" + 6 random hex chars
	NodeTTL             time.Duration  // -node-ttl, default 10s
	ACLFile             string         // -acl-file
	PasswordFile        string         // -password-file
	AllowAnonymous      bool           // -allow-anonymous, default true
	AuthRedis           bool           // -auth-redis: users and ACL from Redis (mqtt_user:, mqtt_acl:)
	SysInterval         time.Duration  // -sys-interval, default 10s; 0 = no $SYS topics
	MaxPacketSize       int            // -max-packet-size bytes, default 1048576 (1MiB)
	MaxQueuedBytes      int            // -max-queued-bytes, default 8MiB; 0 = no bound
	ConnectTimeout      time.Duration  // -connect-timeout, default 10s
	MaxInflight         int            // -max-inflight, default 20, 1..65535
	MaxQueuedMessages   int            // -max-queued-messages, default 1000, ≥1
	MessageExpiry       time.Duration  // -message-expiry, default 1h
	SessionExpiry       time.Duration  // -session-expiry, default 2h; 0 = never
	ClientIDPattern     *regexp.Regexp // -client-id-pattern, nil = any client id
	MaxConnections      int            // -max-connections, default 0 = unlimited
	MaxSubscriptions    int            // -max-subscriptions-per-client, default 1000; 0 = unlimited
	MaxTopicLength      int            // -max-topic-length bytes, default 65535, 1..65535
	MaxTopicLevels      int            // -max-topic-levels, default 128, 1..32768
	TopicAliasMaximum   int            // -topic-alias-maximum, default 10, 0..65535; 0 = no topic aliases from clients
	ServerKeepAlive     int            // -server-keep-alive seconds, default 0 = the client's keep-alive, 0..65535 (MQTT 5.0)
	ServerReference     string         // -server-reference: where 5.0 clients are sent when this replica drains (DISCONNECT 0x9C); "" = 0x8B
	DrainTimeout        time.Duration  // -drain-timeout, default 10s
	LogLevel            string         // -log-level debug|info|warn|error, default info
	LogFormat           string         // -log-format text|json, default text

	// RedisMinReplicasAcked is -redis-min-replicas-acked, default 0 = off:
	// QoS 1/2 PUBLISH is acknowledged once that many Redis replicas have it.
	RedisMinReplicasAcked int
	// RedisStreamMaxBytes is -redis-stream-max-bytes, default 256MiB, 0 =
	// no byte budget: the Redis memory all stream shards together may use;
	// past it their oldest entries are trimmed.
	RedisStreamMaxBytes int64
	// MaxInflightBytes is -max-inflight-bytes, default 8MiB, 0 = unbounded:
	// PUBLISH bytes one replica has read and its bridge not yet accepted;
	// at the bound the replica stops reading from publishers.
	MaxInflightBytes int64

	// TLSListen is -tls-listen, default "" = off: MQTT over TLS
	// (conventionally :8883), with TLSCert and TLSKey (-tls-cert, -tls-key).
	TLSListen string
	TLSCert   string
	TLSKey    string
	// TLSClientCA is -tls-client-ca: the CAs that sign client certificates.
	TLSClientCA string
	// TLSClientAuth is -tls-client-auth none|optional|require, default none.
	TLSClientAuth tls.ClientAuthType
	// TLSIdentityAsUsername is -tls-identity-as-username: the verified
	// client certificate's Common Name is the username, the CONNECT's
	// username and password are not used.
	TLSIdentityAsUsername bool

	// ProxyProtocol is -proxy-protocol CIDR,...: the load balancers'
	// networks, whose connections must start with a PROXY protocol header
	// on every listener; empty = off.
	ProxyProtocol []netip.Prefix

	// WSListen is -ws-listen, default "" = off: MQTT over WebSocket on
	// path /mqtt, subprotocol mqtt.
	WSListen string
	// WSSListen is -wss-listen, default "" = off: MQTT over secure
	// WebSocket, with the TLS listener's certificates (-tls-cert,
	// -tls-key, -tls-client-ca, -tls-client-auth).
	WSSListen string
}

// ErrHelp is returned by ParseConfig when -h, -help or --help was asked; the usage text
// has then been written to standard output. It is flag.ErrHelp, so either compares equal
// with errors.Is.
var ErrHelp = flag.ErrHelp

// EnvPrefix starts the name of every environment variable the configuration
// reads: MQTT_ and the flag's name in upper snake case (-max-inflight is
// MQTT_MAX_INFLIGHT).
const EnvPrefix = "MQTT_"

const (
	// maxPacketSizeLimit is the largest Remaining Length the variable byte integer can
	// encode, 268,435,455 bytes (MQTT 3.1.1 section 2.2.3, Table 2.4).
	maxPacketSizeLimit = 268435455
	minPacketSize      = 16
	maxNodeIDLen       = 128
)

// option is one configuration knob: its flag, its default as text and how a text value
// is checked and stored. Flags and environment variables share the same parse path, so a
// value means the same thing wherever it comes from.
type option struct {
	name  string
	def   string
	arg   string // placeholder in the usage text; "" for a boolean flag
	usage string
	set   func(c *Config, v string) error
}

// envName is the environment variable of a flag: MQTT_ + the flag in upper snake case.
func envName(flagName string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// options lists every knob in the order the usage text shows them.
func options() []option {
	return []option{
		{name: "listen", def: ":1883", arg: "host:port", usage: "MQTT TCP listener address",
			set: func(c *Config, v string) error { c.Listen = v; return checkHostPort(v) }},
		{name: "ws-listen", def: "", arg: "host:port", usage: `MQTT over WebSocket listener (path /mqtt, subprotocol mqtt), e.g. :8083; "" turns it off`,
			set: func(c *Config, v string) error {
				c.WSListen = v
				if v == "" {
					return nil
				}
				return checkHostPort(v)
			}},
		{name: "wss-listen", def: "", arg: "host:port", usage: `MQTT over secure WebSocket listener (path /mqtt, subprotocol mqtt) with -tls-cert and -tls-key, e.g. :8084; "" turns it off`,
			set: func(c *Config, v string) error {
				c.WSSListen = v
				if v == "" {
					return nil
				}
				return checkHostPort(v)
			}},
		{name: "http", def: ":8080", arg: "host:port", usage: `health, readiness and metrics endpoint; "" or "off" turns it off`,
			set: func(c *Config, v string) error {
				if v == "" || v == "off" {
					c.HTTP = ""
					return nil
				}
				c.HTTP = v
				return checkHostPort(v)
			}},
		{name: "pprof", def: "false", usage: "serve /debug/pprof on the -http listener",
			set: func(c *Config, v string) error { return setBool(&c.Pprof, v) }},
		{name: "redis-url", def: "", arg: "url", usage: "single Redis server: redis://[user:password@]host:port[/db], rediss:// (TLS) or unix:///path; empty = one node, no Redis",
			set: func(c *Config, v string) error { c.RedisURL = v; return checkRedisURL(v) }},
		{name: "redis-prefix", def: "mqtt:", arg: "prefix", usage: "prefix of every Redis key and channel, to share one Redis between deployments",
			set: func(c *Config, v string) error {
				if v == "" || strings.ContainsFunc(v, isSpaceOrControl) {
					return fmt.Errorf("%q must be non-empty without spaces", v)
				}
				c.RedisPrefix = v
				return nil
			}},
		{name: "redis-max-patterns", def: "256", arg: "n", usage: "most Redis PSUBSCRIBE patterns one replica holds; beyond it patterns are widened (Redis pays for every pattern on every PUBLISH)",
			set: func(c *Config, v string) error { return setInt(&c.RedisMaxPatterns, v, 1, 1<<20) }},
		{name: "redis-sentinel-master", def: "", arg: "name", usage: "Redis Sentinel master name (needs -redis-sentinel-addrs)",
			set: func(c *Config, v string) error { c.RedisSentinelMaster = v; return nil }},
		{name: "redis-sentinel-addrs", def: "", arg: "host:port,...", usage: "Redis Sentinel addresses",
			set: func(c *Config, v string) error { return setAddrList(&c.RedisSentinelAddrs, v) }},
		{name: "redis-cluster", def: "", arg: "host:port,...", usage: "Redis Cluster seed nodes",
			set: func(c *Config, v string) error { return setAddrList(&c.RedisCluster, v) }},
		{name: "redis-username", def: "", arg: "name", usage: "Redis ACL user for Sentinel and Cluster modes (a -redis-url carries its own)",
			set: func(c *Config, v string) error { c.RedisUsername = v; return nil }},
		{name: "redis-password", def: "", arg: "password", usage: "Redis password for Sentinel and Cluster modes (a -redis-url carries its own)",
			set: func(c *Config, v string) error { c.RedisPassword = v; return nil }},
		{name: "redis-min-replicas-acked", def: "0", arg: "n", usage: "acknowledge a QoS 1/2 PUBLISH only once n Redis replicas confirmed it (WAIT, 1s timeout, else the client re-sends); 0 = off",
			set: func(c *Config, v string) error { return setInt(&c.RedisMinReplicasAcked, v, 0, 1000) }},
		{name: "redis-stream-max-bytes", def: "256MiB", arg: "size", usage: "most Redis memory the 16 streams kept for replay and offline sessions may use together; past it their oldest entries are trimmed; 0 = count and age caps only",
			set: func(c *Config, v string) error { return setBytes(&c.RedisStreamMaxBytes, v, 0, 1<<40) }},
		{name: "node-id", def: "", arg: "id", usage: `this replica's name in Redis (default hostname-<6 random hex>)`,
			set: func(c *Config, v string) error { c.NodeID = v; return checkNodeID(v) }},
		{name: "node-ttl", def: "10s", arg: "duration", usage: "how long a silent replica stays alive in Redis before another one takes over its clients' wills",
			set: func(c *Config, v string) error { return setDuration(&c.NodeTTL, v, time.Second) }},
		{name: "acl-file", def: "", arg: "path", usage: "topic access control list file",
			set: func(c *Config, v string) error { c.ACLFile = v; return checkReadable(v) }},
		{name: "password-file", def: "", arg: "path", usage: "username/password file",
			set: func(c *Config, v string) error { c.PasswordFile = v; return checkReadable(v) }},
		{name: "allow-anonymous", def: "true", usage: "accept clients that send no username",
			set: func(c *Config, v string) error { return setBool(&c.AllowAnonymous, v) }},
		{name: "auth-redis", def: "false", usage: "read users (mqtt_user:<name>) and their ACL (mqtt_acl:<name>) from the replicas' Redis, shared by every replica; changes apply at once (see the user subcommand); not with -password-file or -acl-file",
			set: func(c *Config, v string) error { return setBool(&c.AuthRedis, v) }},
		{name: "sys-interval", def: "10s", arg: "duration", usage: "how often this replica publishes its $SYS/broker/... figures (Mosquitto's names), retained and delivered on this replica only; at least 100ms; 0 = no $SYS topics",
			set: func(c *Config, v string) error { return setSysInterval(&c.SysInterval, v) }},
		{name: "max-packet-size", def: "1MiB", arg: "size", usage: "largest packet accepted, in bytes or with a KiB/MiB suffix, 16..268435455",
			set: func(c *Config, v string) error { return setSize(&c.MaxPacketSize, v) }},
		{name: "connect-timeout", def: "10s", arg: "duration", usage: "how long a new connection may take to send CONNECT",
			set: func(c *Config, v string) error { return setDuration(&c.ConnectTimeout, v, time.Millisecond) }},
		{name: "max-inflight", def: "20", arg: "n", usage: "outgoing QoS 1/2 messages awaiting acknowledgement per client, 1..65535",
			set: func(c *Config, v string) error { return setInt(&c.MaxInflight, v, 1, 65535) }},
		{name: "max-inflight-bytes", def: "8MiB", arg: "size", usage: "most PUBLISH bytes this replica holds on their way to Redis; at the bound it stops reading from publishers until Redis answers; at least -max-packet-size (the default grows to it); 0 = unbounded",
			set: func(c *Config, v string) error { return setBytes(&c.MaxInflightBytes, v, 0, 1<<40) }},
		{name: "max-queued-messages", def: "1000", arg: "n", usage: "messages kept per session while its client is offline or slow, at least 1",
			set: func(c *Config, v string) error { return setInt(&c.MaxQueuedMessages, v, 1, maxInt) }},
		{name: "max-queued-bytes", def: "8MiB", arg: "size", usage: "bytes of topics, payloads and 5.0 properties queued per client, bytes or KiB/MiB/GiB; beyond it a connected client's new messages are dropped, an offline session keeps its newest, counted; 0 = no bound",
			set: func(c *Config, v string) error { return setQueueBytes(&c.MaxQueuedBytes, v) }},
		{name: "message-expiry", def: "1h", arg: "duration", usage: "how long a message queued for an offline session is kept",
			set: func(c *Config, v string) error { return setDuration(&c.MessageExpiry, v, time.Second) }},
		{name: "session-expiry", def: "2h", arg: "duration", usage: "a persistent session offline longer than this is removed with its subscriptions (0 = never)",
			set: func(c *Config, v string) error { return setDuration(&c.SessionExpiry, v, 0) }},
		{name: "client-id-pattern", def: "", arg: "regexp", usage: "a regular expression every client id must match in full (CONNACK 0x02 otherwise); empty = any",
			set: func(c *Config, v string) error { return setPattern(&c.ClientIDPattern, v) }},
		{name: "max-connections", def: "0", arg: "n", usage: "most client connections this replica accepts, 0 = unlimited",
			set: func(c *Config, v string) error { return setInt(&c.MaxConnections, v, 0, maxInt) }},
		{name: "max-subscriptions-per-client", def: "1000", arg: "n", usage: "distinct topic filters one client may hold; a SUBSCRIBE filter beyond it gets 0x80 in SUBACK (0 = unlimited)",
			set: func(c *Config, v string) error { return setInt(&c.MaxSubscriptions, v, 0, maxInt) }},
		{name: "max-topic-length", def: "65535", arg: "bytes", usage: "longest topic name or filter, 1..65535: a longer SUBSCRIBE filter gets 0x80, a longer PUBLISH is refused (QoS 1/2: the connection is closed), a longer will topic refuses the CONNECT",
			set: func(c *Config, v string) error { return setInt(&c.MaxTopicLength, v, 1, 65535) }},
		{name: "max-topic-levels", def: "128", arg: "n", usage: "most levels in a topic name or filter, 1..32768; beyond it as for -max-topic-length",
			set: func(c *Config, v string) error { return setInt(&c.MaxTopicLevels, v, 1, 32768) }},
		{name: "topic-alias-maximum", def: "10", arg: "n", usage: "Topic Alias Maximum an MQTT 5.0 client is given in CONNACK: how many topic aliases it may use on one connection, 0..65535 (0 = none)",
			set: func(c *Config, v string) error { return setInt(&c.TopicAliasMaximum, v, 0, 65535) }},
		{name: "server-keep-alive", def: "0", arg: "seconds", usage: "keep-alive the server imposes on MQTT 5.0 clients (Server Keep Alive in CONNACK), 0..65535; 0 = the client's own",
			set: func(c *Config, v string) error { return setInt(&c.ServerKeepAlive, v, 0, 65535) }},
		{name: "server-reference", def: "", arg: "host:port", usage: "where MQTT 5.0 clients should reconnect when this replica drains: its DISCONNECT says 0x9C (use another server) with this Server Reference, usually the load balancer's address; empty = 0x8B (server shutting down)",
			set: func(c *Config, v string) error { c.ServerReference = v; return nil }},
		{name: "drain-timeout", def: "10s", arg: "duration", usage: "how long SIGTERM waits for clients to leave before closing them (0 = at once)",
			set: func(c *Config, v string) error { return setDuration(&c.DrainTimeout, v, 0) }},
		{name: "tls-listen", def: "", arg: "host:port", usage: "MQTT over TLS listener address, conventionally :8883 (needs -tls-cert and -tls-key); empty = off",
			set: func(c *Config, v string) error {
				c.TLSListen = v
				if v == "" {
					return nil
				}
				return checkHostPort(v)
			}},
		{name: "tls-cert", def: "", arg: "path", usage: "PEM certificate chain of the TLS listener, leaf first; re-read on SIGHUP and when it changes",
			set: func(c *Config, v string) error { c.TLSCert = v; return checkReadable(v) }},
		{name: "tls-key", def: "", arg: "path", usage: "PEM private key of -tls-cert; re-read with it",
			set: func(c *Config, v string) error { c.TLSKey = v; return checkReadable(v) }},
		{name: "tls-client-ca", def: "", arg: "path", usage: "PEM CA certificates that sign client certificates (for -tls-client-auth optional or require)",
			set: func(c *Config, v string) error { c.TLSClientCA = v; return checkReadable(v) }},
		{name: "tls-client-auth", def: "none", arg: "mode", usage: "client certificates on the TLS listener: none, optional (verified when sent) or require",
			set: func(c *Config, v string) error { return setClientAuth(&c.TLSClientAuth, v) }},
		{name: "tls-identity-as-username", def: "false", usage: "take the verified client certificate's Common Name as the username and ignore the CONNECT's username and password (needs -tls-client-auth require)",
			set: func(c *Config, v string) error { return setBool(&c.TLSIdentityAsUsername, v) }},
		{name: "proxy-protocol", def: "", arg: "CIDR,...", usage: "the load balancers' networks: connections from them must start with a PROXY protocol v1/v2 header giving the client's address, connections from elsewhere must not; every listener; empty = off",
			set: func(c *Config, v string) error {
				c.ProxyProtocol = nil
				if v == "" {
					return nil
				}
				p, err := listeners.ParseTrusted(v)
				c.ProxyProtocol = p
				return err
			}},
		{name: "log-level", def: "info", arg: "level", usage: "debug, info, warn or error",
			set: func(c *Config, v string) error { return setEnum(&c.LogLevel, v, "debug", "info", "warn", "error") }},
		{name: "log-format", def: "text", arg: "format", usage: "text or json",
			set: func(c *Config, v string) error { return setEnum(&c.LogFormat, v, "text", "json") }},
	}
}

const maxInt = int(^uint(0) >> 1)

// rawValue records a flag's text as given; parsing happens later, in one place for flags
// and environment variables alike.
type rawValue struct {
	text   string
	isBool bool
}

func (v *rawValue) String() string     { return v.text }
func (v *rawValue) Set(s string) error { v.text = s; return nil }
func (v *rawValue) IsBoolFlag() bool   { return v.isBool }

// ParseConfig parses args (without the program name) and the environment, read through
// getenv. An empty environment variable counts as unset. On -h it writes the usage text
// to standard output and returns ErrHelp.
func ParseConfig(args []string, getenv func(string) string) (*Config, error) {
	return parseConfig(args, getenv, os.Stdout)
}

// parseConfig is ParseConfig with the help output chosen by the caller.
func parseConfig(args []string, getenv func(string) string, helpOut io.Writer) (*Config, error) {
	opts := options()
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	raw := make(map[string]*rawValue, len(opts))
	for _, o := range opts {
		v := &rawValue{isBool: o.arg == ""}
		raw[o.name] = v
		fs.Var(v, o.name, o.usage)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			Usage(helpOut)
			return nil, ErrHelp
		}
		return nil, flagError(err)
	}
	if fs.NArg() > 0 {
		return nil, positionalError(args, fs.NArg(), raw)
	}
	given := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	c := &Config{}
	for _, o := range opts {
		text, label := o.def, "-"+o.name
		switch {
		case given[o.name]:
			text = raw[o.name].text
		case getenv(envName(o.name)) != "":
			text = getenv(envName(o.name))
			label = envName(o.name) + " (for -" + o.name + ")"
		}
		if err := o.set(c, text); err != nil {
			return nil, fmt.Errorf("%s: %w", label, err)
		}
		if o.name == "http" {
			c.HTTPDefault = !given[o.name] && getenv(envName(o.name)) == ""
		}
	}
	if !given["max-inflight-bytes"] && getenv(envName("max-inflight-bytes")) == "" && c.MaxInflightBytes > 0 {
		// The default budget grows to hold one PUBLISH of the largest size
		// allowed; one given explicitly below it is refused (validate).
		c.MaxInflightBytes = max(c.MaxInflightBytes, int64(c.MaxPacketSize))
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if c.NodeID == "" {
		id, err := defaultNodeID()
		if err != nil {
			return nil, fmt.Errorf("-node-id: no default: %w", err)
		}
		c.NodeID = id
	}
	return c, nil
}

// positionalError explains the first positional argument; the usual cause is a boolean
// flag given its value as a separate word ("-pprof false"), which the flag package stops at.
func positionalError(args []string, nArgs int, raw map[string]*rawValue) error {
	i := len(args) - nArgs
	first := args[i]
	if i > 0 {
		name := strings.TrimLeft(args[i-1], "-")
		if v, ok := raw[name]; ok && v.isBool {
			return fmt.Errorf("-%s: a boolean takes its value after '=', as -%s=%s", name, name, first)
		}
	}
	return fmt.Errorf("%q: unexpected argument; every setting is a flag (see -h)", first)
}

// flagError rewrites the flag package's messages into this file's "-flag: problem" form.
func flagError(err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		return fmt.Errorf("%s: unknown flag (see -h)", name)
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
		return fmt.Errorf("%s: needs a value", name)
	}
	if _, after, ok := strings.Cut(msg, "bad flag syntax: "); ok {
		return fmt.Errorf("%q: bad flag syntax (see -h)", after)
	}
	return fmt.Errorf("%w (see -h)", err)
}

// validate checks the rules that span several flags.
func (c *Config) validate() error {
	if c.Pprof && c.HTTP == "" {
		return errors.New("-pprof: needs the -http listener, which is off")
	}
	if c.HTTP != "" && samePort(c.Listen, c.HTTP) {
		return fmt.Errorf("-http: %q uses the same port as -listen %q", c.HTTP, c.Listen)
	}
	if err := c.validateTLS(); err != nil {
		return err
	}
	if c.WSListen != "" && samePort(c.Listen, c.WSListen) {
		return fmt.Errorf("-ws-listen: %q uses the same port as -listen %q", c.WSListen, c.Listen)
	}
	if c.WSListen != "" && c.HTTP != "" && samePort(c.HTTP, c.WSListen) {
		return fmt.Errorf("-ws-listen: %q uses the same port as -http %q", c.WSListen, c.HTTP)
	}
	if c.RedisSentinelMaster != "" && len(c.RedisSentinelAddrs) == 0 {
		return errors.New("-redis-sentinel-master: needs -redis-sentinel-addrs")
	}
	if c.RedisSentinelMaster == "" && len(c.RedisSentinelAddrs) > 0 {
		return errors.New("-redis-sentinel-addrs: needs -redis-sentinel-master")
	}
	var modes []string
	if c.RedisURL != "" {
		modes = append(modes, "-redis-url")
	}
	if c.RedisSentinelMaster != "" {
		modes = append(modes, "-redis-sentinel-master")
	}
	if len(c.RedisCluster) > 0 {
		modes = append(modes, "-redis-cluster")
	}
	if len(modes) > 1 {
		return fmt.Errorf("%s: cannot be combined with %s; choose one Redis topology", modes[1], modes[0])
	}
	if c.RedisURL != "" && c.RedisUsername != "" {
		return errors.New("-redis-username: not used with -redis-url; put the user in the URL")
	}
	if c.RedisURL != "" && c.RedisPassword != "" {
		return errors.New("-redis-password: not used with -redis-url; put the password in the URL")
	}
	if len(modes) == 0 && (c.RedisUsername != "" || c.RedisPassword != "") {
		return errors.New("-redis-username/-redis-password: no Redis configured (-redis-sentinel-master or -redis-cluster)")
	}
	if c.AuthRedis && len(modes) == 0 {
		return errors.New("-auth-redis: no Redis configured (-redis-url, -redis-sentinel-master or -redis-cluster)")
	}
	if c.AuthRedis && c.PasswordFile != "" {
		return errors.New("-auth-redis: cannot be combined with -password-file; users come from Redis")
	}
	if c.AuthRedis && c.ACLFile != "" {
		return errors.New("-auth-redis: cannot be combined with -acl-file; the ACL comes from Redis")
	}
	if c.MaxInflightBytes > 0 && c.MaxInflightBytes < int64(c.MaxPacketSize) {
		return fmt.Errorf("-max-inflight-bytes: %d is below -max-packet-size %d: one PUBLISH would take all of it and hold every other publisher; raise it, or 0 for no bound",
			c.MaxInflightBytes, c.MaxPacketSize)
	}
	if c.RedisMinReplicasAcked > 0 && len(modes) == 0 {
		return errors.New("-redis-min-replicas-acked: no Redis configured (-redis-url or -redis-sentinel-master)")
	}
	if c.RedisMinReplicasAcked > 0 && len(c.RedisCluster) > 0 {
		return errors.New("-redis-min-replicas-acked: not supported with -redis-cluster (WAIT must follow the writes on one connection)")
	}
	return nil
}

// samePort reports whether two listen addresses, both already valid, would bind the same
// fixed port on overlapping hosts. Port 0 picks a free port and never clashes.
func samePort(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	if pa != pb || pa == "0" {
		return false
	}
	return ha == hb || anyHost(ha) || anyHost(hb)
}

// anyHost reports whether host binds every interface.
func anyHost(host string) bool { return host == "" || host == "0.0.0.0" || host == "::" }

// RedisClient returns a client for the configured Redis topology, or nil when no Redis is
// configured (one node, in-process bridge). It does not connect.
func (c *Config) RedisClient() (redis.UniversalClient, error) {
	switch {
	case c.RedisURL != "":
		opts, err := redis.ParseURL(c.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("-redis-url: %w", err)
		}
		if opts.Protocol == 0 { // the URL may ask for one: ?protocol=3
			opts.Protocol = redisProtocol
		}
		return redis.NewClient(opts), nil
	case c.RedisSentinelMaster != "":
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:       c.RedisSentinelMaster,
			SentinelAddrs:    c.RedisSentinelAddrs,
			Username:         c.RedisUsername,
			Password:         c.RedisPassword,
			SentinelUsername: c.RedisUsername,
			SentinelPassword: c.RedisPassword,
			Protocol:         redisProtocol,
		}), nil
	case len(c.RedisCluster) > 0:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:    c.RedisCluster,
			Username: c.RedisUsername,
			Password: c.RedisPassword,
			Protocol: redisProtocol,
		}), nil
	}
	return nil, nil
}

// NewLogger builds the slog.Logger the config asks for, writing to w.
func (c *Config) NewLogger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch c.LogLevel {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	ho := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

// Usage writes every flag with its default and its environment variable to w.
func Usage(w io.Writer) {
	var b strings.Builder
	b.WriteString("Usage: server [flags]\n\n")
	b.WriteString("An MQTT 3.1, 3.1.1 and 5.0 server; replicas share state through Redis, or run as\n")
	b.WriteString("one node without it. Every flag can also be set by its MQTT_* environment variable;\n")
	b.WriteString("a flag given on the command line wins. Durations: 500ms, 10s, 1m30s.\n")
	b.WriteString("\"server user -h\" manages the users kept in Redis for -auth-redis.\n\n")
	for _, o := range options() {
		if o.arg == "" {
			fmt.Fprintf(&b, "  -%s\n", o.name)
		} else {
			fmt.Fprintf(&b, "  -%s %s\n", o.name, o.arg)
		}
		def := strconv.Quote(o.def)
		if o.name == "node-id" {
			def = "hostname-<6 random hex>"
		}
		fmt.Fprintf(&b, "        %s\n        (default %s, env %s)\n", o.usage, def, envName(o.name))
	}
	_, _ = io.WriteString(w, b.String())
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

func checkHostPort(v string) error {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%q is not a host:port address", v)
	}
	if strings.ContainsFunc(host, isSpaceOrControl) {
		return fmt.Errorf("%q is not a host:port address", v)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number 0..65535", v, port)
	}
	return nil
}

func setAddrList(dst *[]string, v string) error {
	*dst = nil
	if v == "" {
		return nil
	}
	for _, a := range strings.Split(v, ",") {
		a = strings.TrimSpace(a)
		host, _, _ := net.SplitHostPort(a)
		if err := checkHostPort(a); err != nil || host == "" {
			return fmt.Errorf("%q is not a comma-separated list of host:port", v)
		}
		*dst = append(*dst, a)
	}
	return nil
}

// checkRedisURL parses v as go-redis will. Errors show the URL with its password redacted.
func checkRedisURL(v string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("not a URL: %w", err)
	}
	switch u.Scheme {
	case "redis", "rediss", "unix":
	default:
		return fmt.Errorf("%q: scheme %q: want redis://, rediss:// or unix://", u.Redacted(), u.Scheme)
	}
	if u.Scheme != "unix" {
		if db := strings.TrimPrefix(u.Path, "/"); db != "" {
			if n, err := strconv.Atoi(db); err != nil || n < 0 {
				return fmt.Errorf("%q: database %q is not a number 0 or above (redis://host:port/<db>)", u.Redacted(), db)
			}
		}
	}
	if _, err := redis.ParseURL(v); err != nil {
		return fmt.Errorf("%q: %w", u.Redacted(), err)
	}
	return nil
}

// checkNodeID keeps node ids safe inside Redis key names and log lines.
func checkNodeID(v string) error {
	if v == "" {
		return nil // the default is made after validation
	}
	if len(v) > maxNodeIDLen || strings.IndexFunc(v, func(r rune) bool { return !nodeIDRune(r) }) >= 0 {
		return fmt.Errorf("%q: use at most %d of A-Z a-z 0-9 . _ -", v, maxNodeIDLen)
	}
	return nil
}

func nodeIDRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
}

// defaultNodeID is the host name (characters a node id may not hold become '-') plus six
// random hex characters, so two replicas on one host never share an id.
func defaultNodeID() (string, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "node"
	}
	host = strings.Map(func(r rune) rune {
		if nodeIDRune(r) {
			return r
		}
		return '-'
	}, host)
	if len(host) > maxNodeIDLen-7 {
		host = host[:maxNodeIDLen-7]
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("random suffix: %w", err)
	}
	return host + "-" + hex.EncodeToString(b[:]), nil
}

func checkReadable(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cannot read: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("cannot read: %w", err)
	}
	if st.IsDir() {
		return fmt.Errorf("%q is a directory, not a file", path)
	}
	return nil
}

func setBool(dst *bool, v string) error {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("%q is not a boolean (true or false)", v)
	}
	*dst = b
	return nil
}

func setInt(dst *int, v string, lo, hi int) error {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("%q is not a whole number", v)
	}
	if n < lo || n > hi {
		if hi == maxInt {
			return fmt.Errorf("%d is below the minimum %d", n, lo)
		}
		return fmt.Errorf("%d is outside %d..%d", n, lo, hi)
	}
	*dst = n
	return nil
}

// setSysInterval parses -sys-interval: 0 (off) or at least 100ms; a
// nanosecond made the server publish its $SYS topics in a loop (a hostile
// review: 111% CPU with no client).
func setSysInterval(dst *time.Duration, v string) error {
	if err := setDuration(dst, v, 0); err != nil {
		return err
	}
	if *dst > 0 && *dst < 100*time.Millisecond {
		return fmt.Errorf("%s is below the minimum 100ms (0 turns $SYS off)", *dst)
	}
	return nil
}

// setDuration parses a Go duration of at least min; min 0 allows zero.
func setDuration(dst *time.Duration, v string, min time.Duration) error {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("%q is not a duration (e.g. 500ms, 10s, 1m30s)", v)
	}
	if d < min {
		if min == 0 {
			return fmt.Errorf("%s is negative", d)
		}
		return fmt.Errorf("%s is below the minimum %s", d, min)
	}
	*dst = d
	return nil
}

// setPattern compiles v, anchored so that it must match a whole client id.
func setPattern(dst **regexp.Regexp, v string) error {
	if v == "" {
		*dst = nil
		return nil
	}
	re, err := regexp.Compile(`^(?:` + v + `)$`)
	if err != nil {
		return fmt.Errorf("%q is not a regular expression: %w", v, err)
	}
	*dst = re
	return nil
}

// setSize parses bytes, or a number with a KiB or MiB suffix (1024-based).
// setQueueBytes parses a size like setSize, where 0 means no bound.
func setQueueBytes(dst *int, v string) error {
	var n int64
	if err := setBytes(&n, v, 0, 1<<40); err != nil {
		return err
	}
	*dst = int(n)
	return nil
}

func setSize(dst *int, v string) error {
	s := strings.TrimSpace(v)
	mult := 1
	switch {
	case strings.HasSuffix(s, "KiB"):
		s, mult = strings.TrimSpace(strings.TrimSuffix(s, "KiB")), 1<<10
	case strings.HasSuffix(s, "MiB"):
		s, mult = strings.TrimSpace(strings.TrimSuffix(s, "MiB")), 1<<20
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return fmt.Errorf("%q is not a size (bytes, or with KiB/MiB suffix)", v)
	}
	size := n * uint64(mult)
	if size < minPacketSize || size > maxPacketSizeLimit {
		return fmt.Errorf("%q is outside %d..%d bytes (MQTT 3.1.1 section 2.2.3)", v, minPacketSize, maxPacketSizeLimit)
	}
	*dst = int(size)
	return nil
}

// setBytes parses bytes, or a number with a KiB, MiB or GiB suffix
// (1024-based), within lo..hi.
func setBytes(dst *int64, v string, lo, hi int64) error {
	s := strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("%q is not a size (bytes, or with KiB/MiB/GiB suffix)", v)
	}
	if n > hi/mult || n*mult < lo {
		return fmt.Errorf("%q is outside %d..%d bytes", v, lo, hi)
	}
	*dst = n * mult
	return nil
}

func setEnum(dst *string, v string, allowed ...string) error {
	lv := strings.ToLower(strings.TrimSpace(v))
	for _, a := range allowed {
		if lv == a {
			*dst = a
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
}
