package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// env turns a map into the getenv ParseConfig reads.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// readableFile writes a small file and returns its path.
func readableFile(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte("# test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustParse(t *testing.T, args []string, vars map[string]string) *Config {
	t.Helper()
	var help bytes.Buffer
	c, err := parseConfig(args, env(vars), &help)
	if err != nil {
		t.Fatalf("parseConfig(%q, %v): %v", args, vars, err)
	}
	return c
}

func TestParseConfig_Defaults(t *testing.T) {
	c := mustParse(t, nil, nil)
	nodeID := c.NodeID
	c.NodeID = ""
	want := &Config{
		Listen:            ":1883",
		HTTP:              ":8080",
		HTTPDefault:       true,
		RedisPrefix:       "mqtt:",
		RedisMaxPatterns:  256,
		NodeTTL:           10 * time.Second,
		AllowAnonymous:    true,
		MaxPacketSize:     1048576,
		MaxQueuedBytes:    8 << 20,
		ConnectTimeout:    10 * time.Second,
		MaxInflight:       20,
		MaxQueuedMessages: 1000,
		MaxInflightBytes:  8 << 20,
		MessageExpiry:     time.Hour,
		SessionExpiry:     2 * time.Hour,
		MaxSubscriptions:  1000,
		MaxTopicLength:    65535,
		MaxTopicLevels:    128,
		TopicAliasMaximum: 10,
		DrainTimeout:      10 * time.Second,
		SysInterval:       10 * time.Second,
		LogLevel:          "info",
		LogFormat:         "text",

		RedisStreamMaxBytes: 256 << 20,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9._-]+-[0-9a-f]{6}$`).MatchString(nodeID) {
		t.Errorf("default node id %q is not hostname-<6 hex>", nodeID)
	}
	if other := mustParse(t, nil, nil).NodeID; other == nodeID {
		t.Errorf("two default node ids are both %q; the random suffix must differ", nodeID)
	}
}

// setting is one flag given a value, and what the Config must then hold.
type setting struct {
	flag  string
	value string
	get   func(*Config) any
	want  any
}

func settings(t *testing.T) []setting {
	acl, pw := readableFile(t, "acl"), readableFile(t, "passwords")
	return []setting{
		{"listen", "127.0.0.1:1884", func(c *Config) any { return c.Listen }, "127.0.0.1:1884"},
		{"http", "127.0.0.1:9090", func(c *Config) any { return c.HTTP }, "127.0.0.1:9090"},
		{"http", "off", func(c *Config) any { return c.HTTP }, ""},
		{"pprof", "true", func(c *Config) any { return c.Pprof }, true},
		{"redis-url", "redis://u:p@10.0.0.1:6380/2", func(c *Config) any { return c.RedisURL }, "redis://u:p@10.0.0.1:6380/2"},
		{"redis-url", "rediss://r.example:6380", func(c *Config) any { return c.RedisURL }, "rediss://r.example:6380"},
		{"redis-url", "unix:///run/redis.sock", func(c *Config) any { return c.RedisURL }, "unix:///run/redis.sock"},
		{"redis-prefix", "prod:", func(c *Config) any { return c.RedisPrefix }, "prod:"},
		{"redis-cluster", "a:7000, b:7001", func(c *Config) any { return c.RedisCluster }, []string{"a:7000", "b:7001"}},
		{"node-id", "replica-1.eu_west", func(c *Config) any { return c.NodeID }, "replica-1.eu_west"},
		{"node-ttl", "30s", func(c *Config) any { return c.NodeTTL }, 30 * time.Second},
		{"acl-file", acl, func(c *Config) any { return c.ACLFile }, acl},
		{"password-file", pw, func(c *Config) any { return c.PasswordFile }, pw},
		{"allow-anonymous", "false", func(c *Config) any { return c.AllowAnonymous }, false},
		{"max-packet-size", "4096", func(c *Config) any { return c.MaxPacketSize }, 4096},
		{"max-packet-size", "256KiB", func(c *Config) any { return c.MaxPacketSize }, 256 << 10},
		{"max-packet-size", "2MiB", func(c *Config) any { return c.MaxPacketSize }, 2 << 20},
		{"max-packet-size", "16", func(c *Config) any { return c.MaxPacketSize }, 16},
		{"max-packet-size", "268435455", func(c *Config) any { return c.MaxPacketSize }, 268435455},
		{"connect-timeout", "1500ms", func(c *Config) any { return c.ConnectTimeout }, 1500 * time.Millisecond},
		{"max-inflight", "65535", func(c *Config) any { return c.MaxInflight }, 65535},
		{"max-inflight", "1", func(c *Config) any { return c.MaxInflight }, 1},
		{"max-queued-messages", "1", func(c *Config) any { return c.MaxQueuedMessages }, 1},
		{"max-inflight-bytes", "8MiB", func(c *Config) any { return c.MaxInflightBytes }, int64(8 << 20)},
		{"max-inflight-bytes", "0", func(c *Config) any { return c.MaxInflightBytes }, int64(0)},
		{"max-inflight-bytes", "1GiB", func(c *Config) any { return c.MaxInflightBytes }, int64(1 << 30)},
		{"redis-stream-max-bytes", "16MiB", func(c *Config) any { return c.RedisStreamMaxBytes }, int64(16 << 20)},
		{"redis-stream-max-bytes", "0", func(c *Config) any { return c.RedisStreamMaxBytes }, int64(0)},
		{"redis-stream-max-bytes", "17179869184", func(c *Config) any { return c.RedisStreamMaxBytes }, int64(16 << 30)},
		{"message-expiry", "24h", func(c *Config) any { return c.MessageExpiry }, 24 * time.Hour},
		{"session-expiry", "0", func(c *Config) any { return c.SessionExpiry }, time.Duration(0)},
		{"max-queued-bytes", "0", func(c *Config) any { return c.MaxQueuedBytes }, 0},
		{"max-queued-bytes", "64KiB", func(c *Config) any { return c.MaxQueuedBytes }, 65536},
		{"max-queued-bytes", "1", func(c *Config) any { return c.MaxQueuedBytes }, 1},
		{"max-connections", "5000", func(c *Config) any { return c.MaxConnections }, 5000},
		{"max-subscriptions-per-client", "0", func(c *Config) any { return c.MaxSubscriptions }, 0},
		{"max-subscriptions-per-client", "100000", func(c *Config) any { return c.MaxSubscriptions }, 100000},
		{"max-topic-length", "1", func(c *Config) any { return c.MaxTopicLength }, 1},
		{"max-topic-length", "256", func(c *Config) any { return c.MaxTopicLength }, 256},
		{"max-topic-levels", "32768", func(c *Config) any { return c.MaxTopicLevels }, 32768},
		{"max-topic-levels", "8", func(c *Config) any { return c.MaxTopicLevels }, 8},
		{"topic-alias-maximum", "0", func(c *Config) any { return c.TopicAliasMaximum }, 0},
		{"topic-alias-maximum", "65535", func(c *Config) any { return c.TopicAliasMaximum }, 65535},
		{"server-keep-alive", "60", func(c *Config) any { return c.ServerKeepAlive }, 60},
		{"server-reference", "lb.example:1883", func(c *Config) any { return c.ServerReference }, "lb.example:1883"},
		{"drain-timeout", "0s", func(c *Config) any { return c.DrainTimeout }, time.Duration(0)},
		{"log-level", "debug", func(c *Config) any { return c.LogLevel }, "debug"},
		{"log-level", "WARN", func(c *Config) any { return c.LogLevel }, "warn"},
		{"log-level", "error", func(c *Config) any { return c.LogLevel }, "error"},
		{"log-format", "json", func(c *Config) any { return c.LogFormat }, "json"},
		{"sys-interval", "1m", func(c *Config) any { return c.SysInterval }, time.Minute},
		{"sys-interval", "0", func(c *Config) any { return c.SysInterval }, time.Duration(0)},
	}
}

func TestParseConfig_EveryFlagFromFlagAndEnv(t *testing.T) {
	for _, s := range settings(t) {
		t.Run(s.flag+"="+s.value, func(t *testing.T) {
			if got := s.get(mustParse(t, []string{"-" + s.flag + "=" + s.value}, nil)); !reflect.DeepEqual(got, s.want) {
				t.Errorf("flag: got %#v, want %#v", got, s.want)
			}
			vars := map[string]string{envName(s.flag): s.value}
			if got := s.get(mustParse(t, nil, vars)); !reflect.DeepEqual(got, s.want) {
				t.Errorf("env %s: got %#v, want %#v", envName(s.flag), got, s.want)
			}
		})
	}
}

func TestParseConfig_FlagWinsOverEnv(t *testing.T) {
	defaults := mustParse(t, nil, nil)
	for _, s := range settings(t) {
		t.Run(s.flag, func(t *testing.T) {
			// The environment holds the default (or, for knobs without one, a valid other
			// value); the flag must win.
			envValue := map[string]string{
				"http": ":8081", "redis-url": "redis://other:6379", "redis-cluster": "c:7002",
				"node-id": "from-env", "acl-file": readableFile(t, "other"),
				"password-file": readableFile(t, "other"), "drain-timeout": "5s",
				"pprof": "false", "allow-anonymous": "true", "max-packet-size": "1MiB",
			}[s.flag]
			if envValue == "" {
				envValue = optionDefault(t, s.flag)
			}
			c := mustParse(t, []string{"-" + s.flag + "=" + s.value}, map[string]string{envName(s.flag): envValue})
			if got := s.get(c); !reflect.DeepEqual(got, s.want) {
				t.Errorf("flag %s with env %s=%q: got %#v, want %#v", s.flag, envName(s.flag), envValue, got, s.want)
			}
		})
	}
	// And the environment wins over the default when no flag is given.
	c := mustParse(t, nil, map[string]string{"MQTT_MAX_INFLIGHT": "7", "MQTT_LISTEN": ":1999"})
	if c.MaxInflight != 7 || c.Listen != ":1999" || c.HTTP != defaults.HTTP {
		t.Errorf("env over default: got max-inflight %d listen %q http %q", c.MaxInflight, c.Listen, c.HTTP)
	}
}

func optionDefault(t *testing.T, name string) string {
	t.Helper()
	for _, o := range options() {
		if o.name == name {
			return o.def
		}
	}
	t.Fatalf("no option %q", name)
	return ""
}

func TestParseConfig_BoolFlagsWithoutValue(t *testing.T) {
	c := mustParse(t, []string{"-pprof", "-allow-anonymous=false"}, map[string]string{"MQTT_PPROF": "false"})
	if !c.Pprof || c.AllowAnonymous {
		t.Errorf("got pprof %v allow-anonymous %v, want true false", c.Pprof, c.AllowAnonymous)
	}
}

func TestParseConfig_RedisTopologies(t *testing.T) {
	c := mustParse(t, []string{"-redis-sentinel-master", "mymaster", "-redis-sentinel-addrs", "s1:26379,s2:26379",
		"-redis-username", "mq", "-redis-password", "secret"}, nil)
	if c.RedisSentinelMaster != "mymaster" || !reflect.DeepEqual(c.RedisSentinelAddrs, []string{"s1:26379", "s2:26379"}) ||
		c.RedisUsername != "mq" || c.RedisPassword != "secret" {
		t.Errorf("sentinel: got %+v", c)
	}
	c = mustParse(t, nil, map[string]string{"MQTT_REDIS_CLUSTER": "n1:7000", "MQTT_REDIS_PASSWORD": "pw"})
	if !reflect.DeepEqual(c.RedisCluster, []string{"n1:7000"}) || c.RedisPassword != "pw" {
		t.Errorf("cluster: got %+v", c)
	}
}

func TestParseConfig_Errors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"-foo"}, nil, `-foo: unknown flag (see -h)`},
		{"unknown flag with value", []string{"--foo=1"}, nil, `-foo: unknown flag (see -h)`},
		{"missing value", []string{"-listen"}, nil, `-listen: needs a value`},
		{"positional", []string{"-listen", ":1", "extra"}, nil, `"extra": unexpected argument; every setting is a flag (see -h)`},
		{"positional after --", []string{"-pprof", "--", "x"}, nil, `"x": unexpected argument; every setting is a flag (see -h)`},
		{"bool value as separate word", []string{"-allow-anonymous", "false"}, nil, `-allow-anonymous: a boolean takes its value after '=', as -allow-anonymous=false`},
		{"bool then positional", []string{"--pprof", "yes"}, nil, `-pprof: a boolean takes its value after '=', as -pprof=yes`},
		{"listen not host:port", []string{"-listen", "1883"}, nil, `-listen: "1883" is not a host:port address`},
		{"listen bad port", []string{"-listen", ":99999"}, nil, `-listen: ":99999": port "99999" is not a number 0..65535`},
		{"listen env", nil, map[string]string{"MQTT_LISTEN": "nope"}, `MQTT_LISTEN (for -listen): "nope" is not a host:port address`},
		{"http bad", []string{"-http", "8080"}, nil, `-http: "8080" is not a host:port address`},
		{"http same port", []string{"-listen", ":1883", "-http", "127.0.0.1:1883"}, nil, `-http: "127.0.0.1:1883" uses the same port as -listen ":1883"`},
		{"pprof bad", []string{"-pprof=yes"}, nil, `-pprof: "yes" is not a boolean (true or false)`},
		{"pprof env bad", nil, map[string]string{"MQTT_PPROF": "on"}, `MQTT_PPROF (for -pprof): "on" is not a boolean (true or false)`},
		{"pprof without http", []string{"-pprof", "-http", "off"}, nil, `-pprof: needs the -http listener, which is off`},
		{"redis-url scheme", []string{"-redis-url", "http://u:hunter2@h:1"}, nil, `-redis-url: "http://u:xxxxx@h:1": scheme "http": want redis://, rediss:// or unix://`},
		{"redis-url db", []string{"-redis-url", "redis://h/x"}, nil, `-redis-url: "redis://h/x": database "x" is not a number 0 or above (redis://host:port/<db>)`},
		{"redis-url db with port", []string{"-redis-url", "redis://h:6379/abc"}, nil, `-redis-url: "redis://h:6379/abc": database "abc" is not a number 0 or above (redis://host:port/<db>)`},
		{"redis-url negative db", []string{"-redis-url", "redis://h:6379/-1"}, nil, `-redis-url: "redis://h:6379/-1": database "-1" is not a number 0 or above (redis://host:port/<db>)`},
		{"client-id-pattern", []string{"-client-id-pattern", "dev-(["}, nil, `-client-id-pattern: "dev-([" is not a regular expression: error parsing regexp: missing closing ]: ` + "`[)$`"},
		{"redis-url unparseable", []string{"-redis-url", "redis://h:1/%zz"}, nil, `-redis-url: not a URL: invalid URL escape "%zz"`},
		{"redis-url env", nil, map[string]string{"MQTT_REDIS_URL": "unix://"}, `MQTT_REDIS_URL (for -redis-url): "unix:": redis: empty unix socket path`},
		{"redis-prefix space", []string{"-redis-prefix", "a b"}, nil, `-redis-prefix: "a b" must be non-empty without spaces`},
		{"redis-prefix empty", []string{"-redis-prefix", ""}, nil, `-redis-prefix: "" must be non-empty without spaces`},
		{"sentinel master without addrs", []string{"-redis-sentinel-master", "m"}, nil, `-redis-sentinel-master: needs -redis-sentinel-addrs`},
		{"sentinel addrs without master", []string{"-redis-sentinel-addrs", "s:26379"}, nil, `-redis-sentinel-addrs: needs -redis-sentinel-master`},
		{"sentinel addrs bad", []string{"-redis-sentinel-addrs", "s:26379,s2"}, nil, `-redis-sentinel-addrs: "s:26379,s2" is not a comma-separated list of host:port`},
		{"cluster addrs bad", nil, map[string]string{"MQTT_REDIS_CLUSTER": ":7000"}, `MQTT_REDIS_CLUSTER (for -redis-cluster): ":7000" is not a comma-separated list of host:port`},
		{"url and cluster", []string{"-redis-url", "redis://h", "-redis-cluster", "a:1"}, nil, `-redis-cluster: cannot be combined with -redis-url; choose one Redis topology`},
		{"sentinel and cluster", []string{"-redis-sentinel-master", "m", "-redis-sentinel-addrs", "s:1", "-redis-cluster", "a:1"}, nil, `-redis-cluster: cannot be combined with -redis-sentinel-master; choose one Redis topology`},
		{"username with url", []string{"-redis-url", "redis://h", "-redis-username", "u"}, nil, `-redis-username: not used with -redis-url; put the user in the URL`},
		{"password with url", []string{"-redis-url", "redis://h", "-redis-password", "p"}, nil, `-redis-password: not used with -redis-url; put the password in the URL`},
		{"password without redis", nil, map[string]string{"MQTT_REDIS_PASSWORD": "p"}, `-redis-username/-redis-password: no Redis configured (-redis-sentinel-master or -redis-cluster)`},
		{"min-replicas-acked negative", []string{"-redis-url", "redis://h", "-redis-min-replicas-acked", "-1"}, nil, `-redis-min-replicas-acked: -1 is outside 0..1000`},
		{"min-replicas-acked without redis", []string{"-redis-min-replicas-acked", "1"}, nil, `-redis-min-replicas-acked: no Redis configured (-redis-url or -redis-sentinel-master)`},
		{"min-replicas-acked with cluster", nil, map[string]string{"MQTT_REDIS_CLUSTER": "a:1", "MQTT_REDIS_MIN_REPLICAS_ACKED": "1"}, `-redis-min-replicas-acked: not supported with -redis-cluster (WAIT must follow the writes on one connection)`},
		{"node-id chars", []string{"-node-id", "a b"}, nil, `-node-id: "a b": use at most 128 of A-Z a-z 0-9 . _ -`},
		{"node-id long", []string{"-node-id", strings.Repeat("n", 129)}, nil, `-node-id: "` + strings.Repeat("n", 129) + `": use at most 128 of A-Z a-z 0-9 . _ -`},
		{"node-ttl bad", []string{"-node-ttl", "10"}, nil, `-node-ttl: "10" is not a duration (e.g. 500ms, 10s, 1m30s)`},
		{"node-ttl small", []string{"-node-ttl", "500ms"}, nil, `-node-ttl: 500ms is below the minimum 1s`},
		{"acl-file missing", []string{"-acl-file", filepath.Join(dir, "nope")}, nil, `-acl-file: cannot read: open ` + filepath.Join(dir, "nope") + `: no such file or directory`},
		{"acl-file dir", []string{"-acl-file", dir}, nil, `-acl-file: "` + dir + `" is a directory, not a file`},
		{"password-file env missing", nil, map[string]string{"MQTT_PASSWORD_FILE": filepath.Join(dir, "pw")}, `MQTT_PASSWORD_FILE (for -password-file): cannot read: open ` + filepath.Join(dir, "pw") + `: no such file or directory`},
		{"allow-anonymous bad", []string{"-allow-anonymous=maybe"}, nil, `-allow-anonymous: "maybe" is not a boolean (true or false)`},
		{"max-packet-size words", []string{"-max-packet-size", "12 parsecs"}, nil, `-max-packet-size: "12 parsecs" is not a size (bytes, or with KiB/MiB suffix)`},
		{"max-packet-size SI", []string{"-max-packet-size", "1MB"}, nil, `-max-packet-size: "1MB" is not a size (bytes, or with KiB/MiB suffix)`},
		{"max-packet-size negative", []string{"-max-packet-size", "-1"}, nil, `-max-packet-size: "-1" is not a size (bytes, or with KiB/MiB suffix)`},
		{"max-packet-size small", []string{"-max-packet-size", "15"}, nil, `-max-packet-size: "15" is outside 16..268435455 bytes (MQTT 3.1.1 section 2.2.3)`},
		{"max-packet-size large", []string{"-max-packet-size", "256MiB"}, nil, `-max-packet-size: "256MiB" is outside 16..268435455 bytes (MQTT 3.1.1 section 2.2.3)`},
		{"max-inflight-bytes words", []string{"-max-inflight-bytes", "lots"}, nil, `-max-inflight-bytes: "lots" is not a size (bytes, or with KiB/MiB/GiB suffix)`},
		{"max-inflight-bytes negative", []string{"-max-inflight-bytes", "-1MiB"}, nil, `-max-inflight-bytes: "-1MiB" is not a size (bytes, or with KiB/MiB/GiB suffix)`},
		{"max-inflight-bytes huge", []string{"-max-inflight-bytes", "2048GiB"}, nil, `-max-inflight-bytes: "2048GiB" is outside 0..1099511627776 bytes`},
		{"max-inflight-bytes env", nil, map[string]string{"MQTT_MAX_INFLIGHT_BYTES": "64MB"}, `MQTT_MAX_INFLIGHT_BYTES (for -max-inflight-bytes): "64MB" is not a size (bytes, or with KiB/MiB/GiB suffix)`},
		{"max-inflight-bytes below max-packet-size", []string{"-max-inflight-bytes", "1MiB", "-max-packet-size", "2MiB"}, nil, `-max-inflight-bytes: 1048576 is below -max-packet-size 2097152: one PUBLISH would take all of it and hold every other publisher; raise it, or 0 for no bound`},
		{"max-queued-bytes words", []string{"-max-queued-bytes", "lots"}, nil, `-max-queued-bytes: "lots" is not a size (bytes, or with KiB/MiB/GiB suffix)`},
		{"max-queued-bytes huge", []string{"-max-queued-bytes", "2048GiB"}, nil, `-max-queued-bytes: "2048GiB" is outside 0..1099511627776 bytes`},
		{"redis-stream-max-bytes words", []string{"-redis-stream-max-bytes", "big"}, nil, `-redis-stream-max-bytes: "big" is not a size (bytes, or with KiB/MiB/GiB suffix)`},
		{"redis-stream-max-bytes suffix only", []string{"-redis-stream-max-bytes", "MiB"}, nil, `-redis-stream-max-bytes: "MiB" is not a size (bytes, or with KiB/MiB/GiB suffix)`},
		{"redis-stream-max-bytes env", nil, map[string]string{"MQTT_REDIS_STREAM_MAX_BYTES": "-5"}, `MQTT_REDIS_STREAM_MAX_BYTES (for -redis-stream-max-bytes): "-5" is not a size (bytes, or with KiB/MiB/GiB suffix)`},
		{"max-packet-size env", nil, map[string]string{"MQTT_MAX_PACKET_SIZE": "0KiB"}, `MQTT_MAX_PACKET_SIZE (for -max-packet-size): "0KiB" is outside 16..268435455 bytes (MQTT 3.1.1 section 2.2.3)`},
		{"connect-timeout zero", []string{"-connect-timeout", "0"}, nil, `-connect-timeout: 0s is below the minimum 1ms`},
		{"sys-interval too short", []string{"-sys-interval", "1ns"}, nil, `-sys-interval: 1ns is below the minimum 100ms (0 turns $SYS off)`},
		{"connect-timeout bad", []string{"-connect-timeout", "soon"}, nil, `-connect-timeout: "soon" is not a duration (e.g. 500ms, 10s, 1m30s)`},
		{"max-inflight zero", []string{"-max-inflight", "0"}, nil, `-max-inflight: 0 is outside 1..65535`},
		{"max-inflight big", []string{"-max-inflight", "65536"}, nil, `-max-inflight: 65536 is outside 1..65535`},
		{"max-inflight text", []string{"-max-inflight", "lots"}, nil, `-max-inflight: "lots" is not a whole number`},
		{"max-queued-messages zero", nil, map[string]string{"MQTT_MAX_QUEUED_MESSAGES": "0"}, `MQTT_MAX_QUEUED_MESSAGES (for -max-queued-messages): 0 is below the minimum 1`},
		{"message-expiry small", []string{"-message-expiry", "100ms"}, nil, `-message-expiry: 100ms is below the minimum 1s`},
		{"message-expiry bad", []string{"-message-expiry", "1d"}, nil, `-message-expiry: "1d" is not a duration (e.g. 500ms, 10s, 1m30s)`},
		{"max-connections negative", []string{"-max-connections", "-1"}, nil, `-max-connections: -1 is below the minimum 0`},
		{"max-connections text", []string{"-max-connections", "1e3"}, nil, `-max-connections: "1e3" is not a whole number`},
		{"max-subscriptions-per-client negative", []string{"-max-subscriptions-per-client", "-1"}, nil, `-max-subscriptions-per-client: -1 is below the minimum 0`},
		{"max-subscriptions-per-client env", nil, map[string]string{"MQTT_MAX_SUBSCRIPTIONS_PER_CLIENT": "many"}, `MQTT_MAX_SUBSCRIPTIONS_PER_CLIENT (for -max-subscriptions-per-client): "many" is not a whole number`},
		{"max-topic-length zero", []string{"-max-topic-length", "0"}, nil, `-max-topic-length: 0 is outside 1..65535`},
		{"max-topic-length big", []string{"-max-topic-length", "65536"}, nil, `-max-topic-length: 65536 is outside 1..65535`},
		{"max-topic-levels zero", nil, map[string]string{"MQTT_MAX_TOPIC_LEVELS": "0"}, `MQTT_MAX_TOPIC_LEVELS (for -max-topic-levels): 0 is outside 1..32768`},
		{"max-topic-levels text", []string{"-max-topic-levels", "deep"}, nil, `-max-topic-levels: "deep" is not a whole number`},
		{"topic-alias-maximum big", []string{"-topic-alias-maximum", "65536"}, nil, `-topic-alias-maximum: 65536 is outside 0..65535`},
		{"topic-alias-maximum env", nil, map[string]string{"MQTT_TOPIC_ALIAS_MAXIMUM": "-1"}, `MQTT_TOPIC_ALIAS_MAXIMUM (for -topic-alias-maximum): -1 is outside 0..65535`},
		{"server-keep-alive text", []string{"-server-keep-alive", "1m"}, nil, `-server-keep-alive: "1m" is not a whole number`},
		{"drain-timeout negative", []string{"-drain-timeout", "-1s"}, nil, `-drain-timeout: -1s is negative`},
		{"log-level bad", nil, map[string]string{"MQTT_LOG_LEVEL": "loud"}, `MQTT_LOG_LEVEL (for -log-level): "loud" is not one of debug, info, warn, error`},
		{"log-format bad", []string{"-log-format", "xml"}, nil, `-log-format: "xml" is not one of text, json`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var help bytes.Buffer
			c, err := parseConfig(tt.args, env(tt.env), &help)
			if err == nil {
				t.Fatalf("got config %+v, want error %q", c, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n got %s\nwant %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error leaks the Redis password: %q", err)
			}
			if help.Len() != 0 {
				t.Errorf("help written on error: %q", help.String())
			}
		})
	}
}

func TestParseConfig_Help(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		t.Run(arg, func(t *testing.T) {
			var help bytes.Buffer
			_, err := parseConfig([]string{"-listen", ":1", arg}, env(nil), &help)
			if !errors.Is(err, ErrHelp) {
				t.Fatalf("got %v, want ErrHelp", err)
			}
			var usage bytes.Buffer
			Usage(&usage)
			if help.String() != usage.String() {
				t.Errorf("help output is not Usage's text:\n%s", help.String())
			}
		})
	}
}

func TestUsage_ListsEveryFlagDefaultAndEnv(t *testing.T) {
	var b bytes.Buffer
	Usage(&b)
	out := b.String()
	for _, o := range options() {
		if !regexp.MustCompile(`(?m)^  -` + o.name + `[ \n]`).MatchString(out) {
			t.Errorf("usage lacks -%s", o.name)
		}
		if !strings.Contains(out, "env "+envName(o.name)+")") {
			t.Errorf("usage lacks %s", envName(o.name))
		}
		if o.name != "node-id" && !strings.Contains(out, "(default "+`"`+o.def+`"`) {
			t.Errorf("usage lacks the default %q of -%s", o.def, o.name)
		}
	}
	if got, want := envName("max-packet-size"), "MQTT_MAX_PACKET_SIZE"; got != want {
		t.Errorf("envName: got %q, want %q", got, want)
	}
}

func TestConfig_NewLogger(t *testing.T) {
	tests := []struct {
		level, format string
		debug, warn   bool
	}{
		{"debug", "text", true, true},
		{"info", "json", false, true},
		{"warn", "text", false, true},
		{"error", "json", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.level+"/"+tt.format, func(t *testing.T) {
			c := mustParse(t, []string{"-log-level", tt.level, "-log-format", tt.format}, nil)
			var b bytes.Buffer
			log := c.NewLogger(&b)
			log.Debug("dbg")
			log.Warn("wrn")
			log.Error("err", "k", "v")
			out := b.String()
			if got := strings.Contains(out, "dbg"); got != tt.debug {
				t.Errorf("debug logged = %v, want %v:\n%s", got, tt.debug, out)
			}
			if got := strings.Contains(out, "wrn"); got != tt.warn {
				t.Errorf("warn logged = %v, want %v:\n%s", got, tt.warn, out)
			}
			last := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
			var rec map[string]any
			isJSON := json.Unmarshal([]byte(last), &rec) == nil
			if isJSON != (tt.format == "json") {
				t.Errorf("format %s, line %q parsed as JSON = %v", tt.format, last, isJSON)
			}
		})
	}
}

func TestConfig_RedisClient(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want any // nil, or a value of the wanted client type
	}{
		{"single node", nil, nil},
		{"url", []string{"-redis-url", "redis://127.0.0.1:1/3"}, &redis.Client{}},
		{"unix url", []string{"-redis-url", "unix:///tmp/none.sock"}, &redis.Client{}},
		{"sentinel", []string{"-redis-sentinel-master", "m", "-redis-sentinel-addrs", "127.0.0.1:1"}, &redis.Client{}},
		{"cluster", []string{"-redis-cluster", "127.0.0.1:1"}, &redis.ClusterClient{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := mustParse(t, tt.args, nil).RedisClient()
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == nil {
				if client != nil {
					t.Fatalf("got %T, want no client", client)
				}
				return
			}
			defer client.Close()
			if reflect.TypeOf(client) != reflect.TypeOf(tt.want) {
				t.Fatalf("got %T, want %T", client, tt.want)
			}
		})
	}
	c := mustParse(t, []string{"-redis-url", "redis://u:pw@127.0.0.1:1/3"}, nil)
	client, err := c.RedisClient()
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	o := client.(*redis.Client).Options()
	if o.Addr != "127.0.0.1:1" || o.DB != 3 || o.Username != "u" || o.Password != "pw" {
		t.Errorf("url options: got addr %q db %d user %q password %q", o.Addr, o.DB, o.Username, o.Password)
	}
}

// -ws-listen is off by default, set by flag or MQTT_WS_LISTEN (the flag
// winning), and refused with a message naming it when it is not host:port
// or shares a port with -listen or -http.
func TestParseConfig_WSListen(t *testing.T) {
	if got := mustParse(t, nil, nil).WSListen; got != "" {
		t.Errorf("default -ws-listen = %q, want off", got)
	}
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-ws-listen", ":8083"}, nil, ":8083"},
		{nil, map[string]string{"MQTT_WS_LISTEN": "127.0.0.1:8083"}, "127.0.0.1:8083"},
		{[]string{"-ws-listen", "[::1]:9001"}, map[string]string{"MQTT_WS_LISTEN": ":8083"}, "[::1]:9001"},
		{[]string{"-ws-listen", ""}, map[string]string{"MQTT_WS_LISTEN": ":8083"}, ""},
		{[]string{"-ws-listen", "127.0.0.1:0", "-listen", "127.0.0.1:0"}, nil, "127.0.0.1:0"},
		{[]string{"-ws-listen", "10.0.0.1:1883", "-listen", "10.0.0.2:1883"}, nil, "10.0.0.1:1883"},
	} {
		if got := mustParse(t, tt.args, tt.env).WSListen; got != tt.want {
			t.Errorf("args %q env %v: WSListen = %q, want %q", tt.args, tt.env, got, tt.want)
		}
	}
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-ws-listen", "8083"}, nil, `-ws-listen: "8083" is not a host:port address`},
		{[]string{"-ws-listen", ":70000"}, nil, `-ws-listen: ":70000": port "70000" is not a number 0..65535`},
		{nil, map[string]string{"MQTT_WS_LISTEN": "ws://h:1/mqtt"}, `MQTT_WS_LISTEN (for -ws-listen): "ws://h:1/mqtt" is not a host:port address`},
		{[]string{"-ws-listen", "127.0.0.1:1883"}, nil, `-ws-listen: "127.0.0.1:1883" uses the same port as -listen ":1883"`},
		{[]string{"-ws-listen", ":8080"}, nil, `-ws-listen: ":8080" uses the same port as -http ":8080"`},
	} {
		_, err := parseConfig(tt.args, env(tt.env), &bytes.Buffer{})
		if err == nil || err.Error() != tt.want {
			t.Errorf("args %q env %v: error %v, want %q", tt.args, tt.env, err, tt.want)
		}
	}
}

func TestParseConfig_AuthRedis(t *testing.T) {
	if c := mustParse(t, []string{"-redis-url", "redis://h"}, map[string]string{"MQTT_AUTH_REDIS": "true"}); !c.AuthRedis {
		t.Error("MQTT_AUTH_REDIS=true did not set AuthRedis")
	}
	if c := mustParse(t, []string{"-auth-redis", "-redis-cluster", "a:1"}, nil); !c.AuthRedis {
		t.Error("-auth-redis did not set AuthRedis")
	}
	acl, pw := readableFile(t, "acl"), readableFile(t, "passwords")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"without redis", []string{"-auth-redis"}, nil, "-auth-redis: no Redis configured (-redis-url, -redis-sentinel-master or -redis-cluster)"},
		{"env not a boolean", []string{"-redis-url", "redis://h"}, map[string]string{"MQTT_AUTH_REDIS": "yes"}, `MQTT_AUTH_REDIS (for -auth-redis): "yes" is not a boolean (true or false)`},
		{"with a password file", []string{"-auth-redis", "-redis-url", "redis://h", "-password-file", pw}, nil, "-auth-redis: cannot be combined with -password-file; users come from Redis"},
		{"with an acl file", []string{"-auth-redis", "-redis-url", "redis://h", "-acl-file", acl}, nil, "-auth-redis: cannot be combined with -acl-file; the ACL comes from Redis"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(tt.args, env(tt.env), &bytes.Buffer{})
			if err == nil || err.Error() != tt.want {
				t.Errorf("error %v, want %s", err, tt.want)
			}
		})
	}
}
