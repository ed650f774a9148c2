package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/bridgemq/server/packets"
)

// Topic layouts of -topics.
const (
	layoutOne          = "one"           // every publisher on bench/0/data
	layoutPerPublisher = "per-publisher" // publisher i on bench/i/data, subscribers hold each exact topic
	layoutMany         = "many"          // -topic-count topics bench/i/data, subscribers hold bench/+/data
)

// config is the whole run, from the command line.
type config struct {
	PubBrokers      []string
	SubBrokers      []string
	Publishers      int
	Subscribers     int
	QoS             byte
	Size            int
	Rate            float64 // total msg/s over every publisher, 0 = as fast as possible
	Count           int     // per publisher; ignored when Duration > 0
	Duration        time.Duration
	Topics          string
	TopicCount      int
	WildcardFilters int
	Clean           bool
	Protocol        int // MQTT protocol level: 4 (3.1.1) or 5
	Inflight        int
	Idle            int
	IdleHold        time.Duration
	IdleConcurrency int
	IdleKeepAlive   time.Duration
	IdleSources     []net.Addr
	ConnectTimeout  time.Duration
	Drain           time.Duration
	Progress        time.Duration
	JSON            bool
	IDPrefix        string
	CPUProfile      string
}

// parseConfig reads the flags in args (without the program name).
func parseConfig(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "bench: end-to-end MQTT 3.1.1 load generator\n\n"+
			"Publishers stamp each payload with their id, a sequence number and the send time;\n"+
			"subscribers count deliveries, duplicates, out-of-order and lost messages and the\n"+
			"publish-to-receive latency. Every subscriber matches every message, so\n"+
			"expected deliveries = sent x subscribers.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	pub := fs.String("pub-brokers", "127.0.0.1:1883", "comma list of host:port the publishers connect to, round robin")
	sub := fs.String("sub-brokers", "", "comma list of host:port the subscribers connect to, round robin (default: -pub-brokers)")
	fs.IntVar(&c.Publishers, "publishers", 1, "number of publishers")
	fs.IntVar(&c.Subscribers, "subscribers", 1, "number of subscribers")
	qos := fs.Int("qos", 0, "QoS of publishes and subscriptions: 0, 1 or 2")
	fs.IntVar(&c.Size, "size", 64, "payload size in bytes, at least 16")
	fs.Float64Var(&c.Rate, "rate", 0, "total publish rate in msg/s over all publishers; 0 = as fast as possible")
	fs.IntVar(&c.Count, "count", 1000, "messages per publisher (ignored with -duration)")
	fs.DurationVar(&c.Duration, "duration", 0, "publish for this long instead of -count messages")
	fs.StringVar(&c.Topics, "topics", layoutOne, "topic layout: one, per-publisher or many")
	fs.IntVar(&c.TopicCount, "topic-count", 100, "number of topics for -topics many")
	fs.IntVar(&c.WildcardFilters, "wildcard-filters", 0, "extra distinct wildcard filters idle/<i>/+/x per subscriber that match nothing")
	fs.BoolVar(&c.Clean, "clean", true, "clean session; -clean=false keeps persistent sessions")
	fs.IntVar(&c.Protocol, "protocol", 4, "MQTT protocol level every connection speaks: 4 (3.1.1) or 5 (5.0)")
	fs.IntVar(&c.Inflight, "inflight", 100, "unacknowledged QoS 1/2 messages per publisher, 1..65535")
	fs.IntVar(&c.Idle, "idle", 0, "open this many idle connections (over -sub-brokers), report their connect time, hold them -idle-hold")
	fs.DurationVar(&c.IdleHold, "idle-hold", 10*time.Second, "how long to hold the -idle connections before the workload runs")
	fs.IntVar(&c.IdleConcurrency, "idle-concurrency", 64, "idle connections being opened at once")
	fs.DurationVar(&c.IdleKeepAlive, "idle-keep-alive", 60*time.Second, "keep-alive the -idle connections ask for, whole seconds; the tool sends no PINGREQ, so keep -idle-hold below 1.5x it")
	sources := fs.String("idle-sources", "", "comma list of local IPs the -idle connections dial from, round robin (one source reaches one broker port about 28,000 times)")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 10*time.Second, "time allowed for dial, CONNACK and SUBACK")
	fs.DurationVar(&c.Drain, "drain", 5*time.Second, "after the last publish, wait this long at most for the remaining deliveries and acks")
	fs.DurationVar(&c.Progress, "progress", 0, "print progress to stderr at this interval (0 = off)")
	fs.BoolVar(&c.JSON, "json", false, "print the report as JSON instead of a table")
	fs.StringVar(&c.IDPrefix, "id-prefix", fmt.Sprintf("bench-%d", os.Getpid()), "client id prefix; keep it fixed across runs to resume -clean=false sessions")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write the tool's own CPU profile to this file, to check it is not the bottleneck")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%q: unexpected argument; every setting is a flag (see -h)", fs.Arg(0))
	}
	var err error
	if c.PubBrokers, err = brokerList(*pub); err != nil {
		return nil, fmt.Errorf("-pub-brokers: %w", err)
	}
	if *sub == "" {
		c.SubBrokers = c.PubBrokers
	} else if c.SubBrokers, err = brokerList(*sub); err != nil {
		return nil, fmt.Errorf("-sub-brokers: %w", err)
	}
	for _, a := range strings.Split(*sources, ",") {
		if a = strings.TrimSpace(a); a == "" {
			continue
		}
		ip := net.ParseIP(a)
		if ip == nil {
			return nil, fmt.Errorf("-idle-sources: %q is not an IP address", a)
		}
		c.IdleSources = append(c.IdleSources, &net.TCPAddr{IP: ip})
	}
	if *qos < 0 || *qos > 2 {
		return nil, fmt.Errorf("-qos: %d is not 0, 1 or 2", *qos)
	}
	c.QoS = byte(*qos)
	return c, c.validate()
}

// version is the wire format of -protocol.
func (c *config) version() packets.Version {
	if c.Protocol == 5 {
		return packets.Version5
	}
	return packets.Version311
}

// validate checks each number against its range; errors name the flag.
func (c *config) validate() error {
	switch {
	case c.Protocol != 4 && c.Protocol != 5:
		return fmt.Errorf("-protocol: %d is not 4 (MQTT 3.1.1) or 5 (MQTT 5.0)", c.Protocol)
	case c.Publishers < 0 || c.Publishers > 65535:
		return fmt.Errorf("-publishers: %d is outside 0..65535", c.Publishers)
	case c.Subscribers < 0:
		return fmt.Errorf("-subscribers: %d is negative", c.Subscribers)
	case c.Size < payloadHeaderLen:
		return fmt.Errorf("-size: %d is below %d, the bytes the stamp needs", c.Size, payloadHeaderLen)
	case c.Rate < 0:
		return fmt.Errorf("-rate: %g is negative", c.Rate)
	case c.Duration <= 0 && (c.Count < 1 || int64(c.Count) > 1<<32):
		return fmt.Errorf("-count: %d is outside 1..4294967296", c.Count)
	case c.Duration < 0:
		return fmt.Errorf("-duration: %v is negative", c.Duration)
	case c.Topics != layoutOne && c.Topics != layoutPerPublisher && c.Topics != layoutMany:
		return fmt.Errorf("-topics: %q is not one, per-publisher or many", c.Topics)
	case c.TopicCount < 1:
		return fmt.Errorf("-topic-count: %d is below 1", c.TopicCount)
	case c.WildcardFilters < 0:
		return fmt.Errorf("-wildcard-filters: %d is negative", c.WildcardFilters)
	case c.Inflight < 1 || c.Inflight > 65535:
		return fmt.Errorf("-inflight: %d is outside 1..65535", c.Inflight)
	case c.Idle < 0:
		return fmt.Errorf("-idle: %d is negative", c.Idle)
	case c.IdleConcurrency < 1:
		return fmt.Errorf("-idle-concurrency: %d is below 1", c.IdleConcurrency)
	case c.IdleKeepAlive < 0 || c.IdleKeepAlive > 65535*time.Second:
		return fmt.Errorf("-idle-keep-alive: %v is outside 0..65535s", c.IdleKeepAlive)
	case c.ConnectTimeout <= 0:
		return fmt.Errorf("-connect-timeout: %v is not positive", c.ConnectTimeout)
	case c.Drain < 0:
		return fmt.Errorf("-drain: %v is negative", c.Drain)
	case c.IDPrefix == "":
		return errors.New("-id-prefix: must not be empty")
	case (c.Publishers == 0) != (c.Subscribers == 0):
		return errors.New("-publishers, -subscribers: both or neither must be 0")
	case c.Publishers == 0 && c.Idle == 0:
		return errors.New("-publishers: nothing to do without publishers or -idle connections")
	}
	return nil
}

// brokerList splits a comma list of host:port.
func brokerList(s string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("%q: %w", a, err)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, errors.New("no broker address")
	}
	return out, nil
}

// publisherTopics lists the topics publisher pub cycles through: its message
// seq goes to topics[(pub+seq) % len(topics)]. Names are built once, so
// publishing does not allocate them.
func (c *config) publisherTopics(pub int) []string {
	switch c.Topics {
	case layoutPerPublisher:
		return []string{topicName(pub)}
	case layoutMany:
		t := make([]string, c.TopicCount)
		for i := range t {
			t[i] = topicName(i)
		}
		return t
	}
	return []string{topicName(0)}
}

// topicName is the i-th bench topic.
func topicName(i int) string { return fmt.Sprintf("bench/%d/data", i) }

// subscriberFilters are the filters subscriber sub holds: those that match
// the workload's topics, then -wildcard-filters distinct filters that match
// nothing (numbered across subscribers, so no two subscribers share one).
func (c *config) subscriberFilters(sub int) []string {
	var f []string
	switch c.Topics {
	case layoutPerPublisher:
		for p := range c.Publishers {
			f = append(f, topicName(p))
		}
	case layoutMany:
		f = append(f, "bench/+/data")
	default:
		f = append(f, topicName(0))
	}
	for i := range c.WildcardFilters {
		f = append(f, fmt.Sprintf("idle/%d/+/x", sub*c.WildcardFilters+i))
	}
	return f
}
