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

// handBack gives the messages of shared, entries of st, back to their
// groups, and takes those another member took out of st: a persistent
// session keeps only what nobody took.
func (s *Session) handBack(ctx context.Context, st *broker.StoredSession, shared []sharedEntry) {
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
