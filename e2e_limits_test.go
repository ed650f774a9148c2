package main

import (
	"context"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bridgemq/server/internal/logbuf"
	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/server"
)

// -client-id-pattern refuses a client id that does not match it with
// CONNACK 0x02 [MQTT-3.1.3-9]: a fleet can keep ids out of ACL patterns'
// way, e.g. "/" reaching into another device's tree through %c.
func TestConnect_ClientIDPattern_Connack0x02_MQTT_3_1_3_9(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		for _, tc := range []struct {
			id   string
			want packets.ReasonCode
		}{
			{"dev-17", packets.Accepted},
			{"dev-17/../dev-18", packets.RefusedIdentifierRejected},
			{"xdev-17", packets.RefusedIdentifierRejected},
			{"", packets.Accepted}, // the server's own generated id
		} {
			c := mqtttest.Dial(t, d.pub().Addr())
			ack := c.Connect(&packets.Connect{ClientID: tc.id, CleanSession: true, KeepAlive: 30})
			if ack.ReturnCode != tc.want {
				t.Fatalf("client id %q: CONNACK 0x%02x, want 0x%02x", tc.id, ack.ReturnCode, tc.want)
			}
			if tc.want != packets.Accepted {
				c.ExpectClosed(waitTimeout)
			}
		}
	}, "-client-id-pattern", `dev-[0-9]+`)
}

// A password in -redis-url for a Redis that asks for none is accepted by
// Redis; the replica says so in its log rather than stay silent.
func TestRedis_PasswordNotRequiredIsLogged(t *testing.T) {
	rs := redistest.Start(t)
	url := strings.Replace(rs.URL(), "redis://", "redis://:not-needed@", 1)
	cfg := testConfig(t, "-redis-url", url, "-node-id", "pw")
	var logs logbuf.Buffer
	srv, err := server.New(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("server with an unneeded Redis password: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if !strings.Contains(logs.String(), "accepts clients without one") {
		t.Fatalf("no warning about the unneeded password; log:\n%s", logs.String())
	}
}

// heapInUse is the Go heap in use after a collection, in bytes.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// heapHeld is what the Go runtime holds from the operating system for the
// heap and has not returned: in use, or free but not yet released.
func heapHeld() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapSys - ms.HeapReleased)
}

// A subscriber that never reads holds at most -max-queued-bytes of messages
// on its replica, whatever their count, and the memory is handed back once
// it goes (issue 8, item 6).
func TestQueue_SubscriberThatNeverReadsBoundedByBytes_Issue8_6(t *testing.T) {
	const payload, count = 256 << 10, 200 // 50 MiB published
	for _, tc := range []struct {
		name      string
		bound     string
		maxGrowth int64
	}{
		{"bounded 2MiB", "2MiB", 12 << 20},
		{"unbounded", "0", 1 << 40}, // only the hand-back is checked
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachDeployment(t, func(t *testing.T, d *deployment) {
				topic := unique(t, "slow")
				sub := mqtttest.Dial(t, d.sub().Addr())
				sub.MustConnect(&packets.Connect{ClientID: unique(t, "sub"), CleanSession: true, KeepAlive: 60})
				sub.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})
				base := heapInUse()

				pub := mqtttest.Dial(t, d.pub().Addr())
				pub.MustConnect(&packets.Connect{ClientID: unique(t, "pub"), CleanSession: true, KeepAlive: 60})
				body := strings.Repeat("x", payload)
				// QoS 0, so that what the heap holds is the subscriber's
				// queue, not the publishing replica's window of recent
				// QoS 1 messages (kept for a Redis restart).
				for range count {
					pub.Send(&packets.Publish{Topic: topic, Payload: []byte(body)})
				}
				// Wait until the messages have reached the subscriber's
				// replica: its counts of written and dropped messages
				// stop moving (those queued are in neither).
				subSrv := d.subServer(t)
				deadline := time.Now().Add(waitTimeout)
				last, stable := int64(-1), 0
				for stable < 10 && time.Now().Before(deadline) {
					st := subSrv.Stats()
					n := st["messages_delivered"] + st["dropped_qos0_queue_full"]
					if n == last && n > 0 {
						stable++
					} else {
						last, stable = n, 0
					}
					time.Sleep(30 * time.Millisecond)
				}
				grown := heapInUse() - base
				t.Logf("heap grew %d KiB with %d messages of %d KiB for a subscriber that never reads (dropped %d)",
					grown>>10, count, payload>>10, subSrv.Stats()["dropped_qos0_queue_full"])
				// Both replicas of a Redis deployment live in this process:
				// the publishing side's go-redis connections keep write and
				// read buffers sized for the largest pipeline they carried,
				// up to ~20 MiB here, whatever the subscriber's queue holds.
				limit := tc.maxGrowth
				if len(d.servers) > 1 {
					limit += 20 << 20
				}
				if grown > limit {
					t.Fatalf("heap grew %d MiB, want under %d MiB with -max-queued-bytes %s", grown>>20, limit>>20, tc.bound)
				}
				_ = sub.Conn.Close()
				if tc.bound != "0" {
					return
				}
				peak := heapHeld()
				deadline = time.Now().Add(15 * time.Second)
				for heapHeld() > peak/2 && heapHeld() > base+(16<<20) {
					if time.Now().After(deadline) {
						t.Fatalf("heap still holds %d MiB from the OS 15 s after the slow subscriber left (peak %d MiB, base %d MiB)",
							heapHeld()>>20, peak>>20, base>>20)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}, "-max-queued-bytes", tc.bound)
		})
	}
}
