package server_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bridgemq/server/internal/logbuf"
	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/server"
)

// A client hammering a topic the ACL denies, with a subscription the ACL
// denies and with bad passwords, yields a bounded number of log lines; each
// refusal line names the client, the user and the remote address, and the
// denials are counted.
func TestServer_DeniedHammeringIsRateLimited(t *testing.T) {
	dir := t.TempDir()
	acl := filepath.Join(dir, "acl")
	if err := os.WriteFile(acl, []byte("topic readwrite open/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out logbuf.Buffer
	srv := mqtttest.StartServer(t, slog.New(slog.NewTextHandler(&out, nil)), "-http", "127.0.0.1:0", "-acl-file", acl)
	const n = 200
	c := mqtttest.Dial(t, srv.Addr())
	c.MustConnect(&packets.Connect{CleanSession: true, KeepAlive: 30, ClientID: "hammer"})
	for i := range n {
		c.Send(&packets.Publish{Topic: "secret/x", Payload: []byte("x"), QoS: 1, PacketID: uint16(i + 1)})
	}
	for i := range n {
		c.Send(&packets.Subscribe{PacketID: uint16(i + 1), Subscriptions: []packets.Subscription{{Filter: "secret/#", QoS: 1}}})
	}
	// The last SUBACK: every packet before it has been handled.
	for got := 0; got < 2*n; got++ {
		if _, err := c.Read(mqtttest.WaitTimeout); err != nil {
			t.Fatalf("answer %d: %v", got, err)
		}
	}
	stats := srv.Stats()
	if stats["publish_denied"] != n || stats["subscribe_denied"] != n {
		t.Errorf("publish_denied %d, subscribe_denied %d, want %d each", stats["publish_denied"], stats["subscribe_denied"], n)
	}
	pubs := out.Lines("publish refused by ACL")
	subs := out.Lines("subscription refused by ACL")
	if len(pubs)+len(subs) != server.RefusalBurst {
		t.Errorf("%d publish and %d subscribe refusal lines for %d refusals, want %d in all", len(pubs), len(subs), 2*n, server.RefusalBurst)
	}
	for _, l := range append(pubs, subs...) {
		for _, k := range []string{"level=INFO", "client=hammer", "user=", "remote=127.0.0.1:"} {
			if !strings.Contains(l, k) {
				t.Errorf("refusal line without %s: %s", k, l)
			}
		}
	}
}

// A client reconnecting over and over with a refused CONNECT is counted
// each time and logged at most refusalBurst times in a window.
func TestServer_DeniedConnectsAreRateLimited(t *testing.T) {
	var out logbuf.Buffer
	srv := mqtttest.StartServer(t, slog.New(slog.NewTextHandler(&out, nil)), "-http", "127.0.0.1:0", "-allow-anonymous=false")
	const n = 30
	for range n {
		c := mqtttest.Dial(t, srv.Addr())
		if ack := c.Connect(&packets.Connect{CleanSession: true, KeepAlive: 30, ClientID: "nobody"}); ack.ReturnCode != packets.RefusedNotAuthorized {
			t.Fatalf("CONNACK return code 0x%02x, want 0x05 not authorized", ack.ReturnCode)
		}
		_ = c.Conn.Close()
	}
	if got := srv.Stats()["connects_denied"]; got != n {
		t.Errorf("connects_denied %d, want %d", got, n)
	}
	lines := out.Lines("connection refused", "client=nobody")
	if len(lines) != server.RefusalBurst {
		t.Errorf("%d connection refused lines for %d refusals, want %d", len(lines), n, server.RefusalBurst)
	}
	for _, l := range lines {
		if !strings.Contains(l, "level=INFO") || !strings.Contains(l, "remote=127.0.0.1:") {
			t.Errorf("refusal line without level or remote: %s", l)
		}
	}
}
