package server_test

import (
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/server"
)

// scrape returns /metrics parsed, by family name.
func scrape(t *testing.T, srv *mqtttest.Server) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + srv.HTTPAddr() + "/metrics")
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
	c := mqtttest.Dial(t, addr)
	defer c.Conn.Close()
	c.MustConnect(&packets.Connect{CleanSession: true, KeepAlive: 30, ClientID: clientID})
	for i, q := range qos {
		id := uint16(i + 1)
		c.Send(&packets.Publish{Topic: "metrics/test", Payload: []byte("x"), QoS: q, PacketID: id})
		switch q {
		case 1:
			if a := mqtttest.Expect[*packets.Puback](c); a.PacketID != id {
				t.Fatalf("PUBLISH %d QoS %d answered %+v", id, q, a)
			}
		case 2:
			if a := mqtttest.Expect[*packets.Pubrec](c); a.PacketID != id {
				t.Fatalf("PUBLISH %d QoS %d answered %+v", id, q, a)
			}
			c.Send(&packets.Pubrel{PacketID: id})
			mqtttest.Expect[*packets.Pubcomp](c)
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
			srv := mqtttest.StartServer(t, mqtttest.Logger(), append([]string{"-http", "127.0.0.1:0"}, tc.args...)...)
			publishAcked(t, srv.Addr(), "hist", 1, 0, 2, 1, 1, 0, 2)
			fams := scrape(t, srv)

			ack := histogramOf(t, fams, "mqtt_publish_ack_latency_seconds")
			if ack.GetSampleCount() != 5 || ack.GetSampleSum() <= 0 {
				t.Errorf("publish-to-ack: count %d sum %g, want 5 observations (QoS 1 and 2 only) summing above 0", ack.GetSampleCount(), ack.GetSampleSum())
			}
			if n := len(ack.GetBucket()); n != len(server.LatencyBuckets)+1 {
				t.Errorf("publish-to-ack: %d buckets, want %d and +Inf", n, len(server.LatencyBuckets))
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
