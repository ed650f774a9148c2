package main

// Issue "Bounded under abuse": a replica's memory stays bounded when
// clients abuse it. Each test drives the abuse against a replica process on
// a real redis-server and reads the process's resident memory (VmRSS in
// /proc/<pid>/status), sampled while the abuse lasts. Loads are kept small
// enough for the suite; MQTT_TEST_ABUSE=long runs them at the issue's
// figures.

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/loadgen"
	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/internal/redistest"
	"github.com/bridgemq/server/packets"
)

// abuseLong reports whether MQTT_TEST_ABUSE=long asks for the issue's
// figures instead of the suite's.
func abuseLong() bool { return os.Getenv("MQTT_TEST_ABUSE") == "long" }

// procRSS returns the resident memory of process pid, in bytes.
func procRSS(t testing.TB, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatalf("read status of process %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("process %d: no VmRSS", pid)
	return 0
}

// rssWatch samples a process's RSS every 20 ms and keeps the peak.
type rssWatch struct {
	stop chan struct{}
	done chan int64
}

func watchRSS(t testing.TB, pid int) *rssWatch {
	w := &rssWatch{stop: make(chan struct{}), done: make(chan int64, 1)}
	go func() {
		peak := int64(0)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
			if err == nil {
				for _, line := range strings.Split(string(b), "\n") {
					if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
						kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
						peak = max(peak, kb<<10)
					}
				}
			}
			select {
			case <-w.stop:
				w.done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// peak stops the watch and returns the highest RSS seen.
func (w *rssWatch) peak() int64 {
	close(w.stop)
	return <-w.done
}

const mib = 1 << 20

// bulkRetained publishes one retained QoS 1 message of size bytes on each
// of <prefix>/0..n-1 through a raw connection to addr, many per write, and
// waits for every PUBACK.
func bulkRetained(t testing.TB, addr, prefix string, n, size int) {
	t.Helper()
	c := mqtttest.Dial(t, addr)
	c.MustConnect(&packets.Connect{ClientID: unique(t, "bulk"), CleanSession: true, KeepAlive: 60})
	payload := make([]byte, size)
	chunk := max(1, min(200, (4*mib)/size))
	var buf []byte
	for start := 0; start < n; start += chunk {
		buf = buf[:0]
		end := min(start+chunk, n)
		for i := start; i < end; i++ {
			var err error
			buf, err = packets.Append(buf, &packets.Publish{QoS: 1, Retain: true, PacketID: uint16(i-start) + 1,
				Topic: prefix + "/" + strconv.Itoa(i), Payload: payload})
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
		}
		c.Write(buf)
		for range end - start {
			mqtttest.Expect[*packets.Puback](c)
		}
	}
}

// slowRetainedReader subscribes to filter at QoS 0 and reads the n
// retained messages that match it at about rate bytes per second, then
// checks it got each topic once, with RETAIN=1 [MQTT-3.3.1-8].
func slowRetainedReader(t testing.TB, addr, filter string, n int, rate float64) error {
	c := mqtttest.Dial(t, addr)
	c.MustConnect(&packets.Connect{ClientID: unique(t, "slow"), CleanSession: true, KeepAlive: 60})
	c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: filter, QoS: 0}}})
	seen := make(map[string]bool, n)
	start := time.Now()
	bytes := 0
	for len(seen) < n {
		p, err := c.Read(10 * time.Second)
		if err != nil {
			return fmt.Errorf("after %d of %d retained messages: %w", len(seen), n, err)
		}
		m, ok := p.(*packets.Publish)
		if !ok {
			continue // the SUBACK
		}
		if !m.Retain || seen[m.Topic] {
			return fmt.Errorf("%q: retain=%v, seen before %v", m.Topic, m.Retain, seen[m.Topic])
		}
		seen[m.Topic] = true
		bytes += len(m.Payload)
		// Read no faster than rate: the replica's writer and the socket
		// buffers fill, and its feeder waits for room.
		if ahead := time.Duration(float64(bytes)/rate*float64(time.Second)) - time.Since(start); ahead > 0 {
			time.Sleep(ahead)
		}
	}
	return nil
}

// Item 3: four clients subscribe at once to a wildcard over many retained
// messages, and read slowly. The replica holds the matching topic names,
// at most 4096 ordering marks, and about two pages (256 messages, at most
// 1 MiB of payload) per subscriber, not every message: before paging,
// 50,000 retained messages of 1 KB cost a replica +566 MB RSS. Bound
// checked: RSS grows by at most 48 MiB while the four subscribers are fed
// (20,000 × 1 KiB: measured +20 MiB; 64 × 512 KiB: +30 MiB, where pages
// bounded by count only cost +261 MiB). The retained messages are
// published through another replica, so the one measured starts clean.
func TestBounds_RetainedWildcardSubscribersBoundedMemory_MQTT_3_3_1_6(t *testing.T) {
	rs := redistest.Start(t)
	for _, tc := range []struct {
		name      string
		n, size   int
		rate      float64 // bytes per second each subscriber reads
		limitRise int64
	}{
		{"20000x1KiB", 20000, 1 << 10, 8 * mib, 48 * mib},
		{"64x512KiB", 64, 512 << 10, 12 * mib, 48 * mib},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if abuseLong() {
				tc.n = tc.n * 5 / 2 // 50,000 × 1 KiB as in the issue; 160 × 512 KiB
			}
			// Published through one replica, subscribed on another that
			// holds nothing but the retained index.
			pub := mqtttest.StartProcess(t, rs.URL(), "rm-pub-"+tc.name, "-log-level", "info")
			p := mqtttest.StartProcess(t, rs.URL(), "rm-sub-"+tc.name, "-log-level", "info")
			prefix := "rm" + tc.name
			bulkRetained(t, pub.Addr(), prefix, tc.n, tc.size)
			waitMetric(t, p.HTTPAddr(), "mqtt_bridge_retained_messages", func(v float64) bool { return v >= float64(tc.n) })
			base := procRSS(t, p.Cmd.Process.Pid)
			w := watchRSS(t, p.Cmd.Process.Pid)
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			start := time.Now()
			for range 4 {
				wg.Go(func() {
					if err := slowRetainedReader(t, p.Addr(), prefix+"/#", tc.n, tc.rate); err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			peak := w.peak()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			rise := peak - base
			t.Logf("%d retained × %d B, 4 subscribers to %s/# in %s: RSS %.1f MiB before, peak %.1f MiB, +%.1f MiB (bound %d MiB)",
				tc.n, tc.size, prefix, time.Since(start).Round(time.Millisecond), float64(base)/mib, float64(peak)/mib, float64(rise)/mib, tc.limitRise/mib)
			if rise > tc.limitRise {
				t.Errorf("replica RSS rose by %.1f MiB while feeding retained messages, want at most %d MiB", float64(rise)/mib, tc.limitRise/mib)
			}
		})
	}
}

// waitMetric polls a replica's /metrics until metric satisfies ok.
func waitMetric(t testing.TB, httpAddr, metric string, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v := metricValue(t, httpAddr, metric)
		if ok(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v after 10s", metric, v)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Item 5: while Redis stalls, a replica stops reading from publishers once
// -max-inflight-bytes of their PUBLISH packets wait for Redis, instead of
// buffering them: eight publishers of 256 KiB QoS 1 messages (20 msg/s
// each, up to 64 unacknowledged) through a 3 s stall (CLIENT PAUSE ALL:
// Redis answers nothing, as with DEBUG SLEEP, which needs
// enable-debug-command) with -max-inflight-bytes 8MiB. Bound checked: RSS
// rises by at most 96 MiB, whatever the stall's length: the 8 MiB in
// flight, the 16 MiB republish window of the last 10 s, and the garbage
// collector's headroom (GOGC=100 lets the heap reach twice what is live).
// Measured: +62 MiB for a 3 s stall, +78 MiB for 8 s, +48 MiB for the same
// load without a stall (MQTT_TEST_STALL=0s); without the bound
// (MQTT_TEST_MAX_INFLIGHT_BYTES=0) +293 MiB and +394 MiB; the 8 s
// DEBUG SLEEP raised RSS from 18 MB to 425 MB. Afterwards every
// acknowledged message reaches the subscriber [MQTT-4.3.2-2].
// MQTT_TEST_ABUSE=long stalls 8 s.
func TestBounds_RedisStallBackPressuresPublishers(t *testing.T) {
	stall := 3 * time.Second
	if abuseLong() {
		stall = 8 * time.Second
	}
	if v := os.Getenv("MQTT_TEST_STALL"); v != "" {
		d, err := time.ParseDuration(v) // 0s: the same load without a stall, to compare
		if err != nil {
			t.Fatalf("MQTT_TEST_STALL: %v", err)
		}
		stall = d
	}
	rs := redistest.Start(t)
	inflight := "8MiB"
	if v := os.Getenv("MQTT_TEST_MAX_INFLIGHT_BYTES"); v != "" {
		inflight = v // 0: as before the bound, to compare
	}
	// The publishers' replica is measured; the subscriber is on another,
	// whose outgoing queue is not what this bounds. -node-ttl outlasts the
	// stall: replicas reaping each other is not what this test is about.
	p := mqtttest.StartProcess(t, rs.URL(), "stall-pub", "-log-level", "info", "-node-ttl", "30s", "-max-inflight-bytes", inflight)
	// The subscriber's queue is unbounded in bytes: after the stall the
	// burst of 256 KiB messages outruns a subscriber on a loaded machine,
	// and past the default -max-queued-bytes (8 MiB) that is a documented
	// drop (seen: 445 of 760 dropped in a full -race run), not the loss
	// this test looks for.
	q := mqtttest.StartProcess(t, rs.URL(), "stall-sub", "-log-level", "info", "-node-ttl", "30s", "-max-queued-bytes", "0")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tally := loadgen.NewTally()
	sub := loadgen.NewSubscriber(unique(t, "sub"), "stall/#", tally, q.Addr())
	subDone := sub.Start(t, ctx, 0, nil)

	var pubs []*loadgen.Publisher
	for i := range 8 {
		pub := loadgen.NewPublisher(fmt.Sprintf("pub%d", i), fmt.Sprintf("stall/p%d", i), dialer(p.Addr()))
		pub.Padding = 256 << 10
		pub.Window = 64
		pub.AckTimeout = stall + 10*time.Second // patient devices: the stall, not reconnects, is measured
		pubs = append(pubs, pub)
	}
	base := procRSS(t, p.Cmd.Process.Pid)
	w := watchRSS(t, p.Cmd.Process.Pid)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer rdb.Close()
	faultDone := make(chan error, 1)
	go func() {
		time.Sleep(time.Second) // publishing is under way
		if stall <= 0 {
			faultDone <- nil
			return
		}
		faultDone <- rdb.ClientPause(ctx, stall).Err()
	}()
	// 20 msg/s each: 40 MiB/s in all, 120 MiB offered during a 3 s stall.
	errs := loadgen.RunPublishers(ctx, pubs, 1<<30, 20, time.Now().Add(stall+3*time.Second))
	if err := <-faultDone; err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	for _, err := range errs {
		if err != nil {
			t.Errorf("publisher: %v", err)
		}
	}
	sum := loadgen.AwaitDelivery(pubs, tally, 15*time.Second, quietWindow)
	peak := w.peak()
	cancel()
	<-subDone
	throttled := metricValue(t, p.HTTPAddr(), "mqtt_publish_throttled_total")
	rise := peak - base
	t.Logf("stall %s, 8 × 256 KiB publishers, -max-inflight-bytes %s: %s; RSS %.1f MiB before, peak %.1f MiB, +%.1f MiB; %v PUBLISH bodies waited",
		stall, inflight, sum, float64(base)/mib, float64(peak)/mib, float64(rise)/mib, throttled)
	if sum.Lost != 0 {
		t.Errorf("%d acknowledged messages never delivered, first: %v", sum.Lost, sum.FirstLost)
	}
	if sum.Acked == 0 {
		t.Error("nothing acknowledged")
	}
	if throttled == 0 && stall > 0 {
		t.Error("no PUBLISH waited for -max-inflight-bytes: the stall did not reach the bound")
	}
	if rise > 96*mib {
		t.Errorf("replica RSS rose by %.1f MiB during the stall, want at most 96 MiB", float64(rise)/mib)
	}
}
