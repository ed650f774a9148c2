package session

import (
	"context"
	"time"

	"github.com/bridgemq/server/broker"
)

// What a shared subscription member leaves when its connection ends
// (MQTT 5.0 section 4.8.2, for 3.1.1 clients too). The messages a group
// handed this connection (DeliverShared) carry the group's name; when
// the connection ends, those it had not finished go back to the group at
// once, for another member to take (broker.Broker.HandBack), whether the
// session ends with the connection or persists:
//
//   - queued and not yet sent, QoS 1 and 2: the client never saw them;
//   - sent at QoS 1 and not acknowledged: the next member gets them, and
//     this client may have them too, which QoS 1 (at least once) allows;
//   - sent at QoS 2 stay with the session, PUBREC received or not: the
//     Server MUST complete their delivery to this client when it
//     reconnects [MQTT-4.8.2-4], and MUST NOT send them to another client
//     if the session ends first [MQTT-4.8.2-5] (the client may have passed
//     them on already: exactly once forbids a second copy).
//
// A persistent member does not keep its group's messages waiting for its
// return, although the specification allows it (section 4.8.2: "MAY wait
// for the Client to reconnect"): a group exists to share work among
// whoever is there, and a session may stay away for hours. What no other
// member takes stays in a persistent session, sent when it returns; a
// session that ends with its connection loses it (counted).

// sharedEntry is a message of a snapshot that a shared subscription group
// handed this connection and that another member may take: where it is in
// the snapshot (Inflight or Queued), and its group.
type sharedEntry struct {
	group    string
	inflight bool
	index    int
}

// handsBack reports whether o, in flight (sent, not acknowledged) or
// queued, goes back to its shared subscription group when the connection
// ends: a group's QoS 1 or 2 message not yet sent, or a QoS 1 message not
// yet acknowledged; never a QoS 2 message already sent [MQTT-4.8.2-5].
func handsBack(o outgoing, inflight bool) bool {
	if !o.shared || o.qos == 0 {
		return false
	}
	return !inflight || o.qos == 1
}

// handOver takes the session's state (snapshot) and gives what its
// groups handed it back to them (handBack); the rest, which stays in the
// stored session or is lost with it, this node's members no longer owe
// their groups (sharedDone).
func (s *Session) handOver(ctx context.Context) *broker.StoredSession {
	snap, shared := s.snapshot()
	s.mu.Lock()
	done := s.shareDropped
	s.shareDropped = nil
	s.mu.Unlock()
	if len(shared) > 0 {
		done = append(done, s.handBack(ctx, snap, shared)...)
	}
	s.sharedDone(done, false)
	return snap
}

// handBack gives the messages of shared, entries of st, back to their
// groups, and takes those another member took out of st: a persistent
// session keeps only what nobody took. It returns what nobody took.
func (s *Session) handBack(ctx context.Context, st *broker.StoredSession, shared []sharedEntry) (left []broker.SharedDelivery) {
	ds := make([]broker.SharedDelivery, len(shared))
	for i, e := range shared {
		var d broker.Delivery
		if e.inflight {
			d = st.Inflight[e.index].Delivery
		} else {
			d = st.Queued[e.index]
		}
		ds[i] = broker.SharedDelivery{Group: e.group, Delivery: broker.Delivery{Message: d.Message, QoS: d.QoS}}
	}
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	taken, err := s.env.Broker.HandBack(hctx, ds, !s.clean)
	if err != nil {
		s.logger().Warn("shared subscription messages not handed to another member", "err", err)
	}
	var goneInflight, goneQueued map[int]bool
	for i, e := range shared {
		if !taken[i] {
			left = append(left, ds[i])
			continue
		}
		if e.inflight {
			if goneInflight == nil {
				goneInflight = make(map[int]bool)
			}
			goneInflight[e.index] = true
		} else {
			if goneQueued == nil {
				goneQueued = make(map[int]bool)
			}
			goneQueued[e.index] = true
		}
	}
	st.Inflight = dropIndexes(st.Inflight, goneInflight)
	st.Queued = dropIndexes(st.Queued, goneQueued)
	return left
}

// shareCleared, in the subID of a message a group handed this connection
// at QoS 2, says the cluster has forgotten that this node's members owe
// it (sharedDone, waited for): it may be sent. Group indexes stay far
// below it.
const shareCleared uint32 = 1 << 31

// groupOf returns the group that handed o to this connection. s.mu is
// held.
func (s *Session) groupOf(o outgoing) string { return s.shareNames[o.subID&^shareCleared] }

// sharedDelivery is o, a message a group handed this connection, with
// its group. s.mu is held.
func (s *Session) sharedDelivery(o outgoing) broker.SharedDelivery {
	return broker.SharedDelivery{Group: s.groupOf(o), Delivery: broker.Delivery{Message: o.msg, QoS: o.qos}}
}

// mustClear reports whether o is a group's QoS 2 message the cluster has
// not yet forgotten as owed: it waits in the queue until it has.
func mustClear(o outgoing) bool { return o.shared && o.qos == 2 && o.subID&shareCleared == 0 }

// clearingLocked appends to clearing the group QoS 2 messages of
// s.pending[n:] to clear before they are sent, as many as the inflight
// window has room for (at least one). s.mu is held.
func (s *Session) clearingLocked(clearing []broker.SharedDelivery, n int) []broker.SharedDelivery {
	room := max(1, s.maxInflight-len(s.inflight))
	for _, o := range s.pending[n:] {
		if len(clearing) == room {
			break
		}
		if mustClear(o) {
			clearing = append(clearing, s.sharedDelivery(o))
		}
	}
	return clearing
}

// markCleared marks the first k group QoS 2 messages of the queue still
// to clear as cleared: those clearingLocked listed, which stay first
// (the writer alone takes from the queue, and only what comes before).
func (s *Session) markCleared(k int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < len(s.pending) && k > 0; i++ {
		if mustClear(s.pending[i]) {
			s.pending[i].subID |= shareCleared
			k--
		}
	}
}

// sharedDone reports to the broker that this connection is done with ds,
// messages its groups handed it (broker.Broker.SharedDone): a cluster
// forgets that this node's members owe them. With wait it returns once
// the cluster has (a QoS 2 message is about to be sent: then it stays
// with this member [MQTT-4.8.2-5], and no other node may give it to
// another member should this one die).
func (s *Session) sharedDone(ds []broker.SharedDelivery, wait bool) {
	if len(ds) == 0 {
		return
	}
	ctx := context.Background()
	if wait {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.env.Config.WriteTimeout)
		defer cancel()
	}
	if err := s.env.Broker.SharedDone(ctx, ds, wait); err != nil {
		s.logger().Warn("shared subscription messages sent not forgotten in the cluster", "messages", len(ds), "err", err)
	}
}

// dropIndexes returns list without the entries whose index is in gone,
// in order.
func dropIndexes[T any](list []T, gone map[int]bool) []T {
	if len(gone) == 0 {
		return list
	}
	out := list[:0]
	for i, v := range list {
		if !gone[i] {
			out = append(out, v)
		}
	}
	clear(list[len(out):])
	return out
}
