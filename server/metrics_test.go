package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/packets"
)

// startTestServer runs a server with args on loopback and its HTTP endpoint
// on, until the test ends.
func startTestServer(t *testing.T, args ...string) *Server {
	t.Helper()
	all := append([]string{"-listen", "127.0.0.1:0", "-http", "127.0.0.1:0", "-node-id", "test"}, args...)
	cfg, err := ParseConfig(all, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	return runTestServer(t, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// runTestServer runs a server from cfg, logging to log, until the test ends.
func runTestServer(t *testing.T, cfg *Config, log *slog.Logger) *Server {
	t.Helper()
	srv, err := New(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("Run: %v", err)
	}
	return srv
}

// Every counter the server and both bridges keep is exported as a
// described, typed series: none is silently missing from /metrics.
func TestMetrics_EveryStatIsDescribed(t *testing.T) {
	described := make(map[string]bool)
	names := make(map[string]bool)
	for _, m := range metrics {
		if described[m.key] || names[metricName(m)] {
			t.Errorf("metric %q listed twice", m.key)
		}
		described[m.key], names[metricName(m)] = true, true
	}
	rs := redistest.Start(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"in-process bridge", nil},
		{"redis bridge", []string{"-redis-url", rs.URL()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startTestServer(t, tc.args...)
			for k := range srv.Stats() {
				if !described[k] {
					t.Errorf("Stats key %q has no entry in metrics: it would not be exported", k)
				}
			}
		})
	}
}

// /metrics types every series (no "untyped"), names counters with _total
// [Prometheus naming conventions] and labels each with the node id.
func TestMetrics_TypedAndNamed(t *testing.T) {
	srv := startTestServer(t)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + srv.HTTPAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %d, %v", resp.StatusCode, err)
	}
	text := string(body)
	stats := srv.Stats()
	for _, m := range metrics {
		if _, ok := stats[m.key]; !ok {
			continue // a Redis-only series on the in-process bridge
		}
		name := metricName(m)
		want := "gauge"
		if strings.HasSuffix(name, "_total") {
			want = "counter"
		}
		if !strings.Contains(text, "# TYPE "+name+" "+want+"\n") {
			t.Errorf("no %q line in /metrics", "# TYPE "+name+" "+want)
		}
		if !strings.Contains(text, "\n"+name+`{node="test"} `) {
			t.Errorf("no sample of %s labelled node=\"test\" in /metrics", name)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "# TYPE mqtt_") && strings.HasSuffix(line, " untyped") {
			t.Errorf("untyped series: %q", line)
		}
	}
}

// A connection shows in the connections gauge while it is open.
func TestMetrics_ConnectionsGauge(t *testing.T) {
	srv := startTestServer(t)
	conn, err := net.DialTimeout("tcp", srv.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// CONNECT, MQTT 3.1.1, clean session, keep-alive 60, client id "m".
	connect, err := packets.Append(nil, &packets.Connect{ProtocolVersion: packets.Version311, CleanSession: true, KeepAlive: 60, ClientID: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(connect); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	p, err := packets.NewReader(conn, 0).ReadPacket()
	if ack, ok := p.(*packets.Connack); err != nil || !ok || ack.ReturnCode != packets.Accepted {
		t.Fatalf("CONNACK %+v, %v", p, err)
	}
	if got := srv.Stats()["connections"]; got != 1 {
		t.Fatalf("connections = %d with one client connected, want 1", got)
	}
}
