package session

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/topics"
)

// handshake reads and answers CONNECT. On refusal it returns the CONNACK to
// send (nil when the connection is to be closed without one) and the reason.
func (s *Session) handshake(ctx context.Context) (*packets.Connack, *broker.StoredSession, error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(s.env.Config.ConnectTimeout))
	p, err := s.r.ReadPacket()
	if c, ok := p.(*packets.Connect); ok && err != nil && c.ProtocolVersion == packets.Version5 && c.ProtocolName == packets.ProtocolNameMQTT {
		// A 5.0 CONNECT that is malformed or a protocol error gets a 5.0
		// CONNACK with the Reason Code of the error before the close
		// [MQTT-4.13.1-1] (section 4.13.1).
		s.version = packets.Version5
		code, ok := packets.CodeOf(err)
		if !ok {
			return nil, nil, fmt.Errorf("reading CONNECT: %w", err)
		}
		return &packets.Connack{ReturnCode: code}, nil, fmt.Errorf("CONNECT: %w", err)
	}
	if errors.Is(err, packets.ErrUnsupportedProtocol) {
		// [MQTT-3.1.2-2] an unsupported protocol level gets CONNACK 0x01.
		return &packets.Connack{ReturnCode: packets.RefusedProtocolVersion}, nil, fmt.Errorf("CONNECT: %w", err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading CONNECT: %w", err)
	}
	c, ok := p.(*packets.Connect)
	if !ok {
		// [MQTT-3.1.0-1] the first packet must be CONNECT.
		return nil, nil, fmt.Errorf("%w: first packet is type %d, not CONNECT [MQTT-3.1.0-1]", ErrProtocolViolation, p.Type())
	}
	s.version = c.ProtocolVersion
	s.r.SetVersion(c.ProtocolVersion)
	s.clean, s.cleanStart = c.CleanSession, c.CleanSession
	s.keepAlive = time.Duration(c.KeepAlive) * time.Second
	s.clientID = c.ClientID
	if c.UsernameFlag {
		s.username = c.Username
	}
	v5 := c.ProtocolVersion == packets.Version5
	var props5 *packets.Properties // the 5.0 CONNACK's properties
	if v5 {
		props5 = s.connect5(c)
		if c.Properties != nil && c.Properties.AuthenticationMethod != "" {
			// No enhanced authentication method is implemented: a CONNECT
			// asking for one is refused with 0x8C (section 4.12).
			return &packets.Connack{ReturnCode: packets.BadAuthenticationMethod}, nil,
				fmt.Errorf("authentication method %q is not supported", c.Properties.AuthenticationMethod)
		}
	}

	if re := s.env.Config.ClientIDPattern; re != nil && s.clientID != "" && !re.MatchString(s.clientID) {
		// [MQTT-3.1.3-9] the server may refuse a client id it does not allow.
		return &packets.Connack{ReturnCode: packets.RefusedIdentifierRejected}, nil,
			fmt.Errorf("client id %q does not match -client-id-pattern", s.clientID)
	}
	if s.clientID == "" {
		if !v5 && (!c.CleanSession || c.ProtocolVersion == packets.Version31) {
			// [MQTT-3.1.3-8] an empty id needs a clean session (3.1 needs an id).
			return &packets.Connack{ReturnCode: packets.RefusedIdentifierRejected}, nil,
				errors.New("empty client id without clean session [MQTT-3.1.3-8]")
		}
		s.clientID = "auto-" + uuid.NewString() // [MQTT-3.1.3-6]
		if v5 {
			// [MQTT-3.1.3-7] the assigned id is returned in CONNACK.
			props5.AssignedClientIdentifier = s.clientID
		}
	}

	if v5 {
		s.responseInformation(c, props5)
	}

	if c.Will != nil {
		// A 5.0 client is told with CONNACK 0x90 ("the Will Topic Name is
		// not malformed, but is not accepted by this Server", section
		// 3.2.2.2); 3.1.1 has no code for it, so that connection is closed
		// without one [MQTT-3.1.4-1].
		var refuse *packets.Connack
		if v5 {
			refuse = &packets.Connack{ReturnCode: packets.TopicNameInvalid}
		}
		if err := topics.ValidateTopicName(c.Will.Topic); err != nil {
			return refuse, nil, fmt.Errorf("%w: will topic: %w [MQTT-3.1.3-10]", ErrProtocolViolation, err)
		}
		if err := topics.CheckLimits(c.Will.Topic, s.env.Config.MaxTopicLength, s.env.Config.MaxTopicLevels); err != nil {
			return refuse, nil, fmt.Errorf("%w: will topic: %w", ErrLimit, err)
		}
		s.will = &broker.Message{
			Topic:    c.Will.Topic,
			Payload:  c.Will.Payload,
			QoS:      c.Will.QoS,
			Retain:   c.Will.Retain,
			ClientID: s.clientID,
			Node:     s.env.Config.NodeID,
			// Will properties travel as a PUBLISH's do (section 3.1.3.2);
			// its expiry counts from when it is published (publishWill
			// sets Time).
			Properties: messageProperties(c.Will.Properties),
		}
		if wp := c.Will.Properties; wp != nil && wp.WillDelayInterval != nil {
			s.will.WillDelay = s.willDelay(time.Duration(*wp.WillDelayInterval) * time.Second)
		}
	}

	if s.env.Identity != nil {
		// The connection proves who the user is; the CONNECT's
		// credentials are not asked about.
		name, err := s.env.Identity(s.conn)
		if err != nil {
			s.env.Stats.ConnectsDenied.Add(1)
			return &packets.Connack{ReturnCode: packets.RefusedNotAuthorized}, nil, fmt.Errorf("client identity: %w", err)
		}
		s.username = name
	} else if code := s.env.Auth.Authenticate(c.UsernameFlag, c.Username, c.PasswordFlag, c.Password); code != packets.Accepted {
		s.env.Stats.ConnectsDenied.Add(1)
		return &packets.Connack{ReturnCode: code}, nil, fmt.Errorf("authentication failed for user %q (CONNACK 0x%02x)", c.Username, code)
	}

	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// A will the ACL does not let this user publish is not handed to the
	// bridge either, so that no other replica publishes it for this one
	// (a survivor reaping a dead replica sends the wills it stored).
	will := s.will
	if will != nil && !s.env.Auth.CanWrite(s.clientID, s.username, will.Topic) {
		will = nil
	}
	life := broker.Lifetime{CleanStart: s.cleanStart, Persistent: !s.clean, Expiry: s.expiry}
	stored, err := s.env.Broker.Attach(actx, s.clientID, s.username, s, life, will)
	if errors.Is(err, broker.ErrNotOwner) {
		// A session belongs to the user that created it: another user may
		// neither resume it nor take its connection over.
		s.env.Stats.ConnectsDenied.Add(1)
		return &packets.Connack{ReturnCode: packets.RefusedNotAuthorized}, nil, fmt.Errorf("attach session: %w", err)
	}
	if err != nil {
		return &packets.Connack{ReturnCode: packets.RefusedServerUnavailable}, nil, fmt.Errorf("attach session: %w", err)
	}
	// [MQTT-3.2.2-1] [MQTT-3.2.2-2] Clean Start (clean session): session
	// present 0; [MQTT-3.2.2-3] a resumed session: 1, whether or not it
	// outlives this connection [MQTT-3.1.2-5]; no stored session: 0.
	present := !s.cleanStart && stored != nil
	return &packets.Connack{SessionPresent: present, Properties: props5}, stored, nil
}

// restore loads a resumed session: its subscriptions, its unacknowledged
// messages (re-sent with DUP=1 [MQTT-4.4.0-1]), its queued messages, ahead
// of anything delivered since Attach. The queued messages meet the read ACL
// when the writer sends them; an unacknowledged PUBLISH on a topic the
// client may no longer read is not re-sent (a PUBREL still is: the client
// already has that message).
func (s *Session) restore(stored *broker.StoredSession) {
	if stored == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.allocMaps()
	for f, q := range stored.Subscriptions {
		s.subs[f] = q
		s.setOptionsLocked(f, stored.Options[f])
	}
	for _, id := range stored.AwaitingRelease {
		s.awaitingRel[id] = flowAccepted
	}
	for _, in := range stored.Inflight {
		if !in.Released && !s.mayRead(in.Message.Topic) {
			continue
		}
		if !in.Released && s.v5.maxPacket > 0 && packets.PublishSize5(&packets.Publish{QoS: in.QoS, Topic: in.Message.Topic,
			Payload: in.Message.Payload, Properties: s.publishProperties(in.Message, 1)}) > s.v5.maxPacket {
			// Too large for the client's Maximum Packet Size: as if sent
			// and acknowledged [MQTT-3.1.2-25].
			s.env.Stats.DroppedTooLarge.Add(1)
			continue
		}
		s.seq++
		s.inflight[in.PacketID] = inflight{
			outgoing: outgoing{msg: in.Message, qos: in.QoS, retain: in.Retain},
			seq:      s.seq,
			released: in.Released,
		}
		if in.Released {
			s.ctrl = s.appendAck(s.ctrl, &packets.Pubrel{PacketID: in.PacketID})
		} else {
			// Onward delivery has begun: an expired in-flight message is
			// still re-sent [MQTT-3.3.2-5], with an expiry of what is left,
			// at least 1 s.
			_, remaining := in.Message.Expired(time.Now())
			p := &packets.Publish{
				Dup: true, QoS: in.QoS, Retain: in.Retain, Topic: in.Message.Topic,
				PacketID: in.PacketID, Payload: in.Message.Payload,
				Properties: s.publishProperties(in.Message, max(remaining, 1)),
			}
			if s.subOpts != nil {
				s.resendOptionsLocked(in.Message, p)
			}
			s.ctrl = s.appendPublish(s.ctrl, p)
		}
		if in.PacketID > s.nextID {
			s.nextID = in.PacketID
		}
	}
	if len(stored.Queued) > 0 {
		queued := make([]outgoing, 0, len(stored.Queued)+len(s.pending))
		for _, d := range stored.Queued {
			queued = append(queued, outgoing{msg: d.Message, qos: d.QoS, retain: d.Retain})
			s.queuedBytes += queuedSize(d.Message)
		}
		s.pending = append(queued, s.pending...)
	}
}

// snapshot hands over the session's state; later deliveries are refused
// (and kept by the bridge) so nothing falls between snapshot and Detach.
// shared lists the messages of the state that a shared subscription group
// handed this connection and that may go to another member (share.go).
func (s *Session) snapshot() (st *broker.StoredSession, shared []sharedEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.snapshotted = true
	st = &broker.StoredSession{Subscriptions: make(map[string]byte, len(s.subs)), Expiry: s.expiry}
	for f, q := range s.subs {
		st.Subscriptions[f] = q
	}
	st.Options = maps.Clone(s.subOpts)
	for id, rel := range s.awaitingRel {
		if rel&flowAccepted == 0 {
			continue // the client re-sends it: it was never acknowledged
		}
		st.AwaitingRelease = append(st.AwaitingRelease, id)
	}
	st.Inflight = make([]broker.Inflight, 0, len(s.inflight))
	for id, in := range s.inflight {
		st.Inflight = append(st.Inflight, broker.Inflight{
			PacketID: id,
			Delivery: broker.Delivery{Message: in.msg, QoS: in.qos, Retain: in.retain},
			Released: in.released,
		})
	}
	sortInflight(st.Inflight, s.inflight)
	for i, in := range st.Inflight {
		if o := s.inflight[in.PacketID]; handsBack(o.outgoing, true) {
			shared = append(shared, sharedEntry{group: s.groupOf(o.outgoing), inflight: true, index: i})
		}
	}
	for _, list := range [][]outgoing{s.pending, s.held} {
		for _, o := range list {
			if o.qos == 0 && o.shared {
				s.shareDropped = append(s.shareDropped, s.sharedDelivery(o))
			}
			if o.qos > 0 {
				if handsBack(o, false) {
					shared = append(shared, sharedEntry{group: s.groupOf(o), index: len(st.Queued)})
				}
				st.Queued = append(st.Queued, broker.Delivery{Message: o.msg, QoS: o.qos, Retain: o.retain})
			}
		}
	}
	s.pending, s.held, s.queuedBytes = nil, nil, 0
	s.leftoverFeeds = s.feeds
	s.feeds, s.retainedMarks = nil, nil
	return st, shared
}

// idPrefix makes message ids unique across processes; idCounter across the
// messages of this one. Cheaper than a random UUID per message.
var (
	idPrefix  = randomPrefix()
	idCounter atomic.Uint64
)

func randomPrefix() (p [8]byte) {
	u := uuid.New()
	copy(p[:], u[:8])
	return p
}

func newMessageID() broker.ID {
	var id broker.ID
	copy(id[:8], idPrefix[:])
	binary.BigEndian.PutUint64(id[8:], idCounter.Add(1))
	return id
}
