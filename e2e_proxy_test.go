package main

// End-to-end tests of the PROXY protocol (-proxy-protocol): headers sent by
// hand, v1 and v2, over TCP and TLS; refused headers and missing ones; and
// a real HAProxy with send-proxy-v2, in front of the TCP listener and as
// TLS passthrough in front of the TLS listener.

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/haproxytest"
	"github.com/bridgemq/server/internal/logbuf"
	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/packets"
)

// logBuffer is a debug logger's output, safe to read while it is written.
type logBuffer struct{ logbuf.Buffer }

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// waitConnectedFrom waits for the server's "client connected" line of
// clientID and checks the remote address it shows.
func waitConnectedFrom(t *testing.T, logs *logBuffer, clientID, remote string) {
	t.Helper()
	var line string
	waitFor(t, 5*time.Second, "client connected line of "+clientID, func() bool {
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "client connected") && strings.Contains(l, "client="+clientID) {
				line = l
				return true
			}
		}
		return false
	})
	if !strings.Contains(line, "remote="+remote+" ") {
		t.Errorf("server saw %s connect with\n  %s\nwant remote=%s", clientID, line, remote)
	}
}

// connectRaw sends a CONNECT on c and returns the CONNACK, or the error
// that ended the connection first.
func connectRaw(c net.Conn, clientID string) (*packets.Connack, error) {
	b, err := packets.Append(nil, &packets.Connect{ProtocolVersion: packets.Version311, CleanSession: true, KeepAlive: 30, ClientID: clientID})
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := c.Write(b); err != nil {
		return nil, err
	}
	p, err := packets.NewReader(c, 0).ReadPacket()
	if err != nil {
		return nil, err
	}
	ack, _ := p.(*packets.Connack)
	return ack, nil
}

// dialWithHeader connects to addr, sends a PROXY header of version (0 =
// none) claiming to come from src, and speaks TLS over it if cfg is set.
func dialWithHeader(t *testing.T, addr string, version byte, src net.Addr, cfg *tls.Config) net.Conn {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	if version != 0 {
		dst, _ := net.ResolveTCPAddr("tcp", addr)
		if _, err := proxyproto.HeaderProxyFromAddrs(version, src, dst).WriteTo(raw); err != nil {
			t.Fatal(err)
		}
	}
	if cfg != nil {
		return tls.Client(raw, cfg)
	}
	return raw
}

// A header from a trusted load balancer, v1 or v2, over TCP or before TLS:
// the session's remote address is the client's.
func TestProxy_HeaderGivesClientAddress(t *testing.T) {
	f := newTLSFiles(t, "server")
	var logs logBuffer
	srv := mqtttest.StartServer(t, logs.logger(), "-proxy-protocol", "127.0.0.0/8",
		"-tls-listen", "127.0.0.1:0", "-tls-cert", f.cert, "-tls-key", f.key)
	tlsAddr := srv.ListenerAddr("proxy+tls")
	if srv.ListenerAddr("proxy+tcp") == "" || tlsAddr == "" {
		t.Fatalf("listeners: proxy+tcp %q, proxy+tls %q", srv.ListenerAddr("proxy+tcp"), tlsAddr)
	}
	for i, tt := range []struct {
		name    string
		version byte
		tls     bool
	}{
		{"v1 tcp", 1, false}, {"v2 tcp", 2, false}, {"v1 tls", 1, true}, {"v2 tls", 2, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 40000 + i}
			addr, cfg := srv.Addr(), (*tls.Config)(nil)
			if tt.tls {
				addr, cfg = tlsAddr, &tls.Config{RootCAs: f.ca.Pool()}
				cfg.ServerName = "127.0.0.1"
			}
			c := dialWithHeader(t, addr, tt.version, src, cfg)
			id := unique(t, "c")
			ack, err := connectRaw(c, id)
			if err != nil || ack == nil || ack.ReturnCode != packets.Accepted {
				t.Fatalf("CONNECT: %+v, %v", ack, err)
			}
			waitConnectedFrom(t, &logs, id, src.String())
		})
	}
}

// The EMQX client record in Redis names the client's real address
// (peerhost), not the load balancer's, while it is connected.
func TestProxy_ClientRecordHasClientAddress(t *testing.T) {
	rs := redistest.Start(t)
	srv := startRedisReplica(t, rs.URL(), "px", "-proxy-protocol", "127.0.0.0/8")
	src := &net.TCPAddr{IP: net.IPv4(203, 0, 113, 9), Port: 40123}
	c := dialWithHeader(t, srv.Addr(), 2, src, nil)
	id := unique(t, "rec")
	if ack, err := connectRaw(c, id); err != nil || ack == nil || ack.ReturnCode != packets.Accepted {
		t.Fatalf("CONNECT: %+v, %v", ack, err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer func() { _ = rdb.Close() }()
	rec := rdb.HGetAll(context.Background(), "mqtt:client:"+id).Val()
	if rec["state"] != "1" || rec["peerhost"] != src.String() {
		t.Fatalf("client record %v, want state 1 and peerhost %s", rec, src)
	}
}

// A source outside -proxy-protocol that sends a header is closed without
// a CONNACK; the same source without a header is a direct client.
func TestProxy_UntrustedSourceSendingHeaderIsClosed(t *testing.T) {
	srv := mqtttest.StartServer(t, mqtttest.Logger(), "-proxy-protocol", "10.0.0.0/8")
	src := &net.TCPAddr{IP: net.IPv4(203, 0, 113, 7), Port: 4242}
	for _, v := range []byte{1, 2} {
		c := dialWithHeader(t, srv.Addr(), v, src, nil)
		if ack, err := connectRaw(c, unique(t, "spoof")); err == nil {
			t.Errorf("v%d header from an untrusted source: answered %+v, want the connection closed", v, ack)
		}
	}
	c := dialWithHeader(t, srv.Addr(), 0, nil, nil)
	if ack, err := connectRaw(c, unique(t, "direct")); err != nil || ack.ReturnCode != packets.Accepted {
		t.Fatalf("direct client: %+v, %v", ack, err)
	}
}

// A trusted source that does not start with a header is closed without a
// CONNACK, on TCP and on TLS.
func TestProxy_TrustedSourceWithoutHeaderIsClosed(t *testing.T) {
	f := newTLSFiles(t, "server")
	srv := mqtttest.StartServer(t, mqtttest.Logger(), "-proxy-protocol", "127.0.0.1/32",
		"-tls-listen", "127.0.0.1:0", "-tls-cert", f.cert, "-tls-key", f.key)
	if ack, err := connectRaw(dialWithHeader(t, srv.Addr(), 0, nil, nil), unique(t, "tcp")); err == nil {
		t.Errorf("TCP without header: answered %+v, want the connection closed", ack)
	}
	c := dialWithHeader(t, srv.ListenerAddr("proxy+tls"), 0, nil, &tls.Config{RootCAs: f.ca.Pool(), ServerName: "127.0.0.1"})
	if ack, err := connectRaw(c, unique(t, "tls")); err == nil {
		t.Errorf("TLS without header: answered %+v, want the connection closed", ack)
	}
}

// Behind a real HAProxy with send-proxy-v2, in front of the TCP listener
// and as TLS passthrough in front of the TLS listener: Paho's MQTT works,
// and the server sees the client's own address, not HAProxy's.
func TestProxy_BehindHAProxySendProxyV2(t *testing.T) {
	f := newTLSFiles(t, "server")
	var logs logBuffer
	srv := mqtttest.StartServer(t, logs.logger(), "-http", "127.0.0.1:0", "-proxy-protocol", "127.0.0.1/32",
		"-tls-listen", "127.0.0.1:0", "-tls-cert", f.cert, "-tls-key", f.key)
	tcpLB := haproxytest.Start(t, []haproxytest.Backend{{MQTT: srv.Addr(), HTTP: srv.HTTPAddr(), SendProxyV2: true}})
	tlsLB := haproxytest.Start(t, []haproxytest.Backend{{MQTT: srv.ListenerAddr("proxy+tls"), HTTP: srv.HTTPAddr(), SendProxyV2: true}})
	tlsCfg := &tls.Config{RootCAs: f.ca.Pool(), ServerName: "127.0.0.1"}

	// The address the server logs is the client's socket, through HAProxy.
	for _, lb := range []struct {
		name string
		addr string
		cfg  *tls.Config
	}{{"tcp", tcpLB.Addr(), nil}, {"tls passthrough", tlsLB.Addr(), tlsCfg}} {
		t.Run(lb.name, func(t *testing.T) {
			c := dialWithHeader(t, lb.addr, 0, nil, lb.cfg)
			id := unique(t, "c")
			ack, err := connectRaw(c, id)
			if err != nil || ack == nil || ack.ReturnCode != packets.Accepted {
				t.Fatalf("CONNECT through HAProxy: %+v, %v", ack, err)
			}
			waitConnectedFrom(t, &logs, id, c.LocalAddr().String())
		})
	}

	// Paho: subscribe through the TLS passthrough, publish through TCP.
	sub, err := tryPaho(t, tlsPahoOpts(tlsLB.Addr(), unique(t, "sub"), tlsCfg))
	if err != nil {
		t.Fatalf("Paho through HAProxy TLS passthrough: %v", err)
	}
	topic := unique(t, "t")
	q, got := subscribeChan(t, sub, topic+"/x")
	if q != 1 {
		t.Fatalf("SUBACK %#x", q)
	}
	pub, err := tryPaho(t, pahoOpts(proxyFront(tcpLB.Addr()), unique(t, "pub"), true))
	if err != nil {
		t.Fatalf("Paho through HAProxy TCP: %v", err)
	}
	publishQoS1(t, pub, topic+"/x", "through HAProxy")
	expectPayload(t, got, "through HAProxy")
}
