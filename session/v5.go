package session

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/bridgemq/server/broker"
	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/topics"
)

// What this file holds: the MQTT 5.0 parts of the connection's life that
// 3.1.1 does not have: the CONNACK's statement of the server's limits, the
// 5.0 Reason Codes of refusals, and the DISCONNECT a 5.0 server sends
// before it closes a connection.

// ErrTopicAliasInvalid ends a 5.0 connection whose PUBLISH carries a Topic
// Alias above the Topic Alias Maximum CONNACK gave it [MQTT-3.3.2-9]
// (section 3.2.2.3.8): DISCONNECT 0x94. An alias of 0 [MQTT-3.3.2-8] is
// refused by the packet reader with the same code.
var ErrTopicAliasInvalid = errors.New("topic alias invalid")

// ErrReceiveMaximumExceeded ends a 5.0 connection that has more QoS 1 and
// 2 PUBLISH packets unacknowledged than the Receive Maximum CONNACK gave
// it [MQTT-3.3.4-7]: DISCONNECT 0x93.
var ErrReceiveMaximumExceeded = errors.New("receive maximum exceeded")

// conn5 is what a 5.0 CONNECT asked of the connection, and the state of
// the features it enables. The zero value is a 3.1.1 connection's.
type conn5 struct {
	// maxPacket is the client's Maximum Packet Size: nothing larger is
	// sent to it [MQTT-3.1.2-24]; 0 = no limit but the protocol's.
	maxPacket int
	// problemInfo is the client's Request Problem Information: without it
	// no Reason String goes on anything but CONNACK and DISCONNECT
	// [MQTT-3.1.2-29].
	problemInfo bool
	// aliasesIn maps the Topic Aliases the client set to their topics;
	// made on first use, per connection [MQTT-3.3.2-7]. Reader only.
	aliasesIn map[uint16]string
	// aliasMaxOut is how many Topic Aliases the server uses towards the
	// client: the client's Topic Alias Maximum [MQTT-3.3.2-11], at most
	// Config.TopicAliasMaximum; aliasesOut the topics it has given one,
	// under Session.mu.
	aliasMaxOut uint16
	aliasesOut  map[string]uint16
}

// isShared reports whether filter is a Shared Subscription (section
// 4.8.2).
func isShared(filter string) bool { return topics.IsShared(filter) }

// errDisconnectWithWill ends a connection the client closed with
// DISCONNECT 0x04: the will is published (section 3.14.2.1).
var errDisconnectWithWill = errors.New("client sent DISCONNECT with will message")

// connect5 applies what a 5.0 CONNECT asks of the session and returns the
// CONNACK properties that state the server's limits (section 3.2.2.3).
//
// Sessions: Clean Start and the Session Expiry Interval ask two things
// apart. Clean Start 1 discards any stored session and starts a new one
// [MQTT-3.1.2-4]; Clean Start 0 resumes the stored one, if any
// [MQTT-3.1.2-5]. A Session Expiry Interval above 0 keeps the session,
// new or resumed, for that interval once the connection ends, at most
// -session-expiry, and CONNACK states the bound when it is shorter than
// what was asked (section 3.2.2.3.2); an interval of 0 (or none) ends the
// session with the connection [MQTT-3.1.2-23], a resumed one included.
// s.cleanStart carries the first, s.clean (the session ends with the
// connection) the second.
func (s *Session) connect5(c *packets.Connect) *packets.Properties {
	cfg := &s.env.Config
	var expiry uint32
	s.v5.problemInfo = true // the default of Request Problem Information (section 3.1.2.11.7)
	if cp := c.Properties; cp != nil {
		if cp.SessionExpiryInterval != nil {
			expiry = *cp.SessionExpiryInterval
		}
		if rm := cp.ReceiveMaximum; rm != nil && int(*rm) < s.maxInflight {
			// [MQTT-3.3.4-9] no more unacknowledged QoS 1/2 PUBLISH
			// packets than the client's Receive Maximum.
			s.maxInflight = int(*rm)
		}
		if mp := cp.MaximumPacketSize; mp != nil && uint64(*mp) <= packets.MaxRemainingLength+5 {
			s.v5.maxPacket = int(*mp) // [MQTT-3.1.2-24]
		}
		if rp := cp.RequestProblemInformation; rp != nil {
			s.v5.problemInfo = *rp == 1
		}
		if am := cp.TopicAliasMaximum; am != nil {
			// [MQTT-3.1.2-26] never more aliases than the client takes; and
			// no more than the server takes from a client, which bounds
			// the topics a connection keeps for them.
			s.v5.aliasMaxOut = uint16(min(int(*am), cfg.TopicAliasMaximum))
		}
	}
	s.clean = expiry == 0 // [MQTT-3.1.2-23]; s.cleanStart is the CONNECT's flag
	s.connectExpiry = expiry
	if !s.clean && expiry != math.MaxUint32 {
		s.expiry = sessionExpiry(expiry, cfg.SessionExpiry)
	}
	one := byte(1)
	p := &packets.Properties{
		// The server's Receive Maximum is its inflight window, and is
		// enforced on the client [MQTT-3.3.4-7] (openInbound).
		ReceiveMaximum: ptr(uint16(serverReceiveMaximum(cfg))),
		// Maximum QoS is omitted: QoS 2 is served [MQTT-3.2.2-9].
		RetainAvailable: &one,
		// The client may use aliases 1 to -topic-alias-maximum
		// [MQTT-3.3.2-12]; 0 says it may use none (section 3.2.2.3.8).
		TopicAliasMaximum:               ptr(uint16(cfg.TopicAliasMaximum)),
		WildcardSubscriptionAvailable:   &one,
		SubscriptionIdentifierAvailable: &one, // [MQTT-3.3.4-3]
		SharedSubscriptionAvailable:     &one, // section 4.8.2, single node and across replicas
	}
	if ka := cfg.ServerKeepAlive; ka > 0 && s.keepAlive != ka {
		// [MQTT-3.2.2-21] the client uses the Server Keep Alive instead of
		// its own [MQTT-3.1.2-21], 0 included; so does the server.
		p.ServerKeepAlive = ptr(uint16(min(ka/time.Second, math.MaxUint16)))
		s.keepAlive = ka
	}
	if cfg.MaxPacketSize > 0 && cfg.MaxPacketSize <= packets.MaxRemainingLength {
		// -max-packet-size bounds the Remaining Length, which is less than
		// the whole packet this property counts: nothing within the
		// announcement is refused.
		p.MaximumPacketSize = ptr(uint32(cfg.MaxPacketSize))
	}
	// Section 3.2.2.3.2: the interval the server uses, when not the
	// client's.
	capped := cfg.SessionExpiry > 0 && (expiry == math.MaxUint32 || time.Duration(expiry)*time.Second > cfg.SessionExpiry)
	if expiry > 0 && capped {
		p.SessionExpiryInterval = ptr(uint32(min(cfg.SessionExpiry/time.Second, math.MaxUint32-1)))
	}
	return p
}

// serverReceiveMaximum is the Receive Maximum CONNACK gives a 5.0 client:
// the server's inflight window, -max-inflight (section 3.2.2.3.3).
func serverReceiveMaximum(cfg *Config) int { return max(1, min(cfg.MaxInflight, math.MaxUint16)) }

// responseInformation answers a CONNECT's Request Response Information of
// 1 (section 3.1.2.11.6; with 0 or none, none is returned [MQTT-3.1.2-28])
// with a topic prefix the client may build response
// topics on: "resp/<client id>/". The server grants nothing with it: the
// ACL still decides who may publish and subscribe there. None is returned
// for a client id that would make it an invalid topic (a wildcard in it),
// or a string too long.
func (s *Session) responseInformation(c *packets.Connect, p *packets.Properties) {
	if c.Properties == nil || c.Properties.RequestResponseInformation == nil || *c.Properties.RequestResponseInformation != 1 {
		return
	}
	info := "resp/" + s.clientID + "/"
	if strings.ContainsAny(s.clientID, "+#") || len(info) > math.MaxUint16 {
		return
	}
	p.ResponseInformation = info
}

// resolveAlias applies the Topic Alias of an inbound 5.0 PUBLISH (section
// 3.3.2.3.4) and takes it off the packet: the alias is the connection's,
// never the message's, so nothing downstream sees it. With a topic it
// sets the alias; with an empty topic it is replaced by the alias's.
func (s *Session) resolveAlias(p *packets.Publish) error {
	alias := *p.Properties.TopicAlias
	p.Properties.TopicAlias = nil
	if limit := s.env.Config.TopicAliasMaximum; int(alias) > limit {
		return fmt.Errorf("%w: topic alias %d is above the Topic Alias Maximum %d [MQTT-3.3.2-9]", ErrTopicAliasInvalid, alias, limit)
	}
	if p.Topic != "" {
		if s.v5.aliasesIn == nil {
			s.v5.aliasesIn = make(map[uint16]string)
		}
		s.v5.aliasesIn[alias] = p.Topic
		return nil
	}
	topic, ok := s.v5.aliasesIn[alias]
	if !ok {
		// "It is a Protocol Error" to use an alias with no mapping on the
		// connection (section 3.3.2.3.4); mappings do not outlive the
		// connection [MQTT-3.3.2-7].
		return fmt.Errorf("%w: topic alias %d with an empty topic name, and no topic set for it on this connection (section 3.3.2.3.4)",
			ErrProtocolViolation, alias)
	}
	p.Topic = topic
	return nil
}

// sessionExpiry is how long a session asking for seconds is kept: that,
// at most limit (0 = no limit).
func sessionExpiry(seconds uint32, limit time.Duration) time.Duration {
	d := time.Duration(seconds) * time.Second
	if limit > 0 && d > limit {
		return limit
	}
	return d
}

// onDisconnect5 applies the Session Expiry Interval of a 5.0 DISCONNECT
// (section 3.14.2.2.2): 0 ends the session with the connection, another
// value replaces the CONNECT's, whatever its Clean Start; one above 0
// after a CONNECT's 0 is a protocol error [MQTT-3.14.2-2].
func (s *Session) onDisconnect5(p *packets.Disconnect) error {
	if p.Properties == nil || p.Properties.SessionExpiryInterval == nil {
		return nil
	}
	v := *p.Properties.SessionExpiryInterval
	if s.connectExpiry == 0 && v != 0 {
		return fmt.Errorf("%w: DISCONNECT sets a session expiry after CONNECT's 0 [MQTT-3.14.2-2]", ErrProtocolViolation)
	}
	s.mu.Lock() // the retained feeder reads clean under it
	defer s.mu.Unlock()
	if s.clean || v == 0 {
		s.clean = true // [MQTT-3.1.2-23] the session ends with the connection
		return nil
	}
	s.expiry = 0
	if v != math.MaxUint32 {
		s.expiry = sessionExpiry(v, s.env.Config.SessionExpiry)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// connackCode5 turns a 3.1.1 CONNACK return code, as the authorizer and the
// handshake give them, into the 5.0 Reason Code of the same refusal
// (section 3.2.2.2); 5.0 codes pass unchanged.
func connackCode5(c packets.ReasonCode) packets.ReasonCode {
	switch c {
	case packets.RefusedProtocolVersion:
		return packets.UnsupportedProtocolVersion
	case packets.RefusedIdentifierRejected:
		return packets.ClientIdentifierNotValid
	case packets.RefusedServerUnavailable:
		return packets.ServerUnavailable
	case packets.RefusedBadUsernamePassword:
		return packets.BadUserNameOrPassword
	case packets.RefusedNotAuthorized:
		return packets.NotAuthorized
	}
	return c
}

// disconnectCode returns the Reason Code of the DISCONNECT a 5.0 server
// sends before closing a connection that ends for reason (section
// 3.14.2.1), and false when none is sent: the client ended it, or the
// socket failed.
func disconnectCode(reason error) (packets.ReasonCode, bool) {
	switch {
	case reason == nil, errors.Is(reason, errClientDisconnect), errors.Is(reason, errDisconnectWithWill):
		return 0, false
	case errors.Is(reason, ErrTakenOver):
		return packets.SessionTakenOver, true // [MQTT-3.1.4-3]
	case errors.Is(reason, ErrServerShutdown):
		return packets.ServerShuttingDown, true
	case errors.Is(reason, ErrKeepAliveExpired):
		return packets.KeepAliveTimeout, true
	case errors.Is(reason, ErrTopicAliasInvalid):
		return packets.TopicAliasInvalid, true
	case errors.Is(reason, ErrReceiveMaximumExceeded):
		return packets.ReceiveMaximumExceeded, true
	case errors.Is(reason, ErrProtocolViolation):
		return packets.ProtocolError, true
	case errors.Is(reason, ErrLimit):
		return packets.ImplementationSpecificError, true
	}
	// Malformed 0x81, protocol error 0x82, packet too large 0x95.
	return packets.CodeOf(reason)
}

// disconnectWait bounds how long the DISCONNECT waits for a writer that is
// in the middle of a write; after it the connection closes without one.
const disconnectWait = 100 * time.Millisecond

// closeLinger is how long a connection the server ended with a DISCONNECT
// stays open for reading after its sending side is shut (lingerClose), and
// maxLingering how many may at once: past it a connection closes at once,
// so that clients that make the server end connections in a loop cannot
// hold its file descriptors.
const (
	closeLinger  = time.Second
	maxLingering = 1024
)

// lingering counts the connections of this process in lingerClose.
var lingering atomic.Int64

// sendDisconnect writes a 5.0 DISCONNECT for reason, when one is due and
// the writer lets it in: it takes the write turn and keeps it, so nothing
// follows the DISCONNECT [MQTT-3.14.4-1]. Called by stop, before the close;
// it reports whether the DISCONNECT was written.
func (s *Session) sendDisconnect(reason error) bool {
	code, ok := disconnectCode(reason)
	if !ok {
		return false
	}
	t := time.NewTimer(disconnectWait)
	defer t.Stop()
	select {
	case s.wturn <- struct{}{}:
	case <-t.C:
		s.debug("DISCONNECT not sent: a write holds the socket", "reason_code", code)
		return false
	}
	// Before the accepting CONNACK is out, a refusal is a CONNACK; s.version
	// is set before connacked.
	if !s.connacked.Load() || s.version != packets.Version5 {
		return false
	}
	// A Reason String goes on a DISCONNECT whatever the client asked
	// [MQTT-3.1.2-29], unless it would make the packet too large for the
	// client [MQTT-3.14.2-3].
	d := &packets.Disconnect{ReasonCode: code, Properties: &packets.Properties{ReasonString: refusalReason(code, reason)}}
	if ref := s.env.Config.ServerReference; code == packets.ServerShuttingDown && ref != "" {
		// The replica drains: the client is told where to go instead
		// (section 4.11).
		d.ReasonCode, d.Properties.ServerReference = packets.UseAnotherServer, ref
		d.Properties.ReasonString = "this server is draining; use " + ref
	}
	buf, err := s.encode(nil, d)
	if err != nil {
		return false
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(disconnectWait))
	if _, err := s.conn.Write(buf); err != nil {
		s.debug("DISCONNECT not sent", "reason_code", code, "err", err)
		return false
	}
	return true
}

// lingerClose ends a connection after the server's DISCONNECT without
// resetting it, where the socket allows: its sending side is shut (the
// client reads the DISCONNECT, then the end of the stream), the reader is
// woken, and the socket closes closeLinger later. Closed at once, a socket
// with unread input (the rest of a packet too large, a malformed one, a
// PINGREQ the client sent meanwhile) is reset: the client's next write
// fails, and a client that handles that error first (paho.golang does)
// never reads the DISCONNECT's reason code. It reports false, for an
// immediate close, when the connection cannot be half-closed (WebSocket)
// or maxLingering connections linger already.
func (s *Session) lingerClose() bool {
	closeWrite := closeWriter(s.conn)
	if closeWrite == nil {
		return false
	}
	if lingering.Add(1) > maxLingering || closeWrite() != nil {
		lingering.Add(-1)
		return false
	}
	_ = s.conn.SetReadDeadline(time.Now())
	time.AfterFunc(closeLinger, func() {
		_ = s.conn.Close()
		lingering.Add(-1)
	})
	return true
}

// closeWriter returns what shuts the sending side of c, if it has one: a
// TCP or TLS connection, also behind the PROXY protocol or the server's
// byte counter; nil for any other.
func closeWriter(c net.Conn) func() error {
	for {
		switch v := c.(type) {
		case interface{ CloseWrite() error }:
			return v.CloseWrite
		case interface{ TCPConn() (*net.TCPConn, bool) }: // PROXY protocol
			if t, ok := v.TCPConn(); ok {
				return t.CloseWrite
			}
			return nil
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
}

// messageProperties keeps the properties of a 5.0 PUBLISH or will that
// travel with the message (section 3.3.2.3); nil when it has none. The
// Topic Alias and Subscription Identifiers are the connection's, not the
// message's, and Will Delay Interval is the will's.
func messageProperties(p *packets.Properties) *broker.Properties {
	if p == nil || (p.PayloadFormatIndicator == nil && p.MessageExpiryInterval == nil && p.ContentType == "" &&
		p.ResponseTopic == "" && len(p.CorrelationData) == 0 && len(p.UserProperties) == 0) {
		return nil
	}
	m := &broker.Properties{
		PayloadFormat:   p.PayloadFormatIndicator,
		MessageExpiry:   p.MessageExpiryInterval,
		ContentType:     p.ContentType,
		ResponseTopic:   p.ResponseTopic,
		CorrelationData: p.CorrelationData,
	}
	if len(p.UserProperties) > 0 {
		m.UserProperties = make([]broker.UserProperty, len(p.UserProperties))
		for i, u := range p.UserProperties {
			m.UserProperties[i] = broker.UserProperty{Name: u.Name, Value: u.Value}
		}
	}
	return m
}

// publishProperties are the properties of a PUBLISH carrying msg to a 5.0
// client: the message's own, unchanged [MQTT-3.3.2-4] [MQTT-3.3.2-17]
// [MQTT-3.3.2-18], with what remains of its Message Expiry Interval
// [MQTT-3.3.2-6]. nil for a 3.1.1 client and for a message without any.
func (s *Session) publishProperties(msg *broker.Message, remaining uint32) *packets.Properties {
	mp := msg.Properties
	if mp == nil || s.version != packets.Version5 {
		return nil
	}
	p := &packets.Properties{
		PayloadFormatIndicator: mp.PayloadFormat,
		ContentType:            mp.ContentType,
		ResponseTopic:          mp.ResponseTopic,
		CorrelationData:        mp.CorrelationData,
	}
	if mp.MessageExpiry != nil {
		p.MessageExpiryInterval = &remaining
	}
	if len(mp.UserProperties) > 0 {
		p.UserProperties = make([]packets.UserProperty, len(mp.UserProperties))
		for i, u := range mp.UserProperties {
			p.UserProperties[i] = packets.UserProperty{Name: u.Name, Value: u.Value}
		}
	}
	return p
}

// maxReasonString bounds the Reason Strings the server sends, in bytes:
// they are for a person reading a log, not for the wire's 64 KiB.
const maxReasonString = 256

// reasonProperties are the properties of an acknowledgement that refuses
// something, carrying reason as its Reason String: nil for a 3.1.1 client,
// and for a 5.0 client that asked for no problem information, which gets
// a Reason String on CONNACK and DISCONNECT only [MQTT-3.1.2-29].
func (s *Session) reasonProperties(reason string) *packets.Properties {
	if s.version != packets.Version5 || !s.v5.problemInfo || reason == "" {
		return nil
	}
	return &packets.Properties{ReasonString: reasonString(reason)}
}

// refusalReason is the Reason String of a CONNACK or DISCONNECT that
// refuses or ends a connection for err with code: what the client did
// wrong, from err; for refusals whose cause is the server's business
// (credentials, the ACL, Redis), only what the code says, so that nothing
// about the server's state or its other users leaks.
func refusalReason(code packets.ReasonCode, err error) string {
	switch code {
	case packets.ClientIdentifierNotValid:
		return "client identifier not allowed"
	case packets.BadUserNameOrPassword:
		return "bad user name or password"
	case packets.NotAuthorized:
		return "not authorized"
	case packets.ServerUnavailable:
		return "server unavailable, try again later"
	case packets.SessionTakenOver:
		return "session taken over by another connection"
	case packets.ServerShuttingDown:
		return "server shutting down"
	}
	if err == nil {
		return ""
	}
	return reasonString(err.Error())
}

// reasonString makes text a Reason String: well-formed UTF-8 without
// control characters (section 1.5.4), at most maxReasonString bytes.
func reasonString(text string) string {
	text = strings.Map(func(r rune) rune {
		if r < 0x20 || (r >= 0x7F && r <= 0x9F) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, text)
	if len(text) <= maxReasonString {
		return text
	}
	cut := maxReasonString
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return text[:cut]
}

// encode appends p, a packet other than an outgoing message, in the
// connection's protocol version. A 5.0 packet larger than the client's
// Maximum Packet Size loses its Reason String and User Properties
// (sections 3.2.2.3.9, 3.4.2.2.2 and the like: "MUST NOT send this property
// if it would increase the size ... beyond the Maximum Packet Size"); if it
// is still larger, nothing is appended and the error wraps
// packets.ErrPacketTooLarge: the server must not send it [MQTT-3.1.2-24].
func (s *Session) encode(dst []byte, p packets.Packet) ([]byte, error) {
	if s.version != packets.Version5 {
		return packets.Append(dst, p)
	}
	out, err := packets.Append5(dst, p)
	if err != nil || s.v5.maxPacket == 0 || len(out)-len(dst) <= s.v5.maxPacket {
		return out, err
	}
	if props := diagnosticProperties(p); props != nil && (props.ReasonString != "" || len(props.UserProperties) > 0) {
		props.ReasonString, props.UserProperties = "", nil
		out, err = packets.Append5(out[:len(dst)], p)
		if err != nil || len(out)-len(dst) <= s.v5.maxPacket {
			return out, err
		}
	}
	return dst, fmt.Errorf("%T of %d bytes, over the client's Maximum Packet Size of %d [MQTT-3.1.2-24]: %w",
		p, len(out)-len(dst), s.v5.maxPacket, packets.ErrPacketTooLarge)
}

// diagnosticProperties returns the properties of p where the server puts
// Reason Strings; nil for other packets.
func diagnosticProperties(p packets.Packet) *packets.Properties {
	switch p := p.(type) {
	case *packets.Connack:
		return p.Properties
	case *packets.Puback:
		return p.Properties
	case *packets.Pubrec:
		return p.Properties
	case *packets.Pubrel:
		return p.Properties
	case *packets.Pubcomp:
		return p.Properties
	case *packets.Suback:
		return p.Properties
	case *packets.Unsuback:
		return p.Properties
	case *packets.Disconnect:
		return p.Properties
	}
	return nil
}

// shapesPublish reports whether outgoing PUBLISH packets need
// shapePublishLocked: the client set a Maximum Packet Size or takes Topic
// Aliases.
func (c *conn5) shapesPublish() bool { return c.maxPacket > 0 || c.aliasMaxOut > 0 }

// shapePublishLocked fits an outgoing PUBLISH to what the 5.0 client
// asked: when the client takes Topic Aliases, it gives the topic one where
// the PUBLISH so formed fits the client's Maximum Packet Size. It reports
// false for one that does not fit with or without an alias, which is not
// to be sent [MQTT-3.1.2-24] but dropped as if it had been [MQTT-3.1.2-25].
// The size measured is that of the packet as it will be sent, alias and
// all. s.mu is held; the PUBLISH is written next.
func (s *Session) shapePublishLocked(p *packets.Publish) bool {
	if s.v5.aliasMaxOut > 0 && s.aliasLocked(p) {
		return true
	}
	return s.v5.maxPacket == 0 || packets.PublishSize5(p) <= s.v5.maxPacket
}

// aliasLocked gives p's topic a Topic Alias (section 3.3.2.3.4) and
// reports whether it did. The first aliases go to the first topics sent,
// for the connection's life: the first PUBLISH of a topic carries the
// topic and sets its alias, the later ones an empty topic and the alias.
// Once the client's Topic Alias Maximum is used up, other topics go in
// full: no alias above it is ever sent [MQTT-3.3.2-11]. A PUBLISH whose
// aliased form would exceed the client's Maximum Packet Size gets no alias
// (and sets none): its form with the full topic may still fit, as it does
// for a topic of under 3 bytes. The mapping is made here, so p must be
// sent when it returns true: s.mu is held and fill writes p next.
func (s *Session) aliasLocked(p *packets.Publish) bool {
	alias, known := s.v5.aliasesOut[p.Topic]
	if !known {
		if len(s.v5.aliasesOut) >= int(s.v5.aliasMaxOut) {
			return false
		}
		alias = uint16(len(s.v5.aliasesOut) + 1)
	}
	topic, props := p.Topic, p.Properties
	if p.Properties == nil {
		p.Properties = &packets.Properties{}
	}
	p.Properties.TopicAlias = &alias
	if known {
		p.Topic = ""
	}
	if s.v5.maxPacket > 0 && packets.PublishSize5(p) > s.v5.maxPacket {
		p.Topic = topic
		if props == nil {
			p.Properties = nil
		} else {
			p.Properties.TopicAlias = nil
		}
		return false
	}
	if !known {
		if s.v5.aliasesOut == nil {
			s.v5.aliasesOut = make(map[string]uint16)
		}
		s.v5.aliasesOut[topic] = alias
	}
	return true
}
