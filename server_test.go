package main

// Black-box tests of the server as an embedder sees it: server.Config,
// server.New, Run/Serve, Addr, HTTPAddr and Stats, over real sockets. The
// conformance tests (e2e_*_test.go) build on the same exported API through
// harness_test.go; none reaches into the server's fields.

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/listeners"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/server"
)

// -max-connections: connections beyond the limit are closed at once; when a
// client leaves, its place is free again.
func TestServer_MaxConnections(t *testing.T) {
	ts := startServer(t, "-max-connections", "2")
	a := mqtttest.Dial(t, ts.Addr())
	a.MustConnect(&packets.Connect{ClientID: unique(t, "a"), CleanSession: true, KeepAlive: 30})
	b := mqtttest.Dial(t, ts.Addr())
	b.MustConnect(&packets.Connect{ClientID: unique(t, "b"), CleanSession: true, KeepAlive: 30})
	over := mqtttest.Dial(t, ts.Addr()) // closed on accept, before any packet
	if _, got := over.ExpectClosed(waitTimeout); len(got) != 0 {
		t.Fatalf("third connection got %v; want it closed by -max-connections 2", got)
	}
	a.Send(&packets.Disconnect{})
	a.ExpectClosed(waitTimeout)
	deadline := time.Now().Add(waitTimeout)
	for {
		c := mqtttest.Dial(t, ts.Addr())
		connect, _ := packets.Append(nil, &packets.Connect{ProtocolVersion: packets.Version311, ClientID: unique(t, "again"), CleanSession: true, KeepAlive: 30})
		_, _ = c.Conn.Write(connect) // may fail while the old count is still held
		if p, err := c.Read(time.Second); err == nil {
			if ack, ok := p.(*packets.Connack); ok && ack.ReturnCode == packets.Accepted {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no connection accepted after a client left")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// /healthz and /readyz answer 200 on a running single node, and /metrics
// serves the server's series.
func TestServer_HealthReadinessMetrics(t *testing.T) {
	ts := startServer(t, "-http", "127.0.0.1:0")
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, err := httpStatus(ts.HTTPAddr(), path); err != nil || code != http.StatusOK {
			t.Errorf("GET %s = %d, %v; want 200", path, code, err)
		}
	}
	code, body, err := httpGet(ts.HTTPAddr(), "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /metrics = %d, %v", code, err)
	}
	if !strings.Contains(string(body), "# TYPE mqtt_connections gauge") {
		t.Errorf("/metrics has no mqtt_connections gauge:\n%s", body)
	}
}

// Serve accepts from every listener it is given: an embedder (and, next,
// the TLS and WebSocket listeners) plugs in there.
func TestServer_ServeAcceptsFromEveryListener(t *testing.T) {
	cfg := testConfig(t)
	srv, err := server.New(context.Background(), cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	var lns []listeners.Listener
	for range 2 {
		ln, err := listeners.ListenTCP("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lns...) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	<-srv.Ready()
	if got, want := srv.Addr().String(), lns[0].Addr().String(); got != want {
		t.Errorf("Addr() = %s, want the first listener's %s", got, want)
	}
	for i, ln := range lns {
		c := mqtttest.Dial(t, ln.Addr().String())
		c.MustConnect(&packets.Connect{ClientID: unique(t, "l"), CleanSession: true, KeepAlive: 30})
		c.Send(&packets.Disconnect{})
		c.ExpectClosed(waitTimeout)
		t.Logf("listener %d (%s) served a client", i, ln.Addr())
	}
}

// Cancelling Run's context closes the clients and the listener, and Run
// returns nil: the drain is part of the API, not of main.
func TestServer_CancelDrainsAndReturns(t *testing.T) {
	cfg := testConfig(t)
	srv, err := server.New(context.Background(), cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	<-srv.Ready()
	c := mqtttest.Dial(t, srv.Addr().String())
	c.MustConnect(&packets.Connect{ClientID: unique(t, "c"), CleanSession: true, KeepAlive: 30})
	cancel()
	c.ExpectClosed(waitTimeout)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of cancel")
	}
	if conn, err := net.DialTimeout("tcp", srv.Addr().String(), time.Second); err == nil {
		_ = conn.Close()
		t.Fatal("the MQTT listener still accepts after Run returned")
	}
}

// New refuses a file a flag names that it cannot use with a *ConfigError
// naming the flag (main exits 2 on it).
func TestServer_NewConfigErrorNamesFlag(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("not a valid line at all\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"-password-file", "-acl-file"} {
		t.Run(flag, func(t *testing.T) {
			cfg := testConfig(t, flag, bad)
			srv, err := server.New(context.Background(), cfg, testLogger())
			if err == nil {
				_ = srv.Close()
				t.Fatalf("New with a malformed %s succeeded", flag)
			}
			var ce *server.ConfigError
			if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), flag+":") {
				t.Fatalf("New: %v (%T), want a *server.ConfigError starting %q", err, err, flag+":")
			}
		})
	}
}
