package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// takeoverPoll is how often a takeover that waits for its answer also
// reads the client record, in case the answer was lost.
const takeoverPoll = 50 * time.Millisecond

// waitDetached waits, at most takeoverTimeout, for a connection of
// clientID that has left this node (Leave) and whose session is being
// stored (Save).
func (r *Redis) waitDetached(clientID string) {
	r.mu.Lock()
	c := r.detaching[clientID]
	r.mu.Unlock()
	if c == nil {
		return
	}
	t := time.NewTimer(takeoverTimeout)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		r.log.Warn("session store still running; proceeding", "client", clientID)
	}
}

// control is a message on a node's control channel.
type control struct {
	Op     string `json:"op"` // "takeover" or "ack"
	Client string `json:"client,omitempty"`
	Conn   string `json:"conn,omitempty"`  // the connection to end; empty: any
	Reply  string `json:"reply,omitempty"` // node to acknowledge to
	Token  string `json:"token"`
}

// takeoverResult is how a node answered a takeover request.
type takeoverResult uint8

const (
	takeoverAcked      takeoverResult = iota // the old connection has ended
	takeoverDead                             // the node is dead or being reaped: nobody there to answer
	takeoverUnanswered                       // alive, but no answer within takeoverTimeout
)

// takeOverRemote asks node to end its connection of clientID and waits
// for the acknowledgement, at most takeoverTimeout. A node whose liveness
// key is gone cannot answer; the reaper publishes its clients' wills.
func (r *Redis) takeOverRemote(ctx context.Context, node, clientID, conn string) (takeoverResult, error) {
	held, err := r.rdb.Get(ctx, r.aliveKey(node)).Result()
	if err != nil && err != redis.Nil {
		return takeoverDead, unavailable("check node liveness", err)
	}
	if held == "" || strings.HasPrefix(held, tombstonePrefix) {
		return takeoverDead, nil
	}
	token := randomToken()
	ack, done := r.waitFor(r.acks, token)
	defer done()
	b, _ := json.Marshal(control{Op: "takeover", Client: clientID, Conn: conn, Reply: r.node, Token: token})
	if err := r.rdb.Publish(ctx, r.nodeCtlChannel(node), b).Err(); err != nil {
		return takeoverDead, unavailable("send takeover", err)
	}
	r.stats.takeovers.Add(1)
	t := time.NewTimer(takeoverTimeout)
	defer t.Stop()
	// The answer travels by pub/sub, which loses what is published while
	// this replica's subscription connection is being re-established (a
	// Redis restart): the old connection's end also shows in the client
	// record, which Detach marks offline once the session is stored.
	poll := time.NewTicker(takeoverPoll)
	defer poll.Stop()
	for {
		select {
		case <-ack:
			return takeoverAcked, nil
		case <-poll.C:
			rec, err := r.rdb.HMGet(ctx, r.clientKey(clientID), "state", "conn").Result()
			if err == nil && (rec[0] != "1" || rec[1] != conn) {
				return takeoverAcked, nil
			}
		case <-t.C:
			r.log.Warn("takeover not acknowledged; proceeding", "client", clientID, "node", node)
			return takeoverUnanswered, nil
		case <-ctx.Done():
			return takeoverDead, fmt.Errorf("wait for takeover by %s: %w", node, ctx.Err())
		}
	}
}

// repeatAfter are the delays, from the claim, at which a takeover that
// was not answered is asked again (repeatTakeover).
var repeatAfter = []time.Duration{0, time.Second, 4 * time.Second}

// repeatTakeover asks node again, in the background, to end connection
// conn of clientID, which this node has claimed without the answer of node,
// alive when asked (a dead node is not asked again: nobody listens). A
// node that was alive but missed the request (its control subscription
// was being re-established after a Redis restart) would otherwise keep
// the old connection up beside the new one. The request names conn, so it
// never ends a newer connection; a node that has none ignores it.
func (r *Redis) repeatTakeover(node, clientID, conn string) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		start := time.Now()
		b, _ := json.Marshal(control{Op: "takeover", Client: clientID, Conn: conn, Reply: r.node, Token: randomToken()})
		for _, d := range repeatAfter {
			select {
			case <-time.After(time.Until(start.Add(d))):
			case <-r.ctx.Done():
				return
			}
			ctx, cancel := context.WithTimeout(r.ctx, takeoverTimeout)
			err := r.rdb.Publish(ctx, r.nodeCtlChannel(node), b).Err()
			cancel()
			if err != nil {
				r.log.Warn("repeated takeover not sent", "client", clientID, "node", node, "err", err)
			}
		}
	}()
}

// publishOrphanWill publishes the stored will of connection conn, taken
// over on a node that could not answer (dead, or stalled), as a takeover
// does [MQTT-3.1.2-8]: once, claimed by connection like every will, so
// that neither a reaper nor the old node, should it come back, sends it
// again; in the background, retried until Redis takes it.
func (r *Redis) publishOrphanWill(clientID, owner, conn, env, delayMS string) {
	if env == "" {
		return
	}
	will := new(Message)
	if _, err := DecodeEnvelope(env, will); err != nil {
		r.log.Error("dropping stored will that does not decode", "client", clientID, "err", err)
		return
	}
	if ms, _ := strconv.ParseInt(delayMS, 10, 64); ms > 0 {
		// The new connection has claimed the id: a delayed will of the
		// old one would be cancelled by it at once [MQTT-3.1.3-9].
		return
	}
	if !r.willAllowed(clientID, owner, will) {
		return
	}
	r.retryWill(clientID, conn, will)
}

// endConnection ends this node's connection conn of clientID (any, when
// conn is empty) for another node's takeover, and returns once its session
// is stored. A connection that has claimed the id and is still attaching
// is waited for (it waits for no other node once it has claimed).
func (r *Redis) endConnection(clientID, conn string) {
	r.mu.Lock()
	old := r.conns[clientID]
	r.mu.Unlock()
	if old != nil && (conn == "" || conn == old.conn) {
		t := time.NewTimer(takeoverTimeout)
		select {
		case <-old.attached:
		case <-t.C:
			r.log.Warn("connection asked for by a takeover still attaching; proceeding", "client", clientID)
		}
		t.Stop()
		r.mu.Lock()
		still := r.conns[clientID] == old
		r.mu.Unlock()
		if still {
			old.sub.TakeOver() // returns after its Detach stored the session
			return
		}
	}
	r.waitDetached(clientID)
}

// supersede marks this node's connection conn of clientID (any, when conn
// is empty) as taken over elsewhere: the gate passes nothing more to it,
// and its session's cursor stays where it is now, so that whatever the
// gate holds back from here on is read again by the connection that took
// the session (none is lost, none reaches the superseded connection).
func (r *Redis) supersede(clientID, conn string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.conns[clientID]; c != nil && !c.superseded && (conn == "" || c.conn == conn) {
		cut := r.cursorLocked(c)
		c.superseded, c.cut = true, &cut
	}
}

// control handles a message on this node's control channel. It runs on the
// reader goroutine, so a takeover runs on its own.
func (r *Redis) control(payload string) {
	var c control
	if err := json.Unmarshal([]byte(payload), &c); err != nil {
		r.log.Error("dropping malformed control message", "err", err)
		return
	}
	switch c.Op {
	case "ack":
		r.signal(r.acks, c.Token)
	case "takeover":
		// Another node owns the client id from here on: nothing the
		// reader hands over after this message (it runs on the reader)
		// goes to the connection being ended, which may have been
		// superseded seconds ago while this node was paused.
		r.supersede(c.Client, c.Conn)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.endConnection(c.Client, c.Conn)
			b, _ := json.Marshal(control{Op: "ack", Token: c.Token})
			ctx, cancel := context.WithTimeout(r.ctx, takeoverTimeout)
			defer cancel()
			if err := r.rdb.Publish(ctx, r.nodeCtlChannel(c.Reply), b).Err(); err != nil {
				r.log.Warn("takeover acknowledgement failed", "client", c.Client, "err", err)
			}
		}()
	}
}
