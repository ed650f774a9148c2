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

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

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

// scrape returns /metrics parsed, by family name.
func scrape(t *testing.T, srv *Server) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + srv.HTTPAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// publishAcked connects as clientID and sends each QoS in qos as a PUBLISH,
// waiting for its PUBACK or PUBREC (nothing for QoS 0) before the next, so
// that every QoS 1 and 2 message is its own Redis batch.
func publishAcked(t *testing.T, addr string, clientID string, qos ...byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := packets.NewReader(conn, 0)
	send := func(p packets.Packet) {
		t.Helper()
		b, err := packets.Append(nil, p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	send(&packets.Connect{ProtocolVersion: packets.Version311, CleanSession: true, KeepAlive: 30, ClientID: clientID})
	if p, err := r.ReadPacket(); err != nil {
		t.Fatalf("CONNACK: %v", err)
	} else if ack, ok := p.(*packets.Connack); !ok || ack.ReturnCode != packets.Accepted {
		t.Fatalf("CONNACK: %+v", p)
	}
	for i, q := range qos {
		id := uint16(i + 1)
		send(&packets.Publish{Topic: "metrics/test", Payload: []byte("x"), QoS: q, PacketID: id})
		if q == 0 {
			continue
		}
		p, err := r.ReadPacket()
		if err != nil {
			t.Fatalf("ack of PUBLISH %d: %v", id, err)
		}
		switch a := p.(type) {
		case *packets.Puback:
			if q != 1 || a.PacketID != id {
				t.Fatalf("PUBLISH %d QoS %d answered %+v", id, q, a)
			}
		case *packets.Pubrec:
			if q != 2 || a.PacketID != id {
				t.Fatalf("PUBLISH %d QoS %d answered %+v", id, q, a)
			}
			send(&packets.Pubrel{PacketID: id})
			if p, err := r.ReadPacket(); err != nil {
				t.Fatalf("PUBCOMP %d: %v", id, err)
			} else if _, ok := p.(*packets.Pubcomp); !ok {
				t.Fatalf("PUBREL %d answered %+v", id, p)
			}
		default:
			t.Fatalf("PUBLISH %d answered %+v", id, p)
		}
	}
}

// histogramOf returns the one histogram sample of family name, labelled
// node="test", or fails.
func histogramOf(t *testing.T, fams map[string]*dto.MetricFamily, name string) *dto.Histogram {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no %s in /metrics", name)
	}
	if f.GetType() != dto.MetricType_HISTOGRAM || len(f.GetMetric()) != 1 {
		t.Fatalf("%s: type %s with %d series, want one histogram", name, f.GetType(), len(f.GetMetric()))
	}
	m := f.GetMetric()[0]
	if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetName() != "node" || m.GetLabel()[0].GetValue() != "test" {
		t.Errorf("%s labels %v, want node=\"test\" alone", name, m.GetLabel())
	}
	return m.GetHistogram()
}

// The latency histograms count known traffic: one publish-to-ack
// observation per QoS 1 and 2 PUBLISH (none for QoS 0), and with Redis one
// round trip per publish batch; the Go and process collectors are there;
// no series carries a label Prometheus adds itself (job, instance).
func TestMetrics_HistogramsCountKnownTraffic(t *testing.T) {
	rs := redistest.Start(t)
	for _, tc := range []struct {
		name  string
		args  []string
		redis bool
	}{
		{"in-process bridge", nil, false},
		{"redis bridge", []string{"-redis-url", rs.URL()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startTestServer(t, tc.args...)
			publishAcked(t, srv.Addr().String(), "hist", 1, 0, 2, 1, 1, 0, 2)
			fams := scrape(t, srv)

			ack := histogramOf(t, fams, "mqtt_publish_ack_latency_seconds")
			if ack.GetSampleCount() != 5 || ack.GetSampleSum() <= 0 {
				t.Errorf("publish-to-ack: count %d sum %g, want 5 observations (QoS 1 and 2 only) summing above 0", ack.GetSampleCount(), ack.GetSampleSum())
			}
			if n := len(ack.GetBucket()); n != len(latencyBuckets)+1 {
				t.Errorf("publish-to-ack: %d buckets, want %d and +Inf", n, len(latencyBuckets))
			}
			if tc.redis {
				// Each QoS 1/2 publish waited for its ack, so it went alone;
				// a QoS 0 one may share the next one's batch.
				rt := histogramOf(t, fams, "mqtt_bridge_redis_publish_latency_seconds")
				if c := rt.GetSampleCount(); c < 5 || c > 7 || rt.GetSampleSum() <= 0 {
					t.Errorf("redis round trips: count %d sum %g, want 5 to 7 batches for 7 publishes", c, rt.GetSampleSum())
				}
			} else if fams["mqtt_bridge_redis_publish_latency_seconds"] != nil {
				t.Error("the in-process bridge shows a Redis round-trip histogram")
			}

			for name, typ := range map[string]dto.MetricType{
				"go_goroutines":                 dto.MetricType_GAUGE,
				"go_memstats_heap_alloc_bytes":  dto.MetricType_GAUGE,
				"process_cpu_seconds_total":     dto.MetricType_COUNTER,
				"process_resident_memory_bytes": dto.MetricType_GAUGE,
			} {
				if f := fams[name]; f == nil || f.GetType() != typ {
					t.Errorf("%s: %v, want a %s", name, f, typ)
				}
			}
			for name, f := range fams {
				for _, m := range f.GetMetric() {
					for _, l := range m.GetLabel() {
						if l.GetName() == "job" || l.GetName() == "instance" {
							t.Errorf("%s carries label %s, which Prometheus adds itself", name, l.GetName())
						}
					}
				}
			}
		})
	}
}
