package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/topics"
)

// errClientDisconnect ends a connection the client closed with DISCONNECT.
var errClientDisconnect = errors.New("client sent DISCONNECT")

// readLoop reads and handles packets until the connection ends.
func (s *Session) readLoop(ctx context.Context) error {
	// A client silent for 1.5 × keep-alive is disconnected (3.1.1
	// [MQTT-3.1.2-24], 5.0 [MQTT-3.1.2-22]).
	grace := s.keepAlive + s.keepAlive/2
	if s.env.Inflight != nil {
		s.r.SetGate(s.gatePublish)
		defer s.releaseGate()
	}
	for {
		if grace > 0 {
			_ = s.conn.SetReadDeadline(time.Now().Add(grace))
		} else {
			_ = s.conn.SetReadDeadline(time.Time{})
		}
		s.releaseGate() // what the last packet took and did not hand on
		// Await, not ReadPacket, is where an idle connection waits: a
		// shallow stack (see packets.Reader.Await).
		err := s.r.Await()
		var p packets.Packet
		if err == nil {
			p, err = s.r.ReadPacket()
		}
		if err != nil {
			select {
			case <-s.closed:
				return s.stopReason()
			default:
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("%w: nothing received for %s (3.1.1 [MQTT-3.1.2-24], 5.0 [MQTT-3.1.2-22])", ErrKeepAliveExpired, grace)
			}
			return fmt.Errorf("read: %w", err)
		}
		if err := s.handle(ctx, p); err != nil {
			return err
		}
		if p.Type() == packets.TypePingreq {
			s.r.Release() // the client had nothing else to send: it is idle
		}
	}
}

func (s *Session) handle(ctx context.Context, p packets.Packet) error {
	switch p := p.(type) {
	case *packets.Publish:
		return s.onPublish(ctx, p)
	case *packets.Puback:
		s.onPuback(p.PacketID)
	case *packets.Pubrec:
		s.onPubrec(p.PacketID, p.ReasonCode)
	case *packets.Pubrel:
		s.onPubrel(p.PacketID)
	case *packets.Pubcomp:
		s.onPubcomp(p.PacketID)
	case *packets.Subscribe:
		return s.onSubscribe(ctx, p)
	case *packets.Unsubscribe:
		return s.onUnsubscribe(ctx, p)
	case *packets.Pingreq:
		s.sendAck(&packets.Pingresp{}) // [MQTT-3.12.4-1]
	case *packets.Disconnect:
		if err := s.onDisconnect5(p); err != nil {
			return err
		}
		if p.ReasonCode == packets.DisconnectWithWill {
			return errDisconnectWithWill // section 3.14.2.1: the will is published
		}
		return errClientDisconnect
	case *packets.Connect:
		// [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
		return fmt.Errorf("%w: second CONNECT [MQTT-3.1.0-2]", ErrProtocolViolation)
	default:
		return fmt.Errorf("%w: a client may not send packet type %d", ErrProtocolViolation, p.Type())
	}
	return nil
}

// gatePublish is the packet reader's gate: once the body of a PUBLISH is
// read, it takes the body's size from Env.Inflight, waiting while the
// replica's bytes in flight to the bridge are at the bound. The client's
// further bytes meanwhile stay in the socket buffers, and TCP flow control
// stops it sending. Taken after the body, not before: a client that
// announces a body and never sends it holds nothing here (see
// packets.Reader.SetGate). Reader goroutine only.
func (s *Session) gatePublish(t packets.Type, remaining int) error {
	if t != packets.TypePublish {
		return nil
	}
	taken, waited := s.env.Inflight.Acquire(int64(remaining), s.closed)
	if !waited {
		s.gateBytes = taken
		return nil
	}
	s.env.Stats.PublishThrottled.Add(1)
	if taken == 0 {
		return fmt.Errorf("waiting for -max-inflight-bytes: %w", s.stopReason())
	}
	s.gateBytes = taken
	// The wait was the server's, not a silent client: the keep-alive clock
	// [MQTT-3.1.2-24] restarts for the body.
	if grace := s.keepAlive + s.keepAlive/2; grace > 0 {
		_ = s.conn.SetReadDeadline(time.Now().Add(grace))
	}
	return nil
}

// releaseGate gives back the Env.Inflight bytes of the last PUBLISH read
// when nothing took them over. Reader goroutine only.
func (s *Session) releaseGate() {
	if s.gateBytes > 0 {
		s.env.Inflight.Release(s.gateBytes)
		s.gateBytes = 0
	}
}

func (s *Session) onPublish(ctx context.Context, p *packets.Publish) error {
	s.env.Stats.PublishReceived.Add(1)
	if p.Properties != nil && p.Properties.TopicAlias != nil {
		if err := s.resolveAlias(p); err != nil {
			return err
		}
	}
	// One clock read per PUBLISH serves the message's time and, for
	// Env.AckLatency, when it was read: each read is ~50 ns on a VM.
	now := time.Now()
	var read time.Time // for Env.AckLatency
	if p.QoS > 0 && s.env.AckLatency != nil {
		read = now
	}
	if err := topics.ValidateTopicName(p.Topic); err != nil {
		// [MQTT-3.3.2-2] no wildcards in a topic name; [MQTT-4.7.3-1] not
		// empty, which in 5.0 means without a Topic Alias either (section
		// 3.3.2.1).
		return fmt.Errorf("%w: PUBLISH topic: %w", ErrProtocolViolation, err)
	}
	if p.QoS > 0 {
		if dup, err := s.openInbound(p.QoS, p.PacketID); err != nil || dup {
			return err
		}
	}
	if err := topics.CheckLimits(p.Topic, s.env.Config.MaxTopicLength, s.env.Config.MaxTopicLevels); err != nil {
		s.env.Stats.PublishRefused.Add(1)
		if p.QoS == 0 {
			s.logger().Info("publish refused", "reason", err.Error())
			return nil
		}
		if s.version == packets.Version5 {
			// 5.0 refuses the one PUBLISH: Topic Name Invalid, "not
			// accepted by this Server" (section 3.4.2.1).
			s.logger().Info("publish refused", "reason", err.Error())
			s.refusePublish(p.QoS, p.PacketID, packets.TopicNameInvalid, err.Error())
			return nil
		}
		// 3.1.1 has no negative PUBACK or PUBREC: closing the connection
		// is the only refusal the client notices.
		return fmt.Errorf("%w: PUBLISH topic: %w", ErrLimit, err)
	}
	// The $SYS tree is the server's own (each node publishes its figures
	// there, PublishLocal): no client may pass its own off as them.
	sys := p.Topic == "$SYS" || strings.HasPrefix(p.Topic, "$SYS/")
	if sys || !s.env.Auth.CanWrite(s.clientID, s.username, p.Topic) {
		// Acknowledged as 3.1.1 requires, then dropped; 5.0 says why
		// (0x87, section 3.4.2.1).
		s.env.Stats.PublishDenied.Add(1)
		if sys {
			s.logger().Info("publish to $SYS refused", "topic", p.Topic)
		} else {
			s.logger().Info("publish refused by ACL", "topic", p.Topic)
		}
		if s.version == packets.Version5 {
			s.refusePublish(p.QoS, p.PacketID, packets.NotAuthorized, "not authorized to publish to this topic")
			return nil
		}
		s.accepted(p.QoS, p.PacketID, read, nil)
		return nil
	}
	msg := &broker.Message{
		ID:       newMessageID(),
		Topic:    p.Topic,
		Payload:  p.Payload,
		QoS:      p.QoS,
		Retain:   p.Retain,
		ClientID: s.clientID,
		Node:     s.env.Config.NodeID,
		Time:     now,
	}
	if p.Properties != nil {
		msg.Properties = messageProperties(p.Properties)
	}
	// The message's bytes stay taken from Env.Inflight until the bridge
	// has answered for it.
	held := s.gateBytes
	s.gateBytes = 0
	// Keep reading while the message travels; at most maxPendingPublishes
	// wait at once, then the reader waits for an answer too. Only the
	// reader adds, so at most one answer finds it waiting. The channel is
	// made before the first PUBLISH is handed on, so every answer sees it.
	if s.pubRoom == nil {
		s.pubRoom = make(chan struct{}, 1)
	}
	if s.pubPending.Add(1) > maxPendingPublishes {
		<-s.pubRoom
	}
	a, _ := pubAcks.Get().(*pubAck)
	if a == nil {
		a = new(pubAck)
		a.done = a.answer
	}
	a.s, a.held, a.qos, a.id, a.read = s, held, p.QoS, p.PacketID, read
	s.env.Broker.PublishAsync(ctx, msg, a.done)
	return nil
}

// pubAck is what the answer of the bridge to one inbound PUBLISH needs.
// They are pooled, with done bound once, so that handing the bridge its
// callback allocates nothing on the hot path.
type pubAck struct {
	s    *Session
	held int64
	qos  byte
	id   uint16
	read time.Time   // when the PUBLISH was read; zero when not measured
	done func(error) // a.answer, bound when a is made
}

// pubAcks holds the pubAcks no PUBLISH is waiting on.
var pubAcks sync.Pool

// answer is the bridge's result for the PUBLISH a was taken for: the
// slot and the bytes it held are given back and the PUBLISH acknowledged.
func (a *pubAck) answer(err error) {
	s, held, qos, id, read := a.s, a.held, a.qos, a.id, a.read
	a.s = nil
	pubAcks.Put(a)
	if s.pubPending.Add(-1) >= maxPendingPublishes {
		s.pubRoom <- struct{}{} // the reader is waiting, or about to
	}
	s.env.Inflight.Release(held)
	s.accepted(qos, id, read, err)
}

// maxPendingPublishes bounds the PUBLISH packets of one connection that the
// bridge has not yet accepted.
const maxPendingPublishes = 256

// accepted acknowledges an inbound PUBLISH once the bridge has accepted it:
// PUBACK [MQTT-4.3.2-2] or PUBREC [MQTT-4.3.3-2], in the order the PUBLISH
// packets arrived [MQTT-4.6.0-2]. A QoS 1/2 message the bridge could not
// accept is not acknowledged: the connection is closed, so a 3.1.1 client
// re-sends it once it reconnects [MQTT-4.4.0-1]. read is when the PUBLISH
// was read, for Env.AckLatency; zero when it is not measured.
func (s *Session) accepted(qos byte, id uint16, read time.Time, err error) {
	if err != nil {
		if qos == 0 {
			s.env.Stats.PublishDropped.Add(1)
			return
		}
		s.stop(fmt.Errorf("publish not accepted: %w", err))
		return
	}
	if !read.IsZero() {
		s.env.AckLatency.Observe(time.Since(read).Seconds())
	}
	switch qos {
	case 1:
		s.rxUnacked.Add(-1) // before the PUBACK: the client may send again once it has it
		s.sendAck(&packets.Puback{PacketID: id})
	case 2:
		s.mu.Lock()
		if st, ok := s.awaitingRel[id]; ok {
			s.awaitingRel[id] = st | flowAccepted
		}
		s.mu.Unlock()
		s.sendAck(&packets.Pubrec{PacketID: id})
	}
}

// openInbound starts the flow of an inbound QoS 1 or 2 PUBLISH. A QoS 2
// PUBLISH re-sent before its PUBREL is a duplicate: it is not delivered
// again [MQTT-4.3.3-2] but acknowledged again, or left to the pending
// acceptance of the first copy to acknowledge. A 5.0 client that starts
// more flows than the server's Receive Maximum without their ending gets
// DISCONNECT 0x93 [MQTT-3.3.4-7] (section 3.3.4). Reader goroutine only:
// it alone adds to rxUnacked, so the check and the add need no lock.
func (s *Session) openInbound(qos byte, id uint16) (dup bool, err error) {
	if qos == 2 {
		s.mu.Lock()
		st, seen := s.awaitingRel[id]
		s.mu.Unlock()
		if seen {
			if st&flowAccepted != 0 {
				s.sendAck(&packets.Pubrec{PacketID: id})
			}
			return true, nil
		}
	}
	if s.version == packets.Version5 {
		if n, limit := s.rxUnacked.Load(), serverReceiveMaximum(&s.env.Config); int(n) >= limit {
			return false, fmt.Errorf("%w: %d QoS 1 and 2 PUBLISH packets unacknowledged, the Receive Maximum is %d [MQTT-3.3.4-7]",
				ErrReceiveMaximumExceeded, n+1, limit)
		}
	}
	s.rxUnacked.Add(1)
	if qos == 2 {
		s.mu.Lock()
		s.allocMaps()
		s.awaitingRel[id] = flowCounted
		s.mu.Unlock()
	}
	return false, nil
}

// refusePublish answers a 5.0 QoS 1/2 PUBLISH the server does not accept
// with a PUBACK or PUBREC carrying code (0x80 or above) and, when the
// client wants problem information, reason: that ends the flow, for QoS 2
// too [MQTT-4.3.3-4], and the message is dropped.
func (s *Session) refusePublish(qos byte, id uint16, code packets.ReasonCode, reason string) {
	props := s.reasonProperties(reason)
	switch qos {
	case 1:
		s.rxUnacked.Add(-1)
		s.sendAck(&packets.Puback{PacketID: id, ReasonCode: code, Properties: props})
	case 2:
		s.mu.Lock()
		if s.awaitingRel[id]&flowCounted != 0 {
			s.rxUnacked.Add(-1)
		}
		delete(s.awaitingRel, id)
		s.mu.Unlock()
		s.sendAck(&packets.Pubrec{PacketID: id, ReasonCode: code, Properties: props})
	}
}

func (s *Session) onPubrel(id uint16) {
	s.mu.Lock()
	st, known := s.awaitingRel[id]
	delete(s.awaitingRel, id)
	s.mu.Unlock()
	if st&flowCounted != 0 {
		s.rxUnacked.Add(-1) // the flow ends with this PUBCOMP
	}
	ack := &packets.Pubcomp{PacketID: id} // [MQTT-4.3.3-11]
	if !known && s.version == packets.Version5 {
		ack.ReasonCode = packets.PacketIdentifierNotFound // section 3.7.2.1
		ack.Properties = s.reasonProperties("no QoS 2 message awaits release with this packet identifier")
	}
	s.sendAck(ack)
}

func (s *Session) onPuback(id uint16) {
	s.mu.Lock()
	var done []broker.SharedDelivery
	if in, ok := s.inflight[id]; ok && in.qos == 1 {
		delete(s.inflight, id)
		if in.shared {
			done = []broker.SharedDelivery{s.sharedDelivery(in.outgoing)}
		}
	}
	s.mu.Unlock()
	s.sharedDone(done, false)
	s.signal()
}

func (s *Session) onPubrec(id uint16, code packets.ReasonCode) {
	s.mu.Lock()
	if code >= packets.UnspecifiedError && s.version == packets.Version5 {
		// A 5.0 PUBREC of 0x80 or above ends the flow: no PUBREL
		// [MQTT-4.3.3-4], the packet id is free again.
		if in, ok := s.inflight[id]; ok && in.qos == 2 {
			delete(s.inflight, id)
		}
		s.mu.Unlock()
		s.signal()
		return
	}
	if in, ok := s.inflight[id]; ok && in.qos == 2 {
		in.released = true // [MQTT-4.3.3-1] the PUBLISH is not re-sent after PUBREC
		s.inflight[id] = in
	}
	s.ctrl = s.appendAck(s.ctrl, &packets.Pubrel{PacketID: id})
	s.mu.Unlock()
	s.signal()
}

func (s *Session) onPubcomp(id uint16) {
	s.mu.Lock()
	if in, ok := s.inflight[id]; ok && in.qos == 2 {
		delete(s.inflight, id)
	}
	s.mu.Unlock()
	s.signal()
}

func (s *Session) onSubscribe(ctx context.Context, p *packets.Subscribe) error {
	cfg := &s.env.Config
	codes := make([]packets.ReasonCode, len(p.Subscriptions))
	want := make([]broker.Subscription, 0, len(p.Subscriptions))
	at := make([]int, 0, len(p.Subscriptions)) // index in codes of each of want
	v5 := s.version == packets.Version5
	var id uint32 // [MQTT-3.8.2.1.2] one per SUBSCRIBE, 0 (a protocol error) refused by the reader
	if p.Properties != nil && len(p.Properties.SubscriptionIdentifiers) > 0 {
		id = p.Properties.SubscriptionIdentifiers[0]
	}
	// refuse sets the SUBACK code of filter i: 3.1.1 has only 0x80; 5.0
	// says why (section 3.9.3), and the packet's Reason String (there is
	// one per packet, not per filter) tells the first refusal.
	var why string
	refuse := func(i int, code5 packets.ReasonCode, reason string) {
		if v5 {
			codes[i] = code5
			if why == "" {
				why = fmt.Sprintf("filter %d refused: %s", i+1, reason)
			}
		}
	}
	for i, sub := range p.Subscriptions {
		codes[i] = packets.SubackFailure
		if err := topics.ValidateFilter(sub.Filter); err != nil {
			s.logger().Info("subscription refused", "filter", truncate(sub.Filter), "reason", err.Error())
			refuse(i, packets.TopicFilterInvalid, err.Error())
			continue
		}
		// A Shared Subscription, from 5.0 and 3.1.1 clients alike (as
		// Mosquitto and EMQX accept it): a valid ShareName and filter
		// [MQTT-4.8.2-1] [MQTT-4.8.2-2]; the ACL reads its filter.
		aclFilter := sub.Filter
		if _, plain, shared, err := topics.ParseShared(sub.Filter); shared {
			if err != nil {
				s.logger().Info("subscription refused", "filter", truncate(sub.Filter), "reason", err.Error())
				refuse(i, packets.TopicFilterInvalid, err.Error())
				continue
			}
			aclFilter = plain
		}
		if err := topics.CheckLimits(sub.Filter, cfg.MaxTopicLength, cfg.MaxTopicLevels); err != nil {
			s.logger().Info("subscription refused", "filter", truncate(sub.Filter), "reason", err.Error())
			s.env.Stats.SubscribeRefused.Add(1)
			refuse(i, packets.TopicFilterInvalid, err.Error())
			continue
		}
		if !s.env.Auth.CanSubscribe(s.clientID, s.username, aclFilter) {
			s.env.Stats.SubscribeDenied.Add(1)
			s.logger().Info("subscription refused by ACL", "filter", sub.Filter)
			refuse(i, packets.NotAuthorized, "not authorized")
			continue
		}
		want = append(want, broker.Subscription{Filter: sub.Filter, QoS: min(sub.QoS, 2), Options: broker.SubOptions{
			NoLocal: sub.NoLocal, RetainAsPublished: sub.RetainAsPublished, RetainHandling: sub.RetainHandling, ID: id}})
		at = append(at, i)
	}
	if cfg.MaxSubscriptions > 0 {
		// A filter already held, or already granted in this packet,
		// replaces that subscription [MQTT-3.8.4-3] and counts once.
		allowed, kept := want[:0], at[:0]
		var fresh map[string]struct{}
		s.mu.Lock()
		held := len(s.subs)
		for k, w := range want {
			_, had := s.subs[w.Filter]
			_, dup := fresh[w.Filter]
			if !had && !dup {
				if held+len(fresh) >= cfg.MaxSubscriptions {
					s.logger().Info("subscription refused", "filter", truncate(w.Filter),
						"reason", fmt.Sprintf("client holds %d subscriptions, the -max-subscriptions-per-client limit", held+len(fresh)))
					s.env.Stats.SubscribeRefused.Add(1)
					refuse(at[k], packets.QuotaExceeded, fmt.Sprintf("more than %d subscriptions", cfg.MaxSubscriptions))
					continue
				}
				if fresh == nil {
					fresh = make(map[string]struct{})
				}
				fresh[w.Filter] = struct{}{}
			}
			allowed, kept = append(allowed, w), append(kept, at[k])
		}
		s.mu.Unlock()
		want, at = allowed, kept
	}
	// Retain Handling 1 sends retained messages only to a subscription
	// that did not exist before this SUBSCRIBE [MQTT-3.3.1-10].
	existed := make([]bool, len(want))
	s.mu.Lock()
	for k, w := range want {
		_, existed[k] = s.subs[w.Filter]
	}
	s.mu.Unlock()
	ok := make([]bool, len(want))
	if len(want) > 1 {
		if err := s.env.Broker.SubscribeMany(ctx, s.clientID, want); err != nil {
			s.logger().Error("subscribe", "filters", len(want), "err", err)
		} else {
			for k := range ok {
				ok[k] = true
			}
		}
	} else {
		for k, w := range want {
			if err := s.env.Broker.SubscribeMany(ctx, s.clientID, want[k:k+1]); err != nil {
				s.logger().Error("subscribe", "filter", w.Filter, "err", err)
				continue
			}
			ok[k] = true
		}
	}
	var granted []packets.Subscription // those that get retained messages
	s.mu.Lock()
	s.allocMaps()
	for k, w := range want {
		if !ok[k] {
			codes[at[k]] = packets.SubackFailure
			continue
		}
		s.subs[w.Filter] = w.QoS // [MQTT-3.8.4-3] replaces an identical filter
		s.setOptionsLocked(w.Filter, w.Options)
		codes[at[k]] = packets.GrantedQoS(w.QoS)
		// No retained messages on a Shared Subscription (section 4.8.2;
		// section 3.3.1.3 sends them for a new non-shared one).
		if sendsRetained(w.Options, existed[k]) && !isShared(w.Filter) {
			granted = append(granted, packets.Subscription{Filter: w.Filter, QoS: w.QoS})
		}
	}
	s.mu.Unlock()
	s.sendSubackAndRetained(ctx, p.PacketID, codes, granted, id, why)
	return nil
}

// sendSubackAndRetained queues the SUBACK [MQTT-3.8.4-1] with one code per
// filter [MQTT-3.9.3-1], then the retained messages of the granted filters
// [MQTT-3.3.1-6]. Their first page is read before the SUBACK is queued, so
// it holds the retained messages of the moment the subscription was made;
// live messages arriving meanwhile wait and go after it (see retained.go).
// reason, when not empty, is the 5.0 SUBACK's Reason String; subID is the
// SUBSCRIBE's Subscription Identifier, 0 for none.
func (s *Session) sendSubackAndRetained(ctx context.Context, id uint16, codes []packets.ReasonCode, granted []packets.Subscription, subID uint32, reason string) {
	s.mu.Lock()
	hold := len(granted) > 0 && !s.fetching
	if hold {
		s.fetching = true
	}
	s.mu.Unlock()
	feeds := s.retainedFeeds(ctx, granted)
	for _, f := range feeds {
		f.subID = subID
	}
	s.mu.Lock()
	s.ctrl = s.appendAck(s.ctrl, &packets.Suback{PacketID: id, ReturnCodes: codes, Properties: s.reasonProperties(reason)})
	s.startFeedsLocked(ctx, feeds)
	if hold && !s.feeding {
		s.releaseHeldLocked()
	}
	s.unlockAndWrite()
}

// truncate shortens a filter for a log line: a refused one may be 64 KiB.
func truncate(f string) string {
	const max = 120
	if len(f) <= max {
		return f
	}
	return fmt.Sprintf("%s…(%d bytes)", f[:max], len(f))
}

func (s *Session) onUnsubscribe(ctx context.Context, p *packets.Unsubscribe) error {
	var codes []packets.ReasonCode // 5.0: one per filter [MQTT-3.11.3-1]
	if s.version == packets.Version5 {
		codes = make([]packets.ReasonCode, len(p.Filters))
	}
	for i, f := range p.Filters {
		s.mu.Lock()
		_, had := s.subs[f]
		delete(s.subs, f)
		delete(s.subOpts, f)
		s.cancelFeedLocked(f) // [MQTT-3.10.4-2] no more messages for it
		s.mu.Unlock()
		if !had {
			if codes != nil {
				codes[i] = packets.NoSubscriptionExisted
			}
			continue
		}
		if err := s.env.Broker.Unsubscribe(ctx, s.clientID, f); err != nil {
			s.logger().Error("unsubscribe", "filter", f, "err", err)
		}
	}
	// [MQTT-3.10.4-4] UNSUBACK always, even when nothing matched [MQTT-3.10.4-5].
	s.sendAck(&packets.Unsuback{PacketID: p.PacketID, ReasonCodes: codes})
	return nil
}
