package main

// TestModel: a randomized, model-based end-to-end test. For a fixed list of
// seeds, six clients perform random steps against the broker (connect with
// a clean or a persistent session and maybe a will, subscribe with exact and
// wildcard filters at QoS 0/1/2, unsubscribe, publish at QoS 0/1/2 with and
// without RETAIN, DISCONNECT, close abruptly, take over their own client id
// on another replica, race two CONNECTs with one client id) while the
// deployment hops them between replicas and, with three replica processes on
// one Redis, SIGKILLs a replica and starts it again. A reference model of the
// MQTT 3.1.1 rules then says what each client MAY and MUST have received.
//
// Deployments: "single" is one in-process node on the in-memory bridge (no
// Redis); "redis3" is three replica processes (the built binary, -node-ttl
// 2s) on one fresh redis-server per seed, each client choosing its replica at
// random on every connect. A crash SIGKILLs one replica process and starts a
// new one in its place under a new node id (as the default -node-id,
// hostname-random, would); then either the test waits until a survivor has
// published the dead replica's wills, or one of its clients reconnects at
// once to another replica while the dead one still looks alive.
//
// Every scenario runs twice in a row on the same deployment (same seed, same
// client ids, topics and replicas). Between the runs every client id connects
// with a clean session and disconnects, and every retained message is
// cleared, so the model starts again from its initial state while Redis keeps
// the first run's streams, client records and indexes and the replicas their
// positions: several bugs only show on a system with history. A message of
// the first run that reaches anyone in the second is a failure.
//
// Clients speak MQTT through Paho's 3.1.1 codec
// (github.com/eclipse/paho.mqtt.golang/packets) over plain TCP, with nothing
// done automatically: no reconnect, no retry, no keep-alive. The Paho client
// itself is not used because it delivers a QoS 2 PUBLISH that the server
// re-sends (DUP=1, same packet id) after a reconnect a second time and keeps
// no client session state across client objects, which would show up here as
// duplicates the server did not cause. These clients keep the QoS 2 receiver
// state of a persistent session (packet ids awaiting PUBREL, [MQTT-4.3.3-2])
// across connections, as a client must [MQTT-4.1.0-1].
//
// What the model allows and requires (k is the step number; a message is
// "acknowledged" when its publisher got PUBACK (QoS 1) or PUBCOMP (QoS 2)):
//
//   - A live copy (RETAIN=0) of message m published at step k may reach client
//     C only if C's session then had a subscription matching m's topic
//     [MQTT-4.5.0-1] [MQTT-3.10.4-2], on the same session (a session discarded
//     by a clean-session connection or ended with a clean-session connection
//     [MQTT-3.1.2-6] receives nothing of it), and C may read the topic (ACL).
//     For QoS 0 publications, whose processing the publisher cannot observe,
//     subscriptions made in the steps that began within 1s after it count as
//     well (the publisher waits for a PINGRESP, so the server has read it).
//   - Its QoS is min(published QoS, highest QoS granted among C's matching
//     subscriptions) [MQTT-3.3.5-1] [MQTT-3.8.4-6], for a subscription state
//     between publication and arrival.
//   - MUST: every acknowledged message with that QoS >= 1 reaches C at least
//     once if one of the matching subscriptions lasted, uninterrupted, from
//     the publication to the end of the run on the same session, whether C
//     was connected or not meanwhile [MQTT-3.1.2-5] [MQTT-4.5.0-1]; at the end
//     every persistent session reconnects and the test waits, bounded, until
//     everything required has arrived (convergence), then for a quiet window.
//     The offline queue bound (-max-queued-messages) is set far above what a
//     run publishes.
//   - Duplicates: a message delivered at QoS 1 may arrive any number of times
//     (at least once).
//     A message delivered at QoS 2 arrives at most once [MQTT-4.3.3-2], and at
//     QoS 0 at most once, except when a replica crash ended a connection of
//     the receiver after its first copy arrived: README ("Limits") says a
//     killed replica's sessions resume from their last checkpoint, so QoS 1
//     and QoS 2 messages may be delivered again.
//   - Order: for one receiver, the first copies of the messages one publisher
//     connection published on one topic at one QoS, delivered at QoS >= 1,
//     arrive in publication order [MQTT-4.6.0-5] [MQTT-4.6.0-6]. Nothing is
//     assumed across topics, QoS levels or publisher connections.
//   - Retained: a copy with RETAIN=1 may arrive only after a SUBSCRIBE (also a
//     re-SUBSCRIBE [MQTT-3.8.4-3]) of a matching filter on the same session,
//     and only of a message that was, between that SUBSCRIBE and the arrival,
//     a possible retained message of its topic [MQTT-3.3.1-6] [MQTT-3.3.1-8];
//     live copies carry RETAIN=0 [MQTT-3.3.1-9]. It MUST arrive when the
//     retained message was certain (set by an acknowledged QoS >= 1 PUBLISH,
//     not touched by a QoS 0 retained PUBLISH since, which the server MAY
//     discard [MQTT-3.3.1-7]) and its QoS for the subscriber is >= 1. An empty
//     retained payload clears [MQTT-3.3.1-10] and is never sent as retained
//     [MQTT-3.3.1-11].
//   - Wills go to $mm/will/<client id>, which no model filter can match
//     [MQTT-4.7.2-1]; a watcher with a persistent QoS 2 subscription collects
//     them from the start of the run (leaving its replica cleanly before that
//     one is killed). A will MUST be published (at least once; exactly once
//     for a QoS 2 will) when its connection ended without DISCONNECT: the
//     client closed the socket, a new connection took the client id over
//     (README: "as Mosquitto does"), or its replica was killed (README and
//     design: a survivor publishes the wills of the dead replica's clients,
//     none lost, none twice) [MQTT-3.1.2-8]. It MUST NOT be published after a
//     DISCONNECT [MQTT-3.14.4-3] or while its connection is open. A will of a
//     connection whose CONNECT got no CONNACK may or may not be published.
//   - A connection the server closes when the model expects no close (no
//     takeover, no crash) is a failure, and so is a PUBLISH, SUBSCRIBE or
//     UNSUBSCRIBE not acknowledged within 5s on an open connection.
//   - CONNACK session present [MQTT-3.2.2-1..3]; SUBACK grants at most the
//     requested QoS, and 0x80 exactly for filters the ACL forbids reading
//     (README "Access control"); a publish the ACL denies is acknowledged and
//     never delivered; a CONNECT with a client id in use closes the older
//     connection [MQTT-3.1.4-2], also when both CONNECTs race on two replicas.
//   - Crashes (three replicas only): a killed replica loses QoS 0 in flight
//     and the clean sessions it held; persistent sessions and acknowledged
//     messages survive (Redis), so every MUST above still holds.
//
// Run it short (CI: seeds 1..3, 150 steps per run on three replicas and 600
// on the single node, both deployments):
//
//	go test -run TestModel -v .
//
// and long, or one seed of a failure report:
//
//	go test -run TestModel -timeout 2h -model.seeds=50 -model.steps=2000 .
//	go test -run 'TestModel/redis3/seed=7$' -model.seed=7 -model.steps=150 .
//
// The same settings can come from MODEL_SEEDS, MODEL_SEED, MODEL_STEPS and
// MODEL_DEPLOY (single, redis3 or both, comma separated). MODEL_TRACE_DIR=dir
// writes every run's full step trace there.

import (
	"bufio"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ppk "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/bridgemq/server/internal/mqtttest"
)

var (
	modelSeedsFlag  = flag.Int("model.seeds", modelEnvInt("MODEL_SEEDS", 3), "TestModel: run seeds 1..N")
	modelSeedFlag   = flag.Int("model.seed", modelEnvInt("MODEL_SEED", 0), "TestModel: run only this seed")
	modelStepsFlag  = flag.Int("model.steps", modelEnvInt("MODEL_STEPS", 150), "TestModel: random steps per run on three replicas, 4x as many on the single node (each seed runs twice per deployment)")
	modelDeployFlag = flag.String("model.deploy", modelEnvStr("MODEL_DEPLOY", "single,redis3"), "TestModel: deployments, comma separated: single, redis3")
)

func modelEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

func modelEnvStr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

const (
	modelNumClients  = 6
	singleStepFactor = 4
	// modelConnectTimeout exceeds the bridge's takeover timeout (5s): a
	// CONNECT may wait that long for a dead replica to answer.
	modelConnectTimeout = 12 * time.Second
	modelAckTimeout     = 5 * time.Second
	modelRaceWait       = 3 * time.Second
	modelSettleTimeout  = 10 * time.Second
	modelQuiet          = 750 * time.Millisecond
	modelWillPrefix     = "$mm/will/"
	modelWatchTopic     = "$mm/will/#"
	modelMaxQueued      = "100000"
)

// The ACL: even clients log in as "restricted", who may publish to s2/y/#
// only to be denied, and read nothing there; odd clients as "full".
const modelACL = `user restricted
topic deny s2/y/#
topic readwrite #
topic readwrite $mm/#

user full
topic readwrite #
topic readwrite $mm/#
`

// modelTopics are the topic names of the model: first levels s0, s1 and s2
// fall in different stream shards.
var modelTopics = func() []string {
	var out []string
	for _, a := range []string{"s0", "s1", "s2"} {
		for _, b := range []string{"x", "y"} {
			for _, c := range []string{"1", "2"} {
				out = append(out, a+"/"+b+"/"+c)
			}
		}
	}
	return out
}()

var modelWildcards = []string{"s0/#", "s1/+/1", "+/x/2", "+/y/#", "#", "s2/+/+", "s2/y/#", "+/+/2", "s1/x/+", "s0/+/#"}

// modelMatch is the test's own topic matcher [MQTT-4.7.1-2] [MQTT-4.7.1-3]
// [MQTT-4.7.2-1], independent of the server's.
func modelMatch(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	f, tp := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, l := range f {
		if l == "#" {
			return true
		}
		if i >= len(tp) || (l != "+" && l != tp[i]) {
			return false
		}
	}
	return len(f) == len(tp)
}

// modelCluster is a deployment the model runs against.
type modelCluster interface {
	size() int
	addr(i int) string
	// crash kills replica i with SIGKILL and starts a new process in its
	// place; false when the deployment cannot crash.
	crash(t *testing.T, i int) bool
}

type modelSingle struct{ ts *testServer }

func (m *modelSingle) size() int                  { return 1 }
func (m *modelSingle) addr(int) string            { return m.ts.Addr() }
func (m *modelSingle) crash(*testing.T, int) bool { return false }

type modelProcs struct {
	redisURL string
	args     []string
	reps     []*mqtttest.Process
	gen      []int
}

func (m *modelProcs) size() int         { return len(m.reps) }
func (m *modelProcs) addr(i int) string { return m.reps[i].Addr() }

// crash restarts the replica under a new node id, as the default
// -node-id (hostname-random) does.
func (m *modelProcs) crash(t *testing.T, i int) bool {
	m.reps[i].Kill(t)
	m.gen[i]++
	m.reps[i] = mqtttest.StartProcess(t, m.redisURL, fmt.Sprintf("m%d-g%d", i, m.gen[i]), m.args...)
	return true
}

// TestModel runs the model for every seed and deployment; see the comment
// at the top of this file.
func TestModel(t *testing.T) {
	seeds := []int{*modelSeedFlag}
	if *modelSeedFlag == 0 {
		seeds = nil
		for s := 1; s <= *modelSeedsFlag; s++ {
			seeds = append(seeds, s)
		}
	}
	steps := *modelStepsFlag
	t.Logf("model seeds %v, %d steps per run (%d on the single node), two runs per seed and deployment, deployments %s",
		seeds, steps, singleStepFactor*steps, *modelDeployFlag)
	aclPath := filepath.Join(t.TempDir(), "acl")
	if err := os.WriteFile(aclPath, []byte(modelACL), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"-acl-file", aclPath, "-max-queued-messages", modelMaxQueued}
	for _, dep := range strings.Split(*modelDeployFlag, ",") {
		dep = strings.TrimSpace(dep)
		t.Run(dep, func(t *testing.T) {
			for _, seed := range seeds {
				t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
					var cl modelCluster
					switch dep {
					case "single":
						cl = &modelSingle{ts: startServer(t, args...)}
					case "redis3":
						c := mqtttest.StartCluster(t, mqtttest.ClusterOptions{Nodes: []string{"m0", "m1", "m2"}, Args: args})
						cl = &modelProcs{redisURL: c.Redis.URL(), args: args, reps: c.Replicas, gen: make([]int, 3)}
					default:
						t.Fatalf("unknown deployment %q (single, redis3)", dep)
					}
					runSteps := steps
					if dep == "single" {
						// A step costs ~20x less on one in-process node.
						runSteps = singleStepFactor * steps
					}
					for run := 1; run <= 2; run++ {
						start := time.Now()
						r := newModelRun(t, dep, cl, seed, run, runSteps)
						r.flagSteps = steps
						r.execute()
						r.report(time.Since(start))
						if run == 1 {
							modelReset(t, cl)
						}
					}
				})
			}
		})
	}
}

// modelPub is one PUBLISH a model client sent.
type modelPub struct {
	key    string
	step   int
	client *modelClient
	conn   int
	topic  string
	qos    byte
	retain bool
	empty  bool
	acked  bool
	denied bool
	doneAt time.Time // when the publish step ended
}

// modelDelivery is one PUBLISH a client received (QoS 2 re-sends of a packet
// id awaiting PUBREL are not deliveries).
type modelDelivery struct {
	step    int
	conn    int
	session int
	key     string
	topic   string
	qos     byte
	dup     bool
	retain  bool
	id      uint16 // packet identifier (QoS >= 1)
	seq     int    // order of arrival at this client, all connections
}

// subVersion is a client's subscriptions from a step on.
type subVersion struct {
	step    int
	session int
	subs    map[string]byte
}

// subEvent is a granted SUBSCRIBE of one filter.
type subEvent struct {
	step    int
	session int
	filter  string
	qos     byte
}

type modelClient struct {
	idx        int // -1: the will watcher
	id, user   string
	restricted bool
	persistent bool // prefers clean session 0

	// Model state, owned by the test goroutine.
	conn          *modelConn
	sessionExists bool
	sessionClean  bool
	session       int // number of the current session
	subs          map[string]byte
	since         map[string]int // filter -> step its uninterrupted subscription began
	versions      []subVersion
	events        []subEvent
	crashSteps    []int
	conns         int

	// Filled by connection readers.
	mu       sync.Mutex
	got      []modelDelivery
	awaitRel map[uint16]string // client session state: inbound QoS 2 awaiting PUBREL
	arrivals int               // PUBLISH packets received, all connections
}

func (c *modelClient) canRead(topic string) bool {
	return !c.restricted || !modelMatch("s2/y/#", topic)
}

// modelWill is the will of one connection.
type modelWill struct {
	key     string
	client  *modelClient
	conn    int
	qos     byte
	state   string // open, owed, free (DISCONNECT), maybe (fate unknown)
	endStep int
	why     string
}

// retState is the set of possible retained messages of a topic from a step
// on; "" stands for none.
type retState struct {
	step  int
	cands map[string]bool
}

type modelTrace struct {
	step    int
	clients []int
	text    string
}

type modelFailure struct {
	step    int
	clients []int
	text    string
}

type modelRun struct {
	t     *testing.T
	dep   string
	cl    modelCluster
	seed  int
	run   int
	steps int
	// flagSteps is -model.steps, for the command that reproduces a failure.
	flagSteps int
	rng       *rand.Rand
	step      atomic.Int64

	clients   []*modelClient
	watcher   *modelClient
	pubs      map[string]*modelPub
	pubList   []*modelPub
	empties   map[string][]*modelPub // empty-payload publishes by topic
	wills     map[string]*modelWill
	retained  map[string][]retState
	trace     []modelTrace
	failures  []modelFailure
	crashes   int
	lastCrash int
	counts    map[string]int
	stepStart []time.Time // wall clock at the start of each step
}

func newModelRun(t *testing.T, dep string, cl modelCluster, seed, run, steps int) *modelRun {
	r := &modelRun{
		t: t, dep: dep, cl: cl, seed: seed, run: run, steps: steps,
		rng:       rand.New(rand.NewPCG(uint64(seed), 0x6d6f64656c)),
		pubs:      map[string]*modelPub{},
		empties:   map[string][]*modelPub{},
		wills:     map[string]*modelWill{},
		retained:  map[string][]retState{},
		counts:    map[string]int{},
		lastCrash: -1000,
	}
	for i := range modelNumClients {
		user := "full"
		if i%2 == 0 {
			user = "restricted"
		}
		r.clients = append(r.clients, &modelClient{
			idx: i, id: fmt.Sprintf("mc%d", i), user: user, restricted: user == "restricted",
			persistent: i < modelNumClients/2, subs: map[string]byte{}, since: map[string]int{}, awaitRel: map[uint16]string{},
		})
	}
	r.watcher = &modelClient{idx: -1, id: "mwatch", user: "full", subs: map[string]byte{}, since: map[string]int{}, awaitRel: map[uint16]string{}}
	for _, tp := range modelTopics {
		r.retained[tp] = []retState{{step: 0, cands: map[string]bool{"": true}}}
	}
	return r
}

func (r *modelRun) cur() int { return int(r.step.Load()) }

func (r *modelRun) markStep(k int) {
	for len(r.stepStart) <= k {
		r.stepStart = append(r.stepStart, time.Time{})
	}
	r.stepStart[k] = time.Now()
}

// qos0Window is how long after its PINGRESP a QoS 0 publication may still be
// in the server's pipeline: the publisher cannot observe when the server
// takes it over, so subscriptions made meanwhile may receive it.
const qos0Window = time.Second

// mayEnd returns the last step whose subscriptions may receive p: the step
// of an acknowledged publication, the steps that began within qos0Window of
// a QoS 0 one, every step for one never acknowledged.
func (r *modelRun) mayEnd(p *modelPub) int {
	switch {
	case p.qos > 0 && p.acked:
		return p.step
	case p.qos > 0:
		return math.MaxInt
	}
	k := p.step
	for k+1 < len(r.stepStart) && !r.stepStart[k+1].After(p.doneAt.Add(qos0Window)) {
		k++
	}
	return k
}

func (r *modelRun) tracef(clients []int, format string, args ...any) {
	r.trace = append(r.trace, modelTrace{step: r.cur(), clients: clients, text: fmt.Sprintf(format, args...)})
}

func (r *modelRun) fail(step int, clients []int, format string, args ...any) {
	r.failures = append(r.failures, modelFailure{step: step, clients: clients, text: fmt.Sprintf(format, args...)})
}

// ---- connections ----

type modelConn struct {
	r       *modelRun
	c       *modelClient
	idx     int
	replica int
	session int
	nc      net.Conn
	br      *bufio.Reader
	wmu     sync.Mutex
	mu      sync.Mutex
	waiters map[uint16]chan ppk.ControlPacket
	pings   chan struct{}
	nextID  uint16
	done    chan struct{}
	err     error
	ours    atomic.Bool // closed by the test, or a close the step expects
	will    *modelWill
	connack *ppk.ConnackPacket
}

// dial opens connection number idx of c and completes CONNECT/CONNACK.
//
// The new connection handles no packet after CONNACK until after is closed
// (nil: at once) or the connection ends. A connection that takes another
// over passes the older one's done: the server wrote the older one's last
// packets before this CONNACK, but the client reads its two sockets
// concurrently, and acting on a re-sent QoS 2 PUBLISH here before a copy
// still buffered on the older socket would make the client, not the
// server, deliver it twice.
func (r *modelRun) dial(c *modelClient, replica int, clean bool, will *modelWill, idx, session int, after <-chan struct{}) (*modelConn, error) {
	nc, err := net.DialTimeout("tcp", r.cl.addr(replica), modelAckTimeout)
	if err != nil {
		return nil, fmt.Errorf("dial replica %d: %w", replica, err)
	}
	cp := ppk.NewControlPacket(ppk.Connect).(*ppk.ConnectPacket)
	cp.ProtocolName, cp.ProtocolVersion = "MQTT", 4
	cp.CleanSession = clean
	cp.ClientIdentifier = c.id
	cp.UsernameFlag, cp.Username = true, c.user
	if will != nil {
		cp.WillFlag, cp.WillQos, cp.WillTopic, cp.WillMessage = true, will.qos, modelWillPrefix+c.id, []byte(will.key)
	}
	_ = nc.SetDeadline(time.Now().Add(modelConnectTimeout))
	if err := cp.Write(nc); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("write CONNECT: %w", err)
	}
	br := bufio.NewReader(nc)
	pk, err := ppk.ReadPacket(br)
	if err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("read CONNACK: %w", err)
	}
	ack, ok := pk.(*ppk.ConnackPacket)
	if !ok {
		_ = nc.Close()
		return nil, fmt.Errorf("got %T before CONNACK", pk)
	}
	if ack.ReturnCode != 0 {
		_ = nc.Close()
		return nil, fmt.Errorf("CONNACK return code 0x%02x", ack.ReturnCode)
	}
	_ = nc.SetDeadline(time.Time{})
	if !ack.SessionPresent {
		// [MQTT-3.2.2-4]: no session on the server, none on the client.
		c.mu.Lock()
		clear(c.awaitRel)
		c.mu.Unlock()
	}
	mc := &modelConn{r: r, c: c, idx: idx, replica: replica, session: session, nc: nc, br: br, waiters: map[uint16]chan ppk.ControlPacket{},
		pings: make(chan struct{}, 1), done: make(chan struct{}), will: will, connack: ack}
	go mc.readLoop(after)
	return mc, nil
}

// readLoop reads the connection's packets and handles them in order, the
// first once after is closed or the connection has ended (see dial).
func (mc *modelConn) readLoop(after <-chan struct{}) {
	defer close(mc.done)
	in := make(chan ppk.ControlPacket, 4096)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		defer close(in)
		for {
			pk, err := ppk.ReadPacket(mc.br)
			if err != nil {
				mc.err = err // read by others after done, closed after in is drained
				return
			}
			in <- pk
		}
	}()
	if after != nil {
		select {
		case <-after:
		case <-ended:
		}
	}
	for pk := range in {
		mc.handle(pk)
	}
}

// handle acts on one packet from the server.
func (mc *modelConn) handle(pk ppk.ControlPacket) {
	switch p := pk.(type) {
	case *ppk.PublishPacket:
		mc.onPublish(p)
	case *ppk.PubrelPacket:
		mc.c.mu.Lock()
		delete(mc.c.awaitRel, p.MessageID)
		mc.c.mu.Unlock()
		comp := ppk.NewControlPacket(ppk.Pubcomp).(*ppk.PubcompPacket)
		comp.MessageID = p.MessageID
		mc.send(comp)
	case *ppk.PingrespPacket:
		select {
		case mc.pings <- struct{}{}:
		default:
		}
	default:
		mc.mu.Lock()
		ch := mc.waiters[pk.Details().MessageID]
		mc.mu.Unlock()
		if ch != nil {
			select {
			case ch <- pk:
			default:
			}
		}
	}
}

func (mc *modelConn) onPublish(p *ppk.PublishPacket) {
	c := mc.c
	key := string(p.Payload)
	d := modelDelivery{step: mc.r.cur(), conn: mc.idx, session: mc.session, key: key, topic: p.TopicName, qos: p.Qos, dup: p.Dup, retain: p.Retain, id: p.MessageID}
	c.mu.Lock()
	c.arrivals++
	d.seq = c.arrivals
	c.mu.Unlock()
	switch p.Qos {
	case 2:
		c.mu.Lock()
		if prev, ok := c.awaitRel[p.MessageID]; ok && prev == key {
			// A re-sent PUBLISH of a message already received: acknowledge,
			// do not deliver again [MQTT-4.3.3-2].
			c.mu.Unlock()
		} else {
			c.awaitRel[p.MessageID] = key
			c.got = append(c.got, d)
			c.mu.Unlock()
		}
		rec := ppk.NewControlPacket(ppk.Pubrec).(*ppk.PubrecPacket)
		rec.MessageID = p.MessageID
		mc.send(rec)
	case 1:
		c.mu.Lock()
		c.got = append(c.got, d)
		c.mu.Unlock()
		ack := ppk.NewControlPacket(ppk.Puback).(*ppk.PubackPacket)
		ack.MessageID = p.MessageID
		mc.send(ack)
	default:
		c.mu.Lock()
		c.got = append(c.got, d)
		c.mu.Unlock()
	}
}

func (mc *modelConn) send(pk ppk.ControlPacket) error {
	mc.wmu.Lock()
	defer mc.wmu.Unlock()
	_ = mc.nc.SetWriteDeadline(time.Now().Add(modelAckTimeout))
	return pk.Write(mc.nc)
}

func (mc *modelConn) newID() uint16 {
	mc.nextID++
	if mc.nextID == 0 {
		mc.nextID = 1
	}
	return mc.nextID
}

// exchange sends pk and waits for n packets carrying packet id id; between
// them, then (if not nil) is called with each answer and may send more.
func (mc *modelConn) exchange(pk ppk.ControlPacket, id uint16, n int, then func(ppk.ControlPacket) error) ([]ppk.ControlPacket, error) {
	ch := make(chan ppk.ControlPacket, 4)
	mc.mu.Lock()
	mc.waiters[id] = ch
	mc.mu.Unlock()
	defer func() {
		mc.mu.Lock()
		delete(mc.waiters, id)
		mc.mu.Unlock()
	}()
	if err := mc.send(pk); err != nil {
		return nil, fmt.Errorf("write %T: %w", pk, err)
	}
	var got []ppk.ControlPacket
	deadline := time.After(modelAckTimeout)
	for len(got) < n {
		select {
		case a := <-ch:
			got = append(got, a)
			if then != nil {
				if err := then(a); err != nil {
					return got, err
				}
			}
		case <-mc.done:
			return got, fmt.Errorf("connection closed while waiting for the answer to %T: %v", pk, mc.err)
		case <-deadline:
			return got, fmt.Errorf("no answer to %T within %s", pk, modelAckTimeout)
		}
	}
	return got, nil
}

func (mc *modelConn) ping() error {
	if err := mc.send(ppk.NewControlPacket(ppk.Pingreq)); err != nil {
		return err
	}
	select {
	case <-mc.pings:
		return nil
	case <-mc.done:
		return fmt.Errorf("connection closed before PINGRESP: %v", mc.err)
	case <-time.After(modelAckTimeout):
		return fmt.Errorf("no PINGRESP within %s", modelAckTimeout)
	}
}

// disconnect sends DISCONNECT, gives the server a moment to close, then
// closes.
func (mc *modelConn) disconnect() {
	mc.ours.Store(true)
	_ = mc.send(ppk.NewControlPacket(ppk.Disconnect))
	select {
	case <-mc.done:
	case <-time.After(time.Second):
	}
	_ = mc.nc.Close()
	<-mc.done
}

func (mc *modelConn) abort() {
	mc.ours.Store(true)
	if tc, ok := mc.nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = mc.nc.Close()
	<-mc.done
}

// ---- model state changes ----

func (r *modelRun) pushVersion(c *modelClient) {
	subs := make(map[string]byte, len(c.subs))
	for f, q := range c.subs {
		subs[f] = q
	}
	c.versions = append(c.versions, subVersion{step: r.cur(), session: c.session, subs: subs})
}

func (r *modelRun) discardSession(c *modelClient) {
	c.sessionExists = false
	c.subs = map[string]byte{}
	c.since = map[string]int{}
	r.pushVersion(c)
}

func (r *modelRun) newSession(c *modelClient, clean bool) {
	c.session++
	c.sessionExists, c.sessionClean = true, clean
	c.subs = map[string]byte{}
	c.since = map[string]int{}
	r.pushVersion(c)
}

func (r *modelRun) newWill(c *modelClient, idx int, qos byte) *modelWill {
	w := &modelWill{key: fmt.Sprintf("r%d.w.%s.k%d", r.run, c.id, idx), client: c, conn: idx, qos: qos, state: "open"}
	r.wills[w.key] = w
	return w
}

func (r *modelRun) endWill(w *modelWill, state, why string) {
	if w == nil {
		return
	}
	w.state, w.endStep, w.why = state, r.cur(), why
}

// connEnded records that c's connection has ended; willState says what its
// will must do.
func (r *modelRun) connEnded(c *modelClient, willState, why string) {
	mc := c.conn
	c.conn = nil
	r.endWill(mc.will, willState, why)
	if c.sessionClean {
		r.discardSession(c)
	}
}

// checkLosses notices connections the server closed without the test
// asking: not allowed for a connection the model does not expect to end.
func (r *modelRun) checkLosses() {
	for _, c := range append(slices.Clone(r.clients), r.watcher) {
		mc := c.conn
		if mc == nil || mc.ours.Load() {
			continue
		}
		select {
		case <-mc.done:
			r.fail(r.cur(), []int{c.idx}, "%s: connection %d (replica %d) closed by the server without a reason the model knows (no takeover, no crash): %v",
				c.id, mc.idx, mc.replica, mc.err)
			r.tracef([]int{c.idx}, "%s connection %d lost: %v", c.id, mc.idx, mc.err)
			if c == r.watcher {
				c.conn = nil
				continue
			}
			r.connEnded(c, "maybe", "lost")
		default:
		}
	}
}

// ---- steps ----

func (r *modelRun) execute() {
	if err := r.startWatcher(0); err != nil {
		r.t.Fatalf("model %s seed=%d run=%d: will watcher: %v", r.dep, r.seed, r.run, err)
	}
	maxCrashes := max(1, r.steps/150)
	for k := 1; k <= r.steps; k++ {
		r.step.Store(int64(k))
		r.markStep(k)
		r.checkLosses()
		if r.cl.size() > 1 && r.crashes < maxCrashes && k-r.lastCrash >= 30 && r.rng.IntN(100) < 2 {
			r.doCrash()
			continue
		}
		t0 := time.Now()
		r.oneStep()
		if d := time.Since(t0); d > 300*time.Millisecond && len(r.trace) > 0 {
			r.trace[len(r.trace)-1].text += fmt.Sprintf(" [took %s]", d.Round(time.Millisecond))
			r.counts["slow_steps"]++
		}
	}
	r.settle()
}

func (r *modelRun) oneStep() {
	c := r.clients[r.rng.IntN(len(r.clients))]
	if c.conn == nil {
		if r.rng.IntN(100) < 8 {
			r.doRace(c)
		} else {
			r.doConnect(c)
		}
		return
	}
	switch roll := r.rng.IntN(100); {
	case roll < 48:
		r.doPublish(c)
	case roll < 66:
		r.doSubscribe(c)
	case roll < 74:
		r.doUnsubscribe(c)
	case roll < 84:
		r.doDisconnect(c)
	case roll < 92:
		r.doAbort(c)
	default:
		r.doTakeover(c)
	}
}

func (r *modelRun) startWatcher(replica int) error {
	w := r.watcher
	mc, err := r.dial(w, replica, false, nil, w.conns+1, 0, nil)
	if err != nil {
		return err
	}
	w.conns++
	w.conn = mc
	if w.sessionExists {
		return nil
	}
	w.sessionExists = true
	sub := ppk.NewControlPacket(ppk.Subscribe).(*ppk.SubscribePacket)
	sub.MessageID = mc.newID()
	sub.Topics, sub.Qoss = []string{modelWatchTopic}, []byte{2}
	got, err := mc.exchange(sub, sub.MessageID, 1, nil)
	if err != nil {
		return err
	}
	if ack, ok := got[0].(*ppk.SubackPacket); !ok || len(ack.ReturnCodes) != 1 || ack.ReturnCodes[0] != 2 {
		return fmt.Errorf("watcher SUBACK %+v, want [2]", got[0])
	}
	return nil
}

func (r *modelRun) cleanChoice(c *modelClient) bool {
	if c.persistent {
		return r.rng.IntN(100) < 10
	}
	return r.rng.IntN(100) < 90
}

func (r *modelRun) willChoice() (bool, byte) {
	with := r.rng.IntN(100) < 40
	qos := byte(2)
	if r.rng.IntN(100) < 30 {
		qos = 1
	}
	return with, qos
}

// doConnect connects a disconnected client.
func (r *modelRun) doConnect(c *modelClient) {
	replica := r.rng.IntN(r.cl.size())
	clean := r.cleanChoice(c)
	withWill, wq := r.willChoice()
	r.connect(c, replica, clean, withWill, wq, "connect", nil)
}

func (r *modelRun) connect(c *modelClient, replica int, clean, withWill bool, wq byte, what string, after <-chan struct{}) {
	c.conns++
	idx := c.conns
	var will *modelWill
	if withWill {
		will = r.newWill(c, idx, wq)
	}
	if clean {
		c.mu.Lock()
		clear(c.awaitRel)
		c.mu.Unlock()
	}
	existed := c.sessionExists && !c.sessionClean
	r.tracef([]int{c.idx}, "%s %s conn %d on replica %d clean=%v will=%v", what, c.id, idx, replica, clean, willDesc(will))
	if clean {
		r.newSession(c, true)
	} else if !existed {
		r.newSession(c, false)
	}
	mc, err := r.dial(c, replica, clean, will, idx, c.session, after)
	if err != nil {
		r.fail(r.cur(), []int{c.idx}, "%s: CONNECT (conn %d, replica %d, clean=%v) failed: %v", c.id, idx, replica, clean, err)
		r.endWill(will, "maybe", "connect failed")
		if clean {
			r.discardSession(c)
		}
		return
	}
	c.conn = mc
	r.checkSessionPresent(c, mc, clean, existed)
}

func (r *modelRun) checkSessionPresent(c *modelClient, mc *modelConn, clean, existed bool) {
	sp := mc.connack.SessionPresent
	switch {
	case clean && sp:
		r.fail(r.cur(), []int{c.idx}, "%s conn %d: CONNACK session present=1 for a clean session [MQTT-3.2.2-1]", c.id, mc.idx)
	case !clean && sp != existed:
		r.fail(r.cur(), []int{c.idx}, "%s conn %d: CONNACK session present=%v, the model says a session existed=%v [MQTT-3.2.2-2] [MQTT-3.2.2-3]", c.id, mc.idx, sp, existed)
	}
}

func willDesc(w *modelWill) string {
	if w == nil {
		return "none"
	}
	return fmt.Sprintf("qos%d", w.qos)
}

func (r *modelRun) doDisconnect(c *modelClient) {
	r.tracef([]int{c.idx}, "disconnect %s conn %d (DISCONNECT)", c.id, c.conn.idx)
	c.conn.disconnect()
	r.connEnded(c, "free", "DISCONNECT")
}

func (r *modelRun) doAbort(c *modelClient) {
	r.tracef([]int{c.idx}, "abort %s conn %d (close without DISCONNECT)", c.id, c.conn.idx)
	c.conn.abort()
	r.connEnded(c, "owed", "closed without DISCONNECT")
}

// doTakeover connects c again, on a random replica, while its connection is
// open: the old one must be closed [MQTT-3.1.4-2] and its will published
// (README, as Mosquitto does).
func (r *modelRun) doTakeover(c *modelClient) {
	old := c.conn
	old.ours.Store(true)
	replica := r.rng.IntN(r.cl.size())
	clean := r.cleanChoice(c)
	withWill, wq := r.willChoice()
	r.counts["takeovers"]++
	// The old connection's session ends with it if it was a clean one.
	c.conn = nil
	r.endWill(old.will, "owed", "taken over")
	if c.sessionClean {
		r.discardSession(c)
	}
	r.connect(c, replica, clean, withWill, wq, fmt.Sprintf("takeover of conn %d by", old.idx), old.done)
	select {
	case <-old.done:
	case <-time.After(modelAckTimeout):
		r.fail(r.cur(), []int{c.idx}, "%s: conn %d still open %s after conn %d with the same client id was accepted [MQTT-3.1.4-2]",
			c.id, old.idx, modelAckTimeout, old.idx+1)
		r.endWill(old.will, "maybe", "not taken over")
		old.abort()
	}
}

// doRace sends two CONNECTs with c's client id at once to two replicas.
// Exactly one connection may remain [MQTT-3.1.4-2]; a connection that was
// accepted and then closed by the server was taken over and owes its will.
// The survivor then disconnects, so the model's state does not depend on
// which one won.
func (r *modelRun) doRace(c *modelClient) {
	n := r.cl.size()
	ra := r.rng.IntN(n)
	rb := (ra + 1 + r.rng.IntN(max(1, n-1))) % n
	if n == 1 {
		rb = 0
	}
	clean := r.cleanChoice(c)
	withWill, wq := r.willChoice()
	r.counts["races"]++
	existed := c.sessionExists && !c.sessionClean
	idx := []int{c.conns + 1, c.conns + 2}
	c.conns += 2
	wills := []*modelWill{nil, nil}
	if withWill {
		wills[0], wills[1] = r.newWill(c, idx[0], wq), r.newWill(c, idx[1], wq)
	}
	if clean {
		c.mu.Lock()
		clear(c.awaitRel)
		c.mu.Unlock()
		r.newSession(c, true)
	} else if !existed {
		r.newSession(c, false)
	}
	r.tracef([]int{c.idx}, "race %s conns %d and %d on replicas %d and %d clean=%v will=%v", c.id, idx[0], idx[1], ra, rb, clean, willDesc(wills[0]))
	conns := make([]*modelConn, 2)
	errs := make([]error, 2)
	// Neither handles packets until the loser has ended and handled its
	// own (see dial): which one loses is known only then.
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i, rep := range []int{ra, rb} {
		wg.Go(func() {
			conns[i], errs[i] = r.dial(c, rep, clean, wills[i], idx[i], c.session, release)
			if conns[i] != nil {
				conns[i].ours.Store(true)
			}
		})
	}
	wg.Wait()
	if errs[0] != nil && errs[1] != nil {
		r.fail(r.cur(), []int{c.idx}, "%s: both racing CONNECTs failed: %v; %v", c.id, errs[0], errs[1])
	}
	for i, mc := range conns {
		if mc == nil {
			r.endWill(wills[i], "maybe", "connect failed in race")
			continue
		}
		sp := mc.connack.SessionPresent
		if clean && sp {
			r.fail(r.cur(), []int{c.idx}, "%s conn %d: CONNACK session present=1 for a clean session [MQTT-3.2.2-1]", c.id, mc.idx)
		}
		if !clean && existed && !sp {
			r.fail(r.cur(), []int{c.idx}, "%s conn %d: CONNACK session present=0 but the session existed [MQTT-3.2.2-2]", c.id, mc.idx)
		}
	}
	// Wait until at most one is open.
	// The server closes the older connection before it sends the newer
	// one's CONNACK (README "Takeover"); both CONNACKs are in by now.
	deadline := time.Now().Add(modelRaceWait)
	open := func() []int {
		var o []int
		for i, mc := range conns {
			if mc == nil {
				continue
			}
			select {
			case <-mc.done:
			default:
				o = append(o, i)
			}
		}
		return o
	}
	for len(open()) > 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	close(release)
	still := open()
	if len(still) > 1 {
		r.fail(r.cur(), []int{c.idx}, "%s: two CONNECTs racing on replicas %d and %d both stay connected %s after both CONNACKs (conns %d and %d) [MQTT-3.1.4-2]",
			c.id, ra, rb, modelRaceWait, idx[0], idx[1])
	}
	for i, mc := range conns {
		if mc == nil {
			continue
		}
		if slices.Contains(still, i) {
			mc.disconnect()
			r.endWill(wills[i], "free", "DISCONNECT after race")
		} else {
			r.endWill(wills[i], "owed", "taken over in race")
		}
	}
	r.tracef([]int{c.idx}, "race %s: %d of 2 left open, disconnected", c.id, len(still))
	if clean {
		r.discardSession(c)
	}
}

// doCrash kills a replica with SIGKILL and starts a new process in its
// place. Its clients' connections end without DISCONNECT: their wills are
// owed; persistent sessions survive, clean ones end.
func (r *modelRun) doCrash() {
	i := r.rng.IntN(r.cl.size())
	r.crashes++
	r.lastCrash = r.cur()
	if w := r.watcher.conn; w != nil && w.replica == i {
		// The watcher must see every will exactly once: it leaves cleanly.
		w.disconnect()
		r.watcher.conn = nil
		if err := r.startWatcher((i + 1) % r.cl.size()); err != nil {
			r.fail(r.cur(), nil, "will watcher: reconnect before crash: %v", err)
		} else if !r.watcher.conn.connack.SessionPresent {
			r.fail(r.cur(), nil, "will watcher: CONNACK session present=0 on resuming its persistent session [MQTT-3.2.2-2]")
		}
	}
	var hit []*modelClient
	var ids []int
	for _, c := range r.clients {
		if c.conn != nil && c.conn.replica == i {
			c.conn.ours.Store(true)
			// Clients whose connection has a will first: theirs is at
			// stake when they come back at once.
			if c.conn.will != nil {
				hit = append([]*modelClient{c}, hit...)
			} else {
				hit = append(hit, c)
			}
			ids = append(ids, c.idx)
		}
	}
	r.tracef(ids, "crash replica %d (SIGKILL, restart), its clients: %v", i, ids)
	r.cl.crash(r.t, i)
	for _, c := range hit {
		select {
		case <-c.conn.done:
		case <-time.After(modelAckTimeout):
			r.fail(r.cur(), []int{c.idx}, "%s: connection to the killed replica still open", c.id)
			c.conn.abort()
		}
		c.crashSteps = append(c.crashSteps, r.cur())
		r.connEnded(c, "owed", "replica killed")
	}
	// Half the time, wait until a survivor has declared the replica dead and
	// published its clients' wills (node TTL 2s); otherwise the clients may
	// come back before that, while the dead replica still looks alive.
	if r.rng.IntN(2) == 0 {
		r.tracef(ids, "crash: waiting for the wills of replica %d's clients", i)
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && r.evaluateWills(false) > 0 {
			time.Sleep(50 * time.Millisecond)
		}
	} else if len(hit) > 0 {
		// A device reconnects at once, to another replica, while the dead
		// one still looks alive: its old connection's will is still owed.
		c := hit[0]
		withWill, wq := r.willChoice()
		r.connect(c, (i+1)%r.cl.size(), r.cleanChoice(c), withWill, wq, "crash: immediate reconnect of", nil)
	}
}

func (r *modelRun) doPublish(c *modelClient) {
	mc := c.conn
	topic := modelTopics[r.rng.IntN(len(modelTopics))]
	qos := byte(r.rng.IntN(3))
	retain := r.rng.IntN(100) < 20
	empty := retain && r.rng.IntN(100) < 25
	key := fmt.Sprintf("r%d.m%d", r.run, len(r.pubList)+1)
	p := &modelPub{key: key, step: r.cur(), client: c, conn: mc.idx, topic: topic, qos: qos, retain: retain, empty: empty,
		denied: !c.canRead(topic)}
	if empty {
		r.empties[topic] = append(r.empties[topic], p)
	} else {
		r.pubs[key] = p
	}
	r.pubList = append(r.pubList, p)
	payload := key
	if empty {
		payload = ""
	}
	r.tracef([]int{c.idx}, "publish %s conn %d %s qos%d retain=%v payload=%q denied=%v", c.id, mc.idx, topic, qos, retain, payload, p.denied)
	pk := ppk.NewControlPacket(ppk.Publish).(*ppk.PublishPacket)
	pk.TopicName, pk.Payload, pk.Qos, pk.Retain = topic, []byte(payload), qos, retain
	var err error
	switch qos {
	case 0:
		if err = mc.send(pk); err == nil {
			err = mc.ping()
		}
	case 1:
		pk.MessageID = mc.newID()
		_, err = mc.exchange(pk, pk.MessageID, 1, nil)
	case 2:
		pk.MessageID = mc.newID()
		_, err = mc.exchange(pk, pk.MessageID, 2, func(a ppk.ControlPacket) error {
			if _, ok := a.(*ppk.PubrecPacket); ok {
				rel := ppk.NewControlPacket(ppk.Pubrel).(*ppk.PubrelPacket)
				rel.MessageID = pk.MessageID
				return mc.send(rel)
			}
			return nil
		})
	}
	if err != nil {
		r.fail(r.cur(), []int{c.idx}, "%s conn %d: publish %s qos%d: %v [MQTT-4.3.2-1] [MQTT-4.3.3-1]", c.id, mc.idx, key, qos, err)
	} else {
		p.acked = qos > 0
	}
	p.doneAt = time.Now()
	r.counts[fmt.Sprintf("pub_qos%d", qos)]++
	if !retain || p.denied {
		return
	}
	// The retained message of the topic [MQTT-3.3.1-5] [MQTT-3.3.1-7]
	// [MQTT-3.3.1-10].
	tl := r.retained[topic]
	prev := tl[len(tl)-1].cands
	next := map[string]bool{}
	val := key
	if empty {
		val = ""
	}
	if p.acked {
		next[val] = true
	} else {
		for k := range prev {
			next[k] = true
		}
		next[val] = true
		next[""] = true
	}
	r.retained[topic] = append(tl, retState{step: r.cur(), cands: next})
}

func (r *modelRun) doSubscribe(c *modelClient) {
	mc := c.conn
	n := 1 + r.rng.IntN(2)
	var filters []string
	var qoss []byte
	for len(filters) < n {
		var f string
		if r.rng.IntN(2) == 0 {
			f = modelTopics[r.rng.IntN(len(modelTopics))]
		} else {
			f = modelWildcards[r.rng.IntN(len(modelWildcards))]
		}
		if slices.Contains(filters, f) {
			continue
		}
		filters = append(filters, f)
		qoss = append(qoss, byte(r.rng.IntN(3)))
	}
	r.tracef([]int{c.idx}, "subscribe %s conn %d %v qos %v", c.id, mc.idx, filters, qoss)
	sub := ppk.NewControlPacket(ppk.Subscribe).(*ppk.SubscribePacket)
	sub.MessageID = mc.newID()
	sub.Topics, sub.Qoss = filters, qoss
	got, err := mc.exchange(sub, sub.MessageID, 1, nil)
	if err != nil {
		r.fail(r.cur(), []int{c.idx}, "%s conn %d: SUBSCRIBE %v: %v [MQTT-3.8.4-1]", c.id, mc.idx, filters, err)
		return
	}
	ack, ok := got[0].(*ppk.SubackPacket)
	if !ok || len(ack.ReturnCodes) != len(filters) {
		r.fail(r.cur(), []int{c.idx}, "%s conn %d: SUBSCRIBE %v answered by %v [MQTT-3.8.4-5] [MQTT-3.9.3-1]", c.id, mc.idx, filters, got[0])
		return
	}
	for i, f := range filters {
		code := ack.ReturnCodes[i]
		forbidden := c.restricted && strings.HasPrefix(f, "s2/y/")
		switch {
		case code == 0x80 && forbidden:
			continue
		case code == 0x80:
			r.fail(r.cur(), []int{c.idx}, "%s: SUBSCRIBE %q refused (0x80) though the ACL lets it read topics it matches", c.id, f)
			continue
		case forbidden:
			r.fail(r.cur(), []int{c.idx}, "%s: SUBSCRIBE %q granted QoS %d though the ACL forbids reading every topic it matches (README: 0x80)", c.id, f, code)
		case code > qoss[i]:
			r.fail(r.cur(), []int{c.idx}, "%s: SUBSCRIBE %q at QoS %d granted QoS %d [MQTT-3.9.3-2]", c.id, f, qoss[i], code)
		}
		if _, had := c.subs[f]; !had {
			c.since[f] = r.cur()
		}
		c.subs[f] = min(code, 2)
		c.events = append(c.events, subEvent{step: r.cur(), session: c.session, filter: f, qos: min(code, 2)})
	}
	r.pushVersion(c)
}

func (r *modelRun) doUnsubscribe(c *modelClient) {
	mc := c.conn
	var f string
	if len(c.subs) > 0 && r.rng.IntN(100) < 80 {
		keys := make([]string, 0, len(c.subs))
		for k := range c.subs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		f = keys[r.rng.IntN(len(keys))]
	} else {
		f = modelWildcards[r.rng.IntN(len(modelWildcards))]
	}
	r.tracef([]int{c.idx}, "unsubscribe %s conn %d %q", c.id, mc.idx, f)
	un := ppk.NewControlPacket(ppk.Unsubscribe).(*ppk.UnsubscribePacket)
	un.MessageID = mc.newID()
	un.Topics = []string{f}
	if _, err := mc.exchange(un, un.MessageID, 1, nil); err != nil {
		r.fail(r.cur(), []int{c.idx}, "%s conn %d: UNSUBSCRIBE %q: %v [MQTT-3.10.4-4] [MQTT-3.10.4-5]", c.id, mc.idx, f, err)
		return
	}
	delete(c.subs, f)
	delete(c.since, f)
	r.pushVersion(c)
}

// ---- settle and check ----

// settle reconnects every persistent session that is offline, waits until
// everything the model requires has arrived or modelSettleTimeout passed,
// then a quiet window for what must not arrive, and checks.
func (r *modelRun) settle() {
	r.step.Store(int64(r.steps + 1))
	r.markStep(r.steps + 1)
	r.checkLosses()
	r.tracef(nil, "settle: reconnect offline persistent sessions, wait for convergence")
	for _, c := range r.clients {
		if c.conn == nil && c.sessionExists && !c.sessionClean {
			r.connect(c, r.rng.IntN(r.cl.size()), false, false, 0, "settle: reconnect", nil)
		}
	}
	deadline := time.Now().Add(modelSettleTimeout)
	start := time.Now()
	missing := 0
	for {
		missing = r.evaluate(false)
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.counts["settle_ms"] = int(time.Since(start).Milliseconds())
	time.Sleep(modelQuiet)
	r.checkLosses()
	r.evaluate(true)
	for _, c := range r.clients {
		if c.conn != nil {
			c.conn.disconnect()
			r.connEnded(c, "free", "end of run")
		}
	}
	if r.watcher.conn != nil {
		r.watcher.conn.disconnect()
		r.watcher.conn = nil
	}
}

// versionsIn returns c's subscription versions in effect at some step of
// [from, to]: the one in effect at from and those that began after it.
func versionsIn(c *modelClient, from, to int) []subVersion {
	var out []subVersion
	at := -1
	for i, v := range c.versions {
		if v.step <= from {
			at = i
		}
	}
	if at >= 0 {
		out = append(out, c.versions[at])
	}
	for _, v := range c.versions {
		if v.step > from && v.step <= to {
			out = append(out, v)
		}
	}
	return out
}

func maxGrant(subs map[string]byte, topic string) (byte, bool) {
	var best byte
	found := false
	for f, q := range subs {
		if modelMatch(f, topic) {
			found = true
			best = max(best, q)
		}
	}
	return best, found
}

// retainedIn returns the possible retained messages of topic at some step
// of [from, to].
func (r *modelRun) retainedIn(topic string, from, to int) map[string]bool {
	out := map[string]bool{}
	tl := r.retained[topic]
	at := 0
	for i, s := range tl {
		if s.step <= from {
			at = i
		}
	}
	for k := range tl[at].cands {
		out[k] = true
	}
	for _, s := range tl {
		if s.step > from && s.step <= to {
			for k := range s.cands {
				out[k] = true
			}
		}
	}
	return out
}

func (r *modelRun) crashedAfter(c *modelClient, step int) bool {
	for _, s := range c.crashSteps {
		if s >= step {
			return true
		}
	}
	return false
}

// evaluate checks every rule. With final false it only counts what is
// still missing; with final true it records failures.
func (r *modelRun) evaluate(final bool) int {
	missing := 0
	fail := func(step int, clients []int, format string, args ...any) {
		if final {
			r.fail(step, clients, format, args...)
		}
	}
	for _, c := range r.clients {
		c.mu.Lock()
		got := slices.Clone(c.got)
		c.mu.Unlock()
		live := map[string][]modelDelivery{}
		ret := map[string][]modelDelivery{}
		for _, d := range got {
			if d.retain {
				ret[d.key] = append(ret[d.key], d)
			} else {
				live[d.key] = append(live[d.key], d)
			}
		}
		if final {
			r.checkDeliveries(c, got, live, ret)
		}
		// MUST: acknowledged QoS >= 1 messages of a lasting subscription.
		for _, p := range r.pubList {
			if !p.acked || p.empty || p.denied || !c.canRead(p.topic) || !c.sessionExists {
				continue
			}
			vs := versionsIn(c, p.step, p.step)
			if len(vs) == 0 || vs[0].session != c.session {
				continue
			}
			g, ok := maxGrant(vs[0].subs, p.topic)
			if !ok || min(g, p.qos) == 0 {
				continue
			}
			lasting := ""
			for f, s := range c.since {
				if s <= p.step && modelMatch(f, p.topic) {
					lasting = f
					break
				}
			}
			if lasting == "" {
				continue
			}
			arrived := false
			for _, d := range live[p.key] {
				if d.session == c.session {
					arrived = true
				}
			}
			if !arrived {
				missing++
				fail(p.step, []int{c.idx, p.client.idx}, "%s never received %s (%s qos%d, acknowledged, published by %s conn %d at step %d) though its subscription %q (granted QoS %d) lasted from step %d to the end [MQTT-4.5.0-1] [MQTT-3.1.2-5]",
					c.id, p.key, p.topic, p.qos, p.client.id, p.conn, p.step, lasting, c.subs[lasting], c.since[lasting])
			}
		}
		// MUST: the certain retained message at a lasting subscription.
		for _, e := range c.events {
			if !c.sessionExists || e.session != c.session {
				continue
			}
			if s, ok := c.since[e.filter]; !ok || s > e.step {
				continue
			}
			for _, tp := range modelTopics {
				if !modelMatch(e.filter, tp) || !c.canRead(tp) {
					continue
				}
				cands := r.retainedIn(tp, e.step, e.step)
				if len(cands) != 1 {
					continue
				}
				var key string
				for k := range cands {
					key = k
				}
				p := r.pubs[key]
				if key == "" || p == nil || !p.acked || min(p.qos, e.qos) == 0 {
					continue
				}
				ok := false
				for _, d := range got {
					if !d.retain || d.step < e.step || d.session != e.session {
						continue
					}
					if q := r.pubs[d.key]; d.key == key || (q != nil && q.topic == tp && q.step >= e.step) {
						ok = true
						break
					}
				}
				if !ok {
					missing++
					var seen []string
					for _, d := range got {
						if d.topic == tp && d.step >= e.step {
							seen = append(seen, fmt.Sprintf("%s retain=%v qos%d at step %d on conn %d", d.key, d.retain, d.qos, d.step, d.conn))
						}
					}
					fail(e.step, []int{c.idx, p.client.idx}, "%s: SUBSCRIBE %q (granted QoS %d) at step %d never got the retained message %s of %s (qos%d, set at step %d) with RETAIN=1 [MQTT-3.3.1-6] [MQTT-3.3.1-8]; on %s since: %v",
						c.id, e.filter, e.qos, e.step, key, tp, p.qos, p.step, tp, seen)
				}
			}
		}
	}
	missing += r.evaluateWills(final)
	return missing
}

// checkDeliveries applies the MAY rules to everything c received.
func (r *modelRun) checkDeliveries(c *modelClient, got []modelDelivery, live, ret map[string][]modelDelivery) {
	type orderKey struct {
		pub, conn int
		topic     string
		qos       byte
	}
	lastOrder := map[orderKey]*modelPub{}
	first := map[string]bool{}
	for _, d := range got {
		if d.qos == 0 && d.dup {
			r.fail(d.step, []int{c.idx}, "%s: QoS 0 PUBLISH of %q with DUP=1 [MQTT-3.3.1-2]", c.id, d.key)
		}
		if d.key == "" {
			r.checkEmpty(c, d)
			continue
		}
		p := r.pubs[d.key]
		if p == nil {
			hint := ""
			if !strings.HasPrefix(d.key, fmt.Sprintf("r%d.", r.run)) {
				hint = " (a message of an earlier run: published before this session or subscription existed)"
			}
			r.fail(d.step, []int{c.idx}, "%s conn %d: received %q on %s (qos%d retain=%v) that no model client published in this run%s [MQTT-4.5.0-1]",
				c.id, d.conn, d.key, d.topic, d.qos, d.retain, hint)
			continue
		}
		ids := []int{c.idx, p.client.idx}
		if d.topic != p.topic {
			r.fail(d.step, ids, "%s: %s arrived on topic %s, published on %s", c.id, d.key, d.topic, p.topic)
			continue
		}
		if p.denied {
			r.fail(d.step, ids, "%s: received %s, a publish to %s the ACL denied to %s (README: acknowledged, then dropped)", c.id, d.key, p.topic, p.client.id)
			continue
		}
		if !c.canRead(p.topic) {
			r.fail(d.step, ids, "%s (user %s) received %s on %s, which the ACL does not let it read (retain=%v, conn %d)", c.id, c.user, d.key, p.topic, d.retain, d.conn)
			continue
		}
		if d.retain {
			r.checkRetainedCopy(c, d, p)
			continue
		}
		end := r.mayEnd(p)
		matched := false
		for _, v := range versionsIn(c, p.step, min(end, d.step)) {
			if v.session != d.session {
				continue
			}
			if _, ok := maxGrant(v.subs, p.topic); ok {
				matched = true
			}
		}
		if !matched {
			r.fail(d.step, ids, "%s conn %d received %s (%s qos%d, published by %s at step %d) but had no matching subscription in that session when it was published [MQTT-4.5.0-1] [MQTT-3.10.4-2]",
				c.id, d.conn, d.key, p.topic, p.qos, p.client.id, p.step)
			continue
		}
		allowed := map[byte]bool{}
		for _, v := range versionsIn(c, p.step, d.step) {
			if g, ok := maxGrant(v.subs, p.topic); ok && v.session == d.session {
				allowed[min(g, p.qos)] = true
			}
		}
		if !allowed[d.qos] {
			r.fail(d.step, ids, "%s received %s (published qos%d) at QoS %d; allowed by its subscriptions: %v [MQTT-3.3.5-1] [MQTT-3.8.4-6]",
				c.id, d.key, p.qos, d.qos, allowed)
		}
		if !first[d.key] {
			first[d.key] = true
			if d.qos >= 1 {
				k := orderKey{p.client.idx, p.conn, p.topic, p.qos}
				if prev := lastOrder[k]; prev != nil && prev.step > p.step {
					r.fail(d.step, ids, "%s received %s (step %d) after %s (step %d): both published by %s conn %d on %s at qos%d, so they must arrive in publication order [MQTT-4.6.0-5] [MQTT-4.6.0-6]",
						c.id, p.key, p.step, prev.key, prev.step, p.client.id, p.conn, p.topic, p.qos)
				}
				if prev := lastOrder[k]; prev == nil || prev.step < p.step {
					lastOrder[k] = p
				}
			}
		}
	}
	// Duplicates.
	for key, ds := range live {
		if key == "" || len(ds) < 2 || r.pubs[key] == nil {
			continue
		}
		r.checkDup(c, key, ds, 1, "live")
	}
	for key, ds := range ret {
		p := r.pubs[key]
		if key == "" || p == nil {
			continue
		}
		limit := 0
		for _, e := range c.events {
			if modelMatch(e.filter, p.topic) && r.retainedIn(p.topic, e.step, r.steps+1)[key] {
				limit++
			}
		}
		if len(ds) > limit {
			r.checkDup(c, key, ds, limit, "retained")
		}
	}
}

func (r *modelRun) checkDup(c *modelClient, key string, ds []modelDelivery, limit int, kind string) {
	p := r.pubs[key]
	for _, d := range ds {
		if d.qos == 1 {
			return // QoS 1: at least once
		}
	}
	if r.crashedAfter(c, ds[0].step) {
		r.counts["dups_after_crash"]++
		return // README: sessions of a killed replica resume from a checkpoint
	}
	steps := make([]string, len(ds))
	for i, d := range ds {
		steps[i] = fmt.Sprintf("step %d conn %d qos%d dup=%v packet id %d arrival %d", d.step, d.conn, d.qos, d.dup, d.id, d.seq)
	}
	r.fail(ds[1].step, []int{c.idx, p.client.idx}, "%s received %s (%s, published qos%d by %s at step %d) %d times as a %s copy; at most %d allowed with no copy at QoS 1 and no crash ending its connection since the first: %s [MQTT-4.3.3-2]",
		c.id, key, p.topic, p.qos, p.client.id, p.step, len(ds), kind, limit, strings.Join(steps, "; "))
}

func (r *modelRun) checkRetainedCopy(c *modelClient, d modelDelivery, p *modelPub) {
	ids := []int{c.idx, p.client.idx}
	ok, qosOK := false, false
	for _, e := range c.events {
		if e.session != d.session || e.step > d.step || !modelMatch(e.filter, p.topic) {
			continue
		}
		if !r.retainedIn(p.topic, e.step, d.step)[p.key] {
			continue
		}
		ok = true
		if d.qos == min(p.qos, e.qos) {
			qosOK = true
		}
	}
	if !ok {
		r.fail(d.step, ids, "%s conn %d received %s (%s, published at step %d) with RETAIN=1, but no SUBSCRIBE of this session found it as the retained message [MQTT-3.3.1-6] [MQTT-3.3.1-8] [MQTT-3.3.1-9]",
			c.id, d.conn, p.key, p.topic, p.step)
		return
	}
	if !qosOK {
		r.fail(d.step, ids, "%s received retained %s (qos%d) at QoS %d, not min(message QoS, granted QoS) [MQTT-3.8.4-6]", c.id, p.key, p.qos, d.qos)
	}
}

// checkEmpty checks a delivery with an empty payload: only a retained clear
// has one, it is delivered live like any message [MQTT-3.3.1-10] and never
// as a retained message [MQTT-3.3.1-11].
func (r *modelRun) checkEmpty(c *modelClient, d modelDelivery) {
	if d.retain {
		r.fail(d.step, []int{c.idx}, "%s received an empty retained message on %s with RETAIN=1: a zero byte retained message must not be stored [MQTT-3.3.1-11]", c.id, d.topic)
		return
	}
	for _, p := range r.empties[d.topic] {
		if p.denied || !c.canRead(p.topic) {
			continue
		}
		for _, v := range versionsIn(c, p.step, min(r.mayEnd(p), d.step)) {
			if _, ok := maxGrant(v.subs, p.topic); ok && v.session == d.session {
				return
			}
		}
	}
	r.fail(d.step, []int{c.idx}, "%s conn %d received an empty message on %s that no matching subscription of its session allows [MQTT-4.5.0-1]", c.id, d.conn, d.topic)
}

// evaluateWills checks the watcher's deliveries against the wills.
func (r *modelRun) evaluateWills(final bool) int {
	w := r.watcher
	w.mu.Lock()
	got := slices.Clone(w.got)
	w.mu.Unlock()
	byKey := map[string][]modelDelivery{}
	for _, d := range got {
		byKey[d.key] = append(byKey[d.key], d)
		if !final {
			continue
		}
		wl := r.wills[d.key]
		if wl == nil {
			r.fail(d.step, nil, "will watcher received %q on %s, which is no will of this run", d.key, d.topic)
			continue
		}
		ids := []int{wl.client.idx}
		switch {
		case d.topic != modelWillPrefix+wl.client.id:
			r.fail(d.step, ids, "will %s arrived on %s", d.key, d.topic)
		case d.qos != wl.qos || d.retain:
			r.fail(d.step, ids, "will %s arrived at QoS %d retain=%v, want QoS %d retain=false [MQTT-3.3.1-9]", d.key, d.qos, d.retain, wl.qos)
		}
		switch wl.state {
		case "open":
			r.fail(d.step, ids, "will %s of %s conn %d published while that connection is open [MQTT-3.1.2-8]", d.key, wl.client.id, wl.conn)
		case "free":
			r.fail(d.step, ids, "will %s of %s conn %d published though the connection ended with %s [MQTT-3.14.4-3] [MQTT-3.1.2-10]", d.key, wl.client.id, wl.conn, wl.why)
		}
	}
	missing := 0
	for _, wl := range r.wills {
		n := len(byKey[wl.key])
		ids := []int{wl.client.idx}
		switch {
		case wl.state == "owed" && n == 0:
			missing++
			if final {
				r.fail(wl.endStep, ids, "will %s (qos%d) of %s conn %d never published, though the connection ended at step %d: %s [MQTT-3.1.2-8]",
					wl.key, wl.qos, wl.client.id, wl.conn, wl.endStep, wl.why)
			}
		case final && n > 1 && wl.qos == 2:
			r.fail(byKey[wl.key][1].step, ids, "will %s (qos2) of %s conn %d published %d times (connection ended at step %d: %s) [MQTT-3.1.2-8] [MQTT-4.3.3-2]",
				wl.key, wl.client.id, wl.conn, n, wl.endStep, wl.why)
		}
	}
	return missing
}

// report logs the run's summary and fails the test with every failure, the
// seed, the step and a trace of the steps of the clients involved.
func (r *modelRun) report(elapsed time.Duration) {
	t := r.t
	delivered := 0
	for _, c := range r.clients {
		c.mu.Lock()
		delivered += len(c.got)
		c.mu.Unlock()
	}
	t.Logf("model %s seed=%d run=%d: %d steps, %d publishes (qos0/1/2 %d/%d/%d), %d deliveries, %d wills, %d crashes, %d takeovers, %d races, %d QoS 2/0 re-deliveries after crashes, settle %dms, %.1fs, %d failures",
		r.dep, r.seed, r.run, r.steps, len(r.pubList), r.counts["pub_qos0"], r.counts["pub_qos1"], r.counts["pub_qos2"], delivered, len(r.wills),
		r.crashes, r.counts["takeovers"], r.counts["races"], r.counts["dups_after_crash"], r.counts["settle_ms"], elapsed.Seconds(), len(r.failures))
	if dir := os.Getenv("MODEL_TRACE_DIR"); dir != "" {
		var b strings.Builder
		for _, tr := range r.trace {
			fmt.Fprintf(&b, "step %d %v: %s\n", tr.step, tr.clients, tr.text)
		}
		name := filepath.Join(dir, fmt.Sprintf("model-%s-seed%d-run%d.trace", r.dep, r.seed, r.run))
		if err := os.WriteFile(name, []byte(b.String()), 0o644); err != nil {
			t.Logf("write trace: %v", err)
		}
	}
	if len(r.failures) == 0 {
		return
	}
	sort.SliceStable(r.failures, func(i, j int) bool { return r.failures[i].step < r.failures[j].step })
	var b strings.Builder
	fmt.Fprintf(&b, "model %s seed=%d run=%d: %d failures (reproduce: go test -run 'TestModel/%s/seed=%d$' -model.seed=%d -model.steps=%d .)\n",
		r.dep, r.seed, r.run, len(r.failures), r.dep, r.seed, r.seed, r.flagSteps)
	const shown = 8
	for i, f := range r.failures {
		if i == shown {
			fmt.Fprintf(&b, "... and %d more:\n", len(r.failures)-shown)
		}
		if i >= shown {
			fmt.Fprintf(&b, "  step %d: %s\n", f.step, f.text)
			continue
		}
		fmt.Fprintf(&b, "FAILURE seed=%d run=%d step=%d: %s\n  trace of clients %v:\n", r.seed, r.run, f.step, f.text, f.clients)
		var lines []string
		for _, tr := range r.trace {
			if tr.step > f.step+2 {
				break
			}
			involved := tr.clients == nil || strings.HasPrefix(tr.text, "crash")
			for _, id := range f.clients {
				if slices.Contains(tr.clients, id) {
					involved = true
				}
			}
			if involved {
				lines = append(lines, fmt.Sprintf("    step %d: %s", tr.step, tr.text))
			}
		}
		if len(lines) > 25 {
			lines = append([]string{"    ..."}, lines[len(lines)-25:]...)
		}
		b.WriteString(strings.Join(lines, "\n"))
		b.WriteString("\n")
	}
	t.Error(b.String())
}

// modelReset ends every session and clears every retained message between
// two runs, so that the second run starts from the model's initial state on
// a broker and Redis that keep the first run's history.
func modelReset(t *testing.T, cl modelCluster) {
	r := newModelRun(t, "reset", cl, 0, 0, 0)
	for _, c := range append(slices.Clone(r.clients), r.watcher) {
		mc, err := r.dial(c, 0, true, nil, 1, 0, nil)
		if err != nil {
			t.Fatalf("reset: connect %s: %v", c.id, err)
		}
		mc.disconnect()
	}
	pubber := r.clients[1] // user "full": may write every topic
	mc, err := r.dial(pubber, 0, true, nil, 2, 0, nil)
	if err != nil {
		t.Fatalf("reset: connect %s: %v", pubber.id, err)
	}
	for _, tp := range modelTopics {
		pk := ppk.NewControlPacket(ppk.Publish).(*ppk.PublishPacket)
		pk.TopicName, pk.Qos, pk.Retain, pk.MessageID = tp, 1, true, mc.newID()
		if _, err := mc.exchange(pk, pk.MessageID, 1, nil); err != nil {
			t.Fatalf("reset: clear retained %s: %v", tp, err)
		}
	}
	mc.disconnect()
}
