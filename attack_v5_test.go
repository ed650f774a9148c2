package main

// Attacks on MQTT 5.0 Clean Start / Session Expiry and on Shared
// Subscriptions, single node and across replicas sharing one Redis, each
// run twice over the same deployment (same ids and groups) so that the
// second round meets what the first left. All of these held; they stay
// as guards.

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/bridgemq/server/internal/mqtttest"
	"github.com/bridgemq/server/packets"
)

// A session with interval 0 is taken over by a Clean Start 0 connection
// asking to be kept (600 s): the new session must not end with the old
// connection, whichever replica each is on. Session Present may be 0 (the
// old session ends as its connection closes) but then nothing of it may
// be found later; if 1, both subscriptions are kept.
func TestAttack10_TakeoverOfEndingSessionKeepsNewOne(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id, x, y := unique(t, "c"), unique(t, "x"), unique(t, "y")
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		for round := 1; round <= rounds; round++ {
			a, _ := connectSession5(t, d.servers[0].Addr(), id, true, nil)
			a.Subscribe(1, packets.Subscription{Filter: x, QoS: 1})
			b, ack := connectSession5(t, d.servers[len(d.servers)-1].Addr(), id, false, u32(600))
			a.ExpectClosed(waitTimeout)
			present := ack.SessionPresent
			b.Subscribe(2, packets.Subscription{Filter: y, QoS: 1})
			connectionsEnded(t, d.servers, 2) // a's end ran; pub and b remain
			b.Send(&packets.Disconnect{})
			b.ExpectClosed(waitTimeout)
			pub.PublishQoS1(1, x, "x")
			pub.PublishQoS1(2, y, "y")
			c, ack := connectSession5(t, d.servers[0].Addr(), id, false, u32(600))
			if !ack.SessionPresent {
				t.Fatalf("round %d: the session the takeover asked to keep is gone", round)
			}
			got := c.Drain(time.Second)
			var topics []string
			for _, p := range got {
				topics = append(topics, p.Topic)
			}
			want := 1
			if present {
				want = 2
			}
			if len(topics) != want {
				t.Fatalf("round %d: takeover Session Present %v; got %v queued, want %d", round, present, topics, want)
			}
			c.Send(&packets.Disconnect{Properties: &packets.Properties{SessionExpiryInterval: u32(0)}})
			c.ExpectClosed(waitTimeout)
		}
	})
}

// A session with a 1 s interval taken over by a connection asking 600 s:
// while that one is connected, nothing of the old connection's interval
// may expire the session in Redis.
func TestAttack10_TakeoverDoesNotShortenNewSession(t *testing.T) {
	c := mqtttest.StartCluster(t, mqtttest.ClusterOptions{Replicas: 2, InProcess: true})
	rdb := redis.NewClient(&redis.Options{Addr: c.Redis.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := context.Background()
	id := unique(t, "c")
	for round := 1; round <= rounds; round++ {
		a, _ := connectSession5(t, c.Servers[0].Addr(), id, round == 1, u32(1))
		a.Subscribe(1, packets.Subscription{Filter: id + "/a", QoS: 1})
		b, _ := connectSession5(t, c.Servers[1].Addr(), id, false, u32(600))
		a.ExpectClosed(waitTimeout)
		time.Sleep(2500 * time.Millisecond)
		for _, k := range []string{"mqtt:session:", "mqtt:sub:"} {
			ttl := rdb.PTTL(ctx, k+id).Val()
			t.Logf("round %d: %s%s PTTL %v", round, k, id, ttl)
			if ttl == -2 {
				t.Errorf("round %d: %s gone from Redis while its client is connected", round, k)
			}
		}
		b.Send(&packets.Disconnect{})
		b.ExpectClosed(waitTimeout)
	}
}

// One client in two groups (one named with spaces, non-ASCII and Redis
// glob characters) and with a plain subscription to the same topic: each
// group delivers one copy to its only member, and the plain subscription
// one more [MQTT-3.3.5-1] (section 4.8.2).
func TestAttack10_TwoGroupsAndPlain(t *testing.T) {
	t.Parallel() // counts exactly, bounds nothing by time
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		c, _ := connect5(t, d.sub().Addr(), unique(t, "c"), 30)
		codes := c.Subscribe(1,
			packets.Subscription{Filter: "$share/g1/" + topic, QoS: 1},
			packets.Subscription{Filter: "$share/g 2é*?[/" + topic, QoS: 1},
			packets.Subscription{Filter: topic, QoS: 1})
		for i, code := range codes {
			if code != packets.GrantedQoS1 {
				t.Fatalf("SUBACK slot %d: 0x%02x, want QoS 1", i, code)
			}
		}
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		pub.PublishQoS1(1, topic, "m")
		if got := c.Drain(time.Second); len(got) != 3 {
			t.Fatalf("%d copies, want 3: one per group and one for the plain subscription", len(got))
		}
	})
}

// shareCounter counts what every member of a group reads.
type shareCounter struct {
	mu   sync.Mutex
	seen map[string]int
	// late are the messages a member's socket held, unread, when it left:
	// sent to it, never acknowledged.
	late map[string]int
}

func (s *shareCounter) addLate(p string) {
	s.mu.Lock()
	s.late[p]++
	s.mu.Unlock()
}

func (s *shareCounter) add(p string) {
	s.mu.Lock()
	s.seen[p]++
	s.mu.Unlock()
}

// readAcking reads and acknowledges until stop is closed, then sends
// DISCONNECT (or drops the socket) and returns.
func readAcking(c *mqtttest.Client, count *shareCounter, stop <-chan struct{}, drop bool) {
	for {
		select {
		case <-stop:
			if !drop {
				c.Send(&packets.Disconnect{})
			}
			// Half-close: the server sees the connection end, and what
			// it had already written is still read, unacknowledged.
			_ = c.Conn.(*net.TCPConn).CloseWrite()
			for {
				p, err := c.Read(2 * time.Second)
				if err != nil {
					return
				}
				if p, ok := p.(*packets.Publish); ok {
					count.addLate(string(p.Payload))
				}
			}
		default:
		}
		p, err := c.Read(20 * time.Millisecond)
		if err != nil {
			if mqtttest.IsTimeout(err) {
				continue
			}
			return
		}
		switch p := p.(type) {
		case *packets.Publish:
			count.add(string(p.Payload))
			switch p.QoS {
			case 1:
				c.Send(&packets.Puback{PacketID: p.PacketID})
			case 2:
				c.Send(&packets.Pubrec{PacketID: p.PacketID})
			}
		case *packets.Pubrel:
			c.Send(&packets.Pubcomp{PacketID: p.PacketID})
		}
	}
}

// Members join and leave in a loop (DISCONNECT or a dropped socket, on
// alternating replicas) while 10,000 messages flow to their group at QoS 1
// and at QoS 2; every member acknowledges all it reads before it leaves.
// What a leaving member's socket still held is read after it left,
// unacknowledged: at QoS 1 another member must get it, at QoS 2 no other
// may [MQTT-4.8.2-5]. Every message must be read exactly once by the group.
func TestAttack10_ShareChurnExactCount(t *testing.T) {
	t.Parallel() // counts exactly, bounds nothing by time
	for _, qos := range []byte{1, 2} {
		t.Run(fmt.Sprint("QoS ", qos), func(t *testing.T) { shareChurn(t, qos) })
	}
}

func shareChurn(t *testing.T, qos byte) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		filter := "$share/" + unique(t, "g") + "/" + topic
		count := &shareCounter{seen: map[string]int{}, late: map[string]int{}}
		// The member that stays leaves last, once the churn has ended and
		// it has read what the group still held: a message handed off as a
		// member left waits in Redis for the next member, and with none
		// left the group reads nothing.
		stopChurn, stopStay := make(chan struct{}), make(chan struct{})
		var wg sync.WaitGroup
		member := func(addr, id string, stop <-chan struct{}, drop bool) {
			c := mqtttest.Dial(t, addr)
			c.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: true, ClientID: id, KeepAlive: 30})
			// PUBLISH may come before SUBACK (section 3.8.4): readAcking
			// reads both.
			c.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: filter, QoS: qos}}})
			wg.Add(1)
			go func() { defer wg.Done(); readAcking(c, count, stop, drop) }()
		}
		// The member that stays has its SUBACK before the first message is
		// published: the group exists from message 0 on.
		stay := mqtttest.Dial(t, d.servers[len(d.servers)-1].Addr())
		stay.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: true, ClientID: unique(t, "stay"), KeepAlive: 30})
		if codes := stay.Subscribe(1, packets.Subscription{Filter: filter, QoS: qos}); codes[0] != packets.ReasonCode(qos) {
			t.Fatalf("SUBACK 0x%02x, want QoS %d", codes[0], qos)
		}
		wg.Add(1)
		go func() { defer wg.Done(); readAcking(stay, count, stopStay, false) }()
		churnDone := make(chan struct{})
		go func() {
			defer close(churnDone)
			for i := 0; ; i++ {
				select {
				case <-stopChurn:
					return
				default:
				}
				stop := make(chan struct{})
				member(d.servers[i%len(d.servers)].Addr(), fmt.Sprintf("churn-%s-%d", topic, i), stop, i%3 == 0)
				time.Sleep(time.Duration(30+i%7*20) * time.Millisecond)
				close(stop)
			}
		}()
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		const n = 10000
		start := time.Now()
		for i := 0; i < n; i += 50 {
			for j := i; j < i+50; j++ {
				pub.Publish(uint16(j%65535+1), qos, topic, fmt.Sprint(j), false)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("published %d in %v", n, time.Since(start))
		close(stopChurn)
		<-churnDone
		// Until every message is read, or for 5 s: hand-offs are looked
		// at every second (shareRefresh) even when an announcement was
		// missed.
		read := func() int {
			count.mu.Lock()
			defer count.mu.Unlock()
			k := 0
			for i := range n {
				got := count.seen[fmt.Sprint(i)]
				if qos == 2 {
					got += count.late[fmt.Sprint(i)] // [MQTT-4.8.2-5], below
				}
				if got > 0 {
					k++
				}
			}
			return k
		}
		deadline := time.Now().Add(5 * time.Second)
		for read() < n && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		// Duplicates would come after the last first copy: give them the
		// time a hand-off takes.
		time.Sleep(time.Second)
		close(stopStay)
		wg.Wait()
		count.mu.Lock()
		defer count.mu.Unlock()
		lost, dup := 0, 0
		var firstLost, firstDup []int
		late := 0
		for i := range n {
			k, l := count.seen[fmt.Sprint(i)], count.late[fmt.Sprint(i)]
			late += l
			if qos == 2 && l > 0 {
				// [MQTT-4.8.2-5] sent at QoS 2 to a member that left: it
				// stays with that member, and must reach no other.
				k += l
			}
			switch {
			case k == 0:
				lost++
				if len(firstLost) < 10 {
					firstLost = append(firstLost, i)
				}
			case k > 1:
				dup++
				if len(firstDup) < 10 {
					firstDup = append(firstDup, i)
				}
			}
		}
		t.Logf("lost %d %v, duplicated %d %v, unread by leaving members %d; stats %v", lost, firstLost, dup, firstDup, late, statsOf(d))
		if lost > 0 || dup > 0 {
			t.Errorf("lost %d, duplicated %d of %d", lost, dup, n)
		}
	})
}

// statsOf sums the replicas' shared subscription and drop counters.
func statsOf(d *deployment) map[string]int64 {
	out := map[string]int64{}
	for _, s := range d.servers {
		for k, v := range s.Stats() {
			if v != 0 && (strings.Contains(k, "share") || strings.Contains(k, "drop")) {
				out[k] += v
			}
		}
	}
	return out
}

// Two connections with one client id on two replicas at once, Clean Start
// toggling: exactly one stays connected, and the session it leaves (600 s)
// is there afterwards, with the subscription the survivor made.
func TestAttack10_TakeoverRaceAcrossReplicas(t *testing.T) {
	d := startReplicas(t, 2)
	id := unique(t, "c")
	for i := range 20 {
		cs := []*mqtttest.Client{mqtttest.Dial(t, d.servers[0].Addr()), mqtttest.Dial(t, d.servers[1].Addr())}
		acks := make([]*packets.Connack, 2)
		var wg sync.WaitGroup
		for j, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// The connection that loses the race may be closed before
				// its CONNACK: taken over while it was still attaching.
				c.SetVersion(packets.Version5)
				c.Send(&packets.Connect{ProtocolVersion: packets.Version5, ClientID: id, CleanSession: (i+j)%2 == 0, KeepAlive: 30,
					Properties: &packets.Properties{SessionExpiryInterval: u32(600)}})
				if p, err := c.Read(waitTimeout); err == nil {
					acks[j], _ = p.(*packets.Connack)
				}
			}()
		}
		wg.Wait()
		var alive []*mqtttest.Client
		for _, c := range cs {
			if c.Alive(time.Second) {
				alive = append(alive, c)
			}
		}
		if len(alive) != 1 {
			t.Fatalf("race %d: %d connections alive (CONNACKs %+v, %+v), want 1 [MQTT-3.1.4-2]", i, len(alive), acks[0], acks[1])
		}
		f := fmt.Sprintf("%s/%d", id, i)
		alive[0].Subscribe(1, packets.Subscription{Filter: f, QoS: 1})
		alive[0].Send(&packets.Disconnect{})
		alive[0].ExpectClosed(waitTimeout)
		c, ack := connectSession5(t, d.servers[i%2].Addr(), id, false, u32(600))
		if !ack.SessionPresent {
			t.Fatalf("race %d: the session left by the survivor is gone", i)
		}
		pub, _ := connect5(t, d.servers[(i+1)%2].Addr(), unique(t, "pub"), 30)
		pub.PublishQoS1(1, f, "x")
		if got := c.Drain(500 * time.Millisecond); len(got) != 1 {
			t.Fatalf("race %d: %d messages on the survivor's subscription, want 1", i, len(got))
		}
		c.Send(&packets.Disconnect{})
		c.ExpectClosed(waitTimeout)
	}
}

// Session Expiry 1 s and 0xFFFFFFFF, across replicas, twice over.
func TestAttack10_ExpiryBounds(t *testing.T) {
	c := mqtttest.StartCluster(t, mqtttest.ClusterOptions{Replicas: 2, InProcess: true, Args: []string{"-session-expiry", "1h"}})
	rdb := redis.NewClient(&redis.Options{Addr: c.Redis.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	id := unique(t, "c")
	for round := 1; round <= rounds; round++ {
		a, ack := connectSession5(t, c.Servers[0].Addr(), id, false, u32(0xFFFFFFFF))
		if e := ack.Properties.SessionExpiryInterval; e == nil || *e != 3600 {
			t.Fatalf("round %d: CONNACK interval %v, want 3600", round, e)
		}
		leave(t, a, &packets.Disconnect{Properties: &packets.Properties{SessionExpiryInterval: u32(1)}})
		settled(t, rdb, id)
		if ttl := rdb.PTTL(context.Background(), "mqtt:session:"+id).Val(); ttl > time.Second || ttl <= 0 {
			t.Fatalf("round %d: session TTL %v after DISCONNECT with 1 s", round, ttl)
		}
		time.Sleep(1300 * time.Millisecond)
		b, ack := connectSession5(t, c.Servers[1].Addr(), id, false, u32(0xFFFFFFFF))
		if ack.SessionPresent {
			t.Fatalf("round %d: session present 1.3 s after a 1 s interval", round)
		}
		leave(t, b, &packets.Disconnect{})
		settled(t, rdb, id)
		if ttl := rdb.PTTL(context.Background(), "mqtt:session:"+id).Val(); ttl > time.Hour || ttl < 59*time.Minute {
			t.Fatalf("round %d: session TTL %v, want 1h", round, ttl)
		}
	}
}

// settled waits until the session's hash has a TTL: the replica stores a
// session just after it closes the connection.
func settled(t *testing.T, rdb *redis.Client, id string) {
	t.Helper()
	waitFor(t, time.Second, "the session stored", func() bool {
		return rdb.PTTL(context.Background(), "mqtt:session:"+id).Val() != -1
	})
}

// connectionsEnded waits until servers hold n open connections in all: a
// replica counts a connection as closed only after its end (the session's
// Detach: stored, ended or handed back) has run.
func connectionsEnded(t *testing.T, servers []*testServer, n int64) {
	t.Helper()
	waitFor(t, waitTimeout, fmt.Sprintf("the replicas to hold %d connections", n), func() bool {
		var open int64
		for _, s := range servers {
			open += s.Stats()["connections"]
		}
		return open == n
	})
}

// A DISCONNECT that ends the session (interval 0) followed at once by a
// Clean Start 0 CONNECT on the other replica: no session may be found;
// and one that keeps it (600 s) followed at once: found, every time.
func TestAttack10_ImmediateReconnectAfterDisconnectInterval(t *testing.T) {
	d := startReplicas(t, 2)
	id := unique(t, "c")
	for i := range 30 {
		keep := i%2 == 1
		a, _ := connectSession5(t, d.servers[i%2].Addr(), id, true, u32(600))
		a.Subscribe(1, packets.Subscription{Filter: id, QoS: 1})
		e := uint32(0)
		if keep {
			e = 600
		}
		a.Send(&packets.Disconnect{Properties: &packets.Properties{SessionExpiryInterval: &e}})
		a.ExpectClosed(waitTimeout)
		b, ack := connectSession5(t, d.servers[(i+1)%2].Addr(), id, false, u32(600))
		if ack.SessionPresent != keep {
			t.Fatalf("attempt %d: DISCONNECT interval %d then CONNECT on the other replica: Session Present %v", i, e, ack.SessionPresent)
		}
		b.Send(&packets.Disconnect{})
		b.ExpectClosed(waitTimeout)
	}
}

// Every member of a group leaves at once (clean sessions, network drop)
// holding unacknowledged and queued QoS 1 messages; a member that joins
// within the hand-off list's 30 s gets every one of them.
func TestAttack10_ShareAllMembersLeaveAtOnce(t *testing.T) {
	t.Parallel() // counts exactly, bounds nothing by time
	c := mqtttest.StartCluster(t, mqtttest.ClusterOptions{Replicas: 2, InProcess: true, Args: []string{"-max-inflight", "8"}})
	d := &deployment{name: "redis-2-replicas", servers: c.Servers}
	rdb := redis.NewClient(&redis.Options{Addr: c.Redis.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	topic := unique(t, "t")
	filter := "$share/" + unique(t, "g") + "/" + topic
	pub, _ := connect5(t, d.servers[0].Addr(), unique(t, "pub"), 30)
	for round := 1; round <= rounds; round++ {
		var ms []*mqtttest.Client
		for _, s := range d.servers {
			m := mqtttest.Dial(t, s.Addr())
			m.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: true, ClientID: unique(t, "m"), KeepAlive: 30})
			m.Subscribe(1, packets.Subscription{Filter: filter, QoS: 1})
			ms = append(ms, m)
		}
		waitShareViews(t, d.servers...)
		const n = 100
		base := round * 1000
		publishRange(pub, topic, base, base+n)
		for _, m := range ms {
			readUnacked(t, m, 8)
		}
		for _, m := range ms {
			_ = m.Conn.Close()
		}
		// The hand-off: once both members' ends ran (each hands back what
		// it held before its Detach) and the claims of the last messages
		// settled, every message of the round waits in the group's list in
		// Redis (the previous round's joining member took and acknowledged
		// all of its own). If some never get there, the check below names
		// them.
		connectionsEnded(t, d.servers, 1) // pub remains
		for deadline := time.Now().Add(waitTimeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if rdb.LLen(context.Background(), "mqtt:sharequeue:"+filter).Val() >= n {
				break
			}
		}
		j := mqtttest.Dial(t, d.servers[round%2].Addr())
		j.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: true, ClientID: unique(t, "j"), KeepAlive: 30})
		j.Send(&packets.Subscribe{PacketID: 1, Subscriptions: []packets.Subscription{{Filter: filter, QoS: 1}}})
		seen := map[string]int{}
		for _, p := range j.Drain(3 * time.Second) {
			seen[string(p.Payload)]++
		}
		var lost []int
		for i := base; i < base+n; i++ {
			if seen[fmt.Sprint(i)] == 0 {
				lost = append(lost, i)
			}
		}
		if len(lost) > 0 {
			t.Errorf("round %d: the joining member got %d of %d; lost %v", round, len(seen), n, lost)
		}
		_ = j.Conn.Close()
	}
}

// A 600 s session taken over by a Clean Start 0 connection with interval
// 0, which disconnects at once, on the other replica: the session ends
// with that connection [MQTT-3.1.2-23], and the old connection's end
// (storing its session for 600 s) must not bring it back, 20 times over.
func TestAttack10_TakeoverThenEndDoesNotResurrect(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "c")
		for i := range 20 {
			a, _ := connectSession5(t, d.servers[i%len(d.servers)].Addr(), id, true, u32(600))
			a.Subscribe(1, packets.Subscription{Filter: id, QoS: 1})
			b, ack := connectSession5(t, d.servers[(i+1)%len(d.servers)].Addr(), id, false, nil)
			if !ack.SessionPresent {
				t.Fatalf("attempt %d: takeover of a 600 s session: Session Present 0", i)
			}
			b.Send(&packets.Disconnect{})
			b.ExpectClosed(waitTimeout)
			a.ExpectClosed(waitTimeout)
			c, ack := connectSession5(t, d.servers[i%len(d.servers)].Addr(), id, false, nil)
			if ack.SessionPresent {
				t.Fatalf("attempt %d: the session ended by an interval-0 connection came back", i)
			}
			c.Send(&packets.Disconnect{})
			c.ExpectClosed(waitTimeout)
		}
	})
}

// A DISCONNECT asking 600 s after a CONNECT with interval 0 is a
// protocol error (DISCONNECT 0x82) [MQTT-3.14.2-2]; the session must still
// end with the connection, not be kept for the 600 s.
func TestAttack10_ProtocolErrorIntervalDoesNotKeep(t *testing.T) {
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		id := unique(t, "c")
		for round := 1; round <= rounds; round++ {
			a, _ := connectSession5(t, d.servers[0].Addr(), id, false, nil)
			a.Subscribe(1, packets.Subscription{Filter: id, QoS: 1})
			a.Send(&packets.Disconnect{Properties: &packets.Properties{SessionExpiryInterval: u32(600)}})
			expectDisconnect(t, a, 0x82)
			connectionsEnded(t, d.servers, 0)
			c, ack := connectSession5(t, d.sub().Addr(), id, false, nil)
			if ack.SessionPresent {
				t.Fatalf("round %d: a session with interval 0 kept after a DISCONNECT asking 600 s (protocol error)", round)
			}
			c.Send(&packets.Disconnect{})
			c.ExpectClosed(waitTimeout)
		}
	}, "-max-inflight", "8")
}

// A member UNSUBSCRIBEs from its group while holding unacknowledged and
// queued QoS 1 messages, stays connected and acknowledges all it gets:
// none of the 200 is lost (it gets what it held, the other member the
// rest).
func TestAttack10_ShareUnsubscribeWithUnacked(t *testing.T) {
	t.Parallel() // counts exactly, bounds nothing by time
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		filter := "$share/" + unique(t, "g") + "/" + topic
		got := make(chan shareDelivery, 8192)
		shareMember5(t, d.servers[len(d.servers)-1].Addr(), filter, 1, got)
		pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
		for round := 1; round <= rounds; round++ {
			m, _ := connect5(t, d.servers[0].Addr(), unique(t, "m"), 30)
			m.Subscribe(1, packets.Subscription{Filter: filter, QoS: 1})
			waitShareViews(t, d.servers...)
			base := round * 1000
			const n = 200
			publishRange(pub, topic, base, base+n)
			unacked, ids := readUnacked(t, m, 8)
			m.Send(&packets.Unsubscribe{PacketID: 2, Filters: []string{filter}})
			for _, id := range ids {
				m.Send(&packets.Puback{PacketID: id})
			}
			seen := map[string]int{}
			for _, p := range unacked {
				seen[p]++
			}
			for _, p := range m.Drain(2 * time.Second) {
				seen[string(p.Payload)]++
			}
			ownCount := len(seen)
			deadline := time.After(3 * time.Second)
		collect:
			for {
				select {
				case dl := <-got:
					seen[dl.payload]++
				case <-deadline:
					break collect
				}
			}
			var lost []int
			for i := base; i < base+n; i++ {
				if seen[fmt.Sprint(i)] == 0 {
					lost = append(lost, i)
				}
			}
			if len(lost) > 0 {
				t.Errorf("round %d: %d lost after UNSUBSCRIBE (the member read %d): %v", round, len(lost), ownCount, lost)
			}
			m.Send(&packets.Disconnect{})
		}
	}, "-max-inflight", "8")
}

// A shared subscription whose filter starts with a wildcard does not
// match $SYS topics [MQTT-4.7.2-1].
func TestAttack10_ShareWildcardNoSys(t *testing.T) {
	s := startServer(t, "-sys-interval", "1s")
	c, _ := connect5(t, s.Addr(), unique(t, "c"), 30)
	c.Subscribe(1, packets.Subscription{Filter: "$share/g/#", QoS: 0}, packets.Subscription{Filter: "$share/g2/+/broker/#", QoS: 0})
	for _, p := range c.Drain(2500 * time.Millisecond) {
		t.Errorf("got %s through $share/g/# or $share/g2/+/broker/#", p.Topic)
	}
}

// Redis restarted empty while a group's members and a plain subscriber
// are connected on two replicas, a second after the messages (every claim
// made): the replicas re-publish what they accepted in the last 10 s,
// which the receiving replicas drop as copies; neither the group nor the
// plain subscriber gets them a second time.
func TestAttack10_ShareAfterRedisRestart(t *testing.T) {
	c := mqtttest.StartCluster(t, mqtttest.ClusterOptions{Replicas: 2, InProcess: true})
	topic := unique(t, "t")
	filter := "$share/" + unique(t, "g") + "/" + topic
	got := make(chan shareDelivery, 8192)
	shareMember5(t, c.Servers[0].Addr(), filter, 0, got)
	shareMember5(t, c.Servers[1].Addr(), filter, 1, got)
	plain, _ := connect5(t, c.Servers[1].Addr(), unique(t, "plain"), 30)
	plain.Subscribe(1, packets.Subscription{Filter: topic, QoS: 1})
	for round := 1; round <= rounds; round++ {
		pub, _ := connect5(t, c.Servers[round%2].Addr(), unique(t, "pub"), 30)
		base := round * 1000
		const n = 300
		publishRange(pub, topic, base, base+n)
		collectShared(t, got, sharePayloads(base, base+n), 2)
		if k := len(plain.Drain(time.Second)); k != n {
			t.Fatalf("round %d: plain subscriber got %d, want %d", round, k, n)
		}
		c.Redis.Restart(t)
		again := 0
		deadline := time.After(4 * time.Second)
	collect:
		for {
			select {
			case <-got:
				again++
			case <-deadline:
				break collect
			}
		}
		plainAgain := len(plain.Drain(time.Second))
		t.Logf("round %d: after the restart the group got %d again, the plain subscriber %d", round, again, plainAgain)
		if again > 0 {
			t.Errorf("round %d: the group got %d of %d messages a second time after Redis restarted", round, again, n)
		}
	}
}

// A member with Receive Maximum 1 that never acknowledges shares a group
// with one that does: round robin still gives it every other message,
// which wait in its queue while it is connected (it reads one); when it
// drops, all it held go to the other member: none of 1,000 lost.
func TestAttack10_ShareReceiveMax1NeverAcks(t *testing.T) {
	t.Parallel() // counts exactly, bounds nothing by time
	forEachDeployment(t, func(t *testing.T, d *deployment) {
		topic := unique(t, "t")
		filter := "$share/" + unique(t, "g") + "/" + topic
		got := make(chan shareDelivery, 8192)
		shareMember5(t, d.servers[len(d.servers)-1].Addr(), filter, 1, got)
		for round := 1; round <= rounds; round++ {
			m := mqtttest.Dial(t, d.servers[0].Addr())
			rm := uint16(1)
			m.MustConnect(&packets.Connect{ProtocolVersion: packets.Version5, CleanSession: true, ClientID: unique(t, "slow"), KeepAlive: 30,
				Properties: &packets.Properties{ReceiveMaximum: &rm}})
			m.Subscribe(1, packets.Subscription{Filter: filter, QoS: 1})
			waitShareViews(t, d.servers...)
			pub, _ := connect5(t, d.pub().Addr(), unique(t, "pub"), 30)
			base := round * 10000
			const n = 1000
			publishRange(pub, topic, base, base+n)
			var held []string
			for {
				p, err := m.Read(500 * time.Millisecond)
				if err != nil {
					break
				}
				if p, ok := p.(*packets.Publish); ok {
					held = append(held, string(p.Payload))
				}
			}
			_ = m.Conn.Close()
			seen := map[string]int{}
			for _, h := range held {
				seen[h]++
			}
			deadline := time.After(5 * time.Second)
		collect:
			for {
				select {
				case dl := <-got:
					seen[dl.payload]++
				case <-deadline:
					break collect
				}
			}
			var lost []int
			for i := base; i < base+n; i++ {
				if seen[fmt.Sprint(i)] == 0 {
					lost = append(lost, i)
				}
			}
			if len(lost) > 0 {
				t.Errorf("round %d: the slow member read %d; %d of %d lost: %v", round, len(held), len(lost), n, lost[:min(10, len(lost))])
			}
		}
	})
}

// DISCONNECT raises a 1 s interval to 0xFFFFFFFF ("never"): with
// -session-expiry 0 the session's keys get no TTL, with 1h they get the
// cap; either way the session is there past the first second, on the other
// replica; then a DISCONNECT of 1 s ends it for the next round.
func TestAttack10_NeverExpires(t *testing.T) {
	for _, cap := range []string{"0", "1h"} {
		t.Run(cap, func(t *testing.T) {
			c := mqtttest.StartCluster(t, mqtttest.ClusterOptions{Replicas: 2, InProcess: true, Args: []string{"-session-expiry", cap}})
			rdb := redis.NewClient(&redis.Options{Addr: c.Redis.Addr()})
			t.Cleanup(func() { _ = rdb.Close() })
			id := unique(t, "c")
			for round := 1; round <= rounds; round++ {
				a, ack := connectSession5(t, c.Servers[round%2].Addr(), id, false, u32(1))
				if ack.SessionPresent {
					t.Fatalf("cap %s round %d: Session Present 1: the previous round's session ended with its 1 s interval", cap, round)
				}
				leave(t, a, &packets.Disconnect{Properties: &packets.Properties{SessionExpiryInterval: u32(0xFFFFFFFF)}})
				if cap == "1h" {
					settled(t, rdb, id)
				} else {
					// No TTL to wait for: the client record is marked
					// offline once the session is stored.
					waitFor(t, time.Second, "the session stored", func() bool {
						return rdb.HGet(context.Background(), "mqtt:client:"+id, "state").Val() == "0"
					})
				}
				for _, k := range []string{"mqtt:session:", "mqtt:sub:"} {
					ttl := rdb.PTTL(context.Background(), k+id).Val()
					if (cap == "0" && ttl != -1) || (cap == "1h" && (ttl > time.Hour || ttl < 59*time.Minute)) {
						t.Errorf("cap %s round %d: %s TTL %v", cap, round, k, ttl)
					}
				}
				time.Sleep(1500 * time.Millisecond)
				b, ack := connectSession5(t, c.Servers[(round+1)%2].Addr(), id, false, u32(0xFFFFFFFF))
				if !ack.SessionPresent {
					t.Errorf("cap %s round %d: session gone though DISCONNECT asked never", cap, round)
				}
				b.Send(&packets.Disconnect{Properties: &packets.Properties{SessionExpiryInterval: u32(1)}})
				b.ExpectClosed(waitTimeout)
				time.Sleep(1500 * time.Millisecond)
			}
		})
	}
}
