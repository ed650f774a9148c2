package main

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bridgemq/server/packets"
)

// fakeBroker is the least broker that lets the tool's core run end to end in
// a test: it forwards every PUBLISH to every subscribed connection and plays
// both sides of the QoS 1 and 2 flows. With dupEvery > 0 it sends every
// dupEvery-th delivery twice, the second time with DUP set.
type fakeBroker struct {
	ln       net.Listener
	dupEvery int

	mu   sync.Mutex
	subs []*fakeConn
	n    int
}

type fakeConn struct {
	mu     sync.Mutex
	nc     net.Conn
	nextID uint16
}

func (c *fakeConn) write(p packets.Packet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if pub, ok := p.(*packets.Publish); ok && pub.QoS > 0 {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		pub.PacketID = c.nextID
	}
	b, err := packets.Append(nil, p)
	if err != nil {
		panic(err)
	}
	_, _ = c.nc.Write(b)
}

func startFakeBroker(t *testing.T, dupEvery int) *fakeBroker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &fakeBroker{ln: ln, dupEvery: dupEvery}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { nc.Close() })
			go b.serve(&fakeConn{nc: nc})
		}
	}()
	return b
}

func (b *fakeBroker) serve(c *fakeConn) {
	r := packets.NewReader(c.nc, 0)
	for {
		p, err := r.ReadPacket()
		if err != nil {
			return
		}
		switch p := p.(type) {
		case *packets.Connect:
			c.write(&packets.Connack{})
		case *packets.Subscribe:
			codes := make([]packets.ReasonCode, len(p.Subscriptions))
			for i, s := range p.Subscriptions {
				codes[i] = packets.GrantedQoS(s.QoS)
			}
			b.mu.Lock()
			b.subs = append(b.subs, c)
			b.mu.Unlock()
			c.write(&packets.Suback{PacketID: p.PacketID, ReturnCodes: codes})
		case *packets.Publish:
			b.forward(p)
			switch p.QoS {
			case 1:
				c.write(&packets.Puback{PacketID: p.PacketID})
			case 2:
				c.write(&packets.Pubrec{PacketID: p.PacketID})
			}
		case *packets.Pubrel:
			c.write(&packets.Pubcomp{PacketID: p.PacketID})
		case *packets.Pubrec:
			c.write(&packets.Pubrel{PacketID: p.PacketID})
		case *packets.Disconnect:
			return
		}
	}
}

func (b *fakeBroker) forward(p *packets.Publish) {
	b.mu.Lock()
	subs := append([]*fakeConn(nil), b.subs...)
	b.n++
	dup := b.dupEvery > 0 && b.n%b.dupEvery == 0
	b.mu.Unlock()
	for _, s := range subs {
		s.write(&packets.Publish{QoS: p.QoS, Topic: p.Topic, Payload: p.Payload})
		if dup {
			s.write(&packets.Publish{QoS: p.QoS, Topic: p.Topic, Payload: p.Payload, Dup: p.QoS > 0})
		}
	}
}

// counters are the report fields a run must get exactly right.
type counters struct{ Sent, Acked, Expected, Delivered, Duplicates, Lost uint64 }

func benchConfig(t *testing.T, addr string, extra ...string) *config {
	t.Helper()
	args := append([]string{"-pub-brokers", addr, "-drain", "2s"}, extra...)
	cfg, err := parseConfig(args, io.Discard)
	if err != nil {
		t.Fatalf("parseConfig(%q): %v", args, err)
	}
	return cfg
}

func TestExecute_EndToEnd(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		dupEvery int
		want     counters
	}{
		{"QoS 0 fan-in", []string{"-publishers", "4", "-subscribers", "1", "-count", "500", "-qos", "0"}, 0,
			counters{Sent: 2000, Acked: 0, Expected: 2000, Delivered: 2000}},
		{"QoS 1 fan-out with small window", []string{"-publishers", "2", "-subscribers", "3", "-count", "300", "-qos", "1", "-inflight", "5"}, 0,
			counters{Sent: 600, Acked: 600, Expected: 1800, Delivered: 1800}},
		{"QoS 2 many topics", []string{"-publishers", "3", "-subscribers", "2", "-count", "200", "-qos", "2", "-topics", "many", "-topic-count", "7"}, 0,
			counters{Sent: 600, Acked: 600, Expected: 1200, Delivered: 1200}},
		{"duplicates counted, not delivered twice", []string{"-publishers", "1", "-subscribers", "1", "-count", "100", "-qos", "1"}, 10,
			counters{Sent: 100, Acked: 100, Expected: 100, Delivered: 100, Duplicates: 10}},
		{"rate limited", []string{"-publishers", "2", "-subscribers", "1", "-count", "50", "-rate", "1000"}, 0,
			counters{Sent: 100, Expected: 100, Delivered: 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := startFakeBroker(t, tt.dupEvery)
			cfg := benchConfig(t, b.ln.Addr().String(), tt.args...)
			start := time.Now()
			rep, err := execute(context.Background(), cfg, io.Discard)
			if err != nil {
				t.Fatalf("execute: %v", err)
			}
			got := counters{Sent: rep.Sent, Acked: rep.Acked, Expected: rep.Expected, Delivered: rep.Delivered, Duplicates: rep.Duplicates, Lost: rep.Lost}
			if got != tt.want {
				t.Errorf("counters = %+v\nwant       %+v", got, tt.want)
			}
			if len(rep.Errors) > 0 {
				t.Errorf("errors: %v", rep.Errors)
			}
			if rep.Delivered > 0 && (rep.LatencyP50 <= 0 || rep.LatencyMax < rep.LatencyP99 || rep.Throughput <= 0) {
				t.Errorf("latency p50 %v p99 %v max %v throughput %v: not filled in", rep.LatencyP50, rep.LatencyP99, rep.LatencyMax, rep.Throughput)
			}
			if want := uint64(cfg.Publishers + cfg.Subscribers); rep.Connections != want {
				t.Errorf("connections = %d, want %d", rep.Connections, want)
			}
			if cfg.Rate > 0 {
				// 50 messages per publisher at 500 msg/s each take at least 98 ms.
				if d := time.Since(start); d < 98*time.Millisecond {
					t.Errorf("rate-limited run took %v, want at least 98ms", d)
				}
			}
		})
	}
}

func TestExecute_LostMessagesEndAfterDrain(t *testing.T) {
	// A broker that accepts and acknowledges but never forwards: every
	// message is lost, and the run ends once -drain has passed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				r := packets.NewReader(nc, 0)
				for {
					p, err := r.ReadPacket()
					if err != nil {
						return
					}
					var reply packets.Packet
					switch p := p.(type) {
					case *packets.Connect:
						reply = &packets.Connack{}
					case *packets.Subscribe:
						reply = &packets.Suback{PacketID: p.PacketID, ReturnCodes: []packets.ReasonCode{packets.GrantedQoS0}}
					default:
						continue
					}
					b, _ := packets.Append(nil, reply)
					_, _ = nc.Write(b)
				}
			}()
		}
	}()
	cfg := benchConfig(t, ln.Addr().String(), "-count", "10", "-drain", "300ms")
	start := time.Now()
	rep, err := execute(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatalf("execute: %v", err)
	}
	if rep.Lost != 10 || rep.Delivered != 0 {
		t.Errorf("lost %d delivered %d, want 10 and 0", rep.Lost, rep.Delivered)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("run took %v, want the 300ms drain and not much more", d)
	}
}

func TestExecute_IdleConnections(t *testing.T) {
	b := startFakeBroker(t, 0)
	cfg := benchConfig(t, b.ln.Addr().String(), "-publishers", "0", "-subscribers", "0", "-idle", "50", "-idle-hold", "10ms")
	var log strings.Builder
	rep, err := execute(context.Background(), cfg, &log)
	if err != nil {
		t.Fatalf("execute: %v", err)
	}
	if rep.IdleConnections != 50 || rep.Connections != 50 || rep.ConnectFailures != 0 {
		t.Errorf("idle %d connections %d failures %d, want 50, 50, 0", rep.IdleConnections, rep.Connections, rep.ConnectFailures)
	}
	if !strings.Contains(log.String(), "50 idle connections open") {
		t.Errorf("log %q does not announce the idle connections", log.String())
	}
}

func TestParseConfig_Errors(t *testing.T) {
	tests := []struct {
		args []string
		flag string
	}{
		{[]string{"-qos", "3"}, "-qos"},
		{[]string{"-size", "15"}, "-size"},
		{[]string{"-topics", "all"}, "-topics"},
		{[]string{"-inflight", "0"}, "-inflight"},
		{[]string{"-inflight", "65536"}, "-inflight"},
		{[]string{"-pub-brokers", "localhost"}, "-pub-brokers"},
		{[]string{"-sub-brokers", ","}, "-sub-brokers"},
		{[]string{"-count", "0"}, "-count"},
		{[]string{"-rate", "-1"}, "-rate"},
		{[]string{"-publishers", "0"}, "-publishers"},
		{[]string{"-publishers", "0", "-subscribers", "0"}, "-publishers"},
		{[]string{"stray"}, "unexpected argument"},
	}
	for _, tt := range tests {
		_, err := parseConfig(tt.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.flag) {
			t.Errorf("parseConfig(%q) error = %v, want one naming %s", tt.args, err, tt.flag)
		}
	}
}

func TestConfig_TopicsAndFilters(t *testing.T) {
	tests := []struct {
		args    []string
		pub     int
		topics  []string
		sub     int
		filters []string
	}{
		{[]string{"-topics", "one"}, 3, []string{"bench/0/data"}, 0, []string{"bench/0/data"}},
		{[]string{"-topics", "per-publisher", "-publishers", "2"}, 1, []string{"bench/1/data"}, 0, []string{"bench/0/data", "bench/1/data"}},
		{[]string{"-topics", "many", "-topic-count", "3"}, 0, []string{"bench/0/data", "bench/1/data", "bench/2/data"}, 0, []string{"bench/+/data"}},
		// Wildcard filters are numbered across subscribers, so none is shared.
		{[]string{"-wildcard-filters", "2", "-subscribers", "2"}, 0, []string{"bench/0/data"}, 1, []string{"bench/0/data", "idle/2/+/x", "idle/3/+/x"}},
	}
	for _, tt := range tests {
		cfg, err := parseConfig(tt.args, io.Discard)
		if err != nil {
			t.Fatalf("parseConfig(%q): %v", tt.args, err)
		}
		if got := cfg.publisherTopics(tt.pub); strings.Join(got, " ") != strings.Join(tt.topics, " ") {
			t.Errorf("%q: publisherTopics(%d) = %q, want %q", tt.args, tt.pub, got, tt.topics)
		}
		if got := cfg.subscriberFilters(tt.sub); strings.Join(got, " ") != strings.Join(tt.filters, " ") {
			t.Errorf("%q: subscriberFilters(%d) = %q, want %q", tt.args, tt.sub, got, tt.filters)
		}
	}
}
