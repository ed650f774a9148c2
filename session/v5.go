package session

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/bridgemq/server/bridge"
	"github.com/bridgemq/server/packets"
)

// What this file holds: the MQTT 5.0 parts of the connection's life that
// 3.1.1 does not have: the CONNACK's statement of the server's limits, the
// 5.0 Reason Codes of refusals, and the DISCONNECT a 5.0 server sends
// before it closes a connection.

// ErrTopicAliasInvalid ends a 5.0 connection whose PUBLISH carries a Topic
// Alias: this server announces Topic Alias Maximum 0 (section 3.2.2.3.8), so
// any alias is beyond it [MQTT-3.3.2-9].
var ErrTopicAliasInvalid = errors.New("topic alias invalid")

// ErrSubscriptionIdentifiers ends a 5.0 connection whose SUBSCRIBE carries
// a Subscription Identifier: CONNACK says they are not available (section
// 3.8.2.1.2), and the DISCONNECT says 0xA1.
var ErrSubscriptionIdentifiers = errors.New("subscription identifiers not supported")

// isShared reports whether filter is a Shared Subscription (section
// 4.8.2), which this server does not serve yet.
func isShared(filter string) bool { return strings.HasPrefix(filter, "$share/") }

// errDisconnectWithWill ends a connection the client closed with
// DISCONNECT 0x04: the will is published (section 3.14.2.1).
var errDisconnectWithWill = errors.New("client sent DISCONNECT with will message")

// connect5 applies what a 5.0 CONNECT asks of the session and returns the
// CONNACK properties that state the server's limits (section 3.2.2.3).
//
// Sessions: a 5.0 session outlives its connection when the client asks for
// both Clean Start 0 and a Session Expiry Interval above 0; it is then kept
// for that interval [MQTT-3.1.2-23], at most -session-expiry, and CONNACK
// states the bound when it is shorter than what was asked. Clean Start 1
// with an interval above 0 ends the session with the connection (the
// bridge cannot yet discard a session and keep the new one), and CONNACK
// says 0 (section 3.2.2.3.2); an interval of 0 ends it anyway
// [MQTT-3.1.2-23].
func (s *Session) connect5(c *packets.Connect) *packets.Properties {
	cfg := &s.env.Config
	var expiry uint32
	if c.Properties != nil {
		if c.Properties.SessionExpiryInterval != nil {
			expiry = *c.Properties.SessionExpiryInterval
		}
		if rm := c.Properties.ReceiveMaximum; rm != nil && int(*rm) < s.maxInflight {
			// [MQTT-3.3.4-9] no more unacknowledged QoS 1/2 PUBLISH
			// packets than the client's Receive Maximum.
			s.maxInflight = int(*rm)
		}
	}
	s.clean = c.CleanSession || expiry == 0
	s.connectExpiry = expiry
	if !s.clean && expiry != math.MaxUint32 {
		s.expiry = sessionExpiry(expiry, cfg.SessionExpiry)
	}
	one, zero := byte(1), byte(0)
	aliases := uint16(0)
	p := &packets.Properties{
		// The server's Receive Maximum is its inflight window.
		ReceiveMaximum: ptr(uint16(min(cfg.MaxInflight, math.MaxUint16))),
		// Maximum QoS is omitted: QoS 2 is served [MQTT-3.2.2-9].
		RetainAvailable: &one,
		// Topic aliases are not supported yet: none may be used.
		TopicAliasMaximum:               &aliases,
		WildcardSubscriptionAvailable:   &one,
		SubscriptionIdentifierAvailable: &zero,
		SharedSubscriptionAvailable:     &zero,
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
	switch {
	case expiry > 0 && s.clean:
		p.SessionExpiryInterval = ptr(uint32(0))
	case expiry > 0 && capped:
		p.SessionExpiryInterval = ptr(uint32(min(cfg.SessionExpiry/time.Second, math.MaxUint32-1)))
	}
	return p
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
// value replaces the CONNECT's; one above 0 after a CONNECT's 0 is a
// protocol error [MQTT-3.14.2-2].
func (s *Session) onDisconnect5(p *packets.Disconnect) error {
	if p.Properties == nil || p.Properties.SessionExpiryInterval == nil {
		return nil
	}
	v := *p.Properties.SessionExpiryInterval
	if s.connectExpiry == 0 && v != 0 {
		return fmt.Errorf("%w: DISCONNECT sets a session expiry after CONNECT's 0 [MQTT-3.14.2-2]", ErrProtocolViolation)
	}
	if s.clean {
		return nil // a Clean Start session is not kept (see connect5)
	}
	if v == 0 {
		s.clean = true // [MQTT-3.1.2-23] the session ends with the connection
		return nil
	}
	s.mu.Lock()
	s.expiry = 0
	if v != math.MaxUint32 {
		s.expiry = sessionExpiry(v, s.env.Config.SessionExpiry)
	}
	s.mu.Unlock()
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
	case errors.Is(reason, ErrSubscriptionIdentifiers):
		return packets.SubscriptionIdentifiersNotSupported, true
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

// sendDisconnect writes a 5.0 DISCONNECT for reason, when one is due and
// the writer lets it in: it takes the write turn and keeps it, so nothing
// follows the DISCONNECT [MQTT-3.14.4-1]. Called by stop, before the close.
func (s *Session) sendDisconnect(reason error) {
	code, ok := disconnectCode(reason)
	if !ok {
		return
	}
	t := time.NewTimer(disconnectWait)
	defer t.Stop()
	select {
	case s.wturn <- struct{}{}:
	case <-t.C:
		return
	}
	// Before the accepting CONNACK is out, a refusal is a CONNACK; s.version
	// is set before connacked.
	if !s.connacked.Load() || s.version != packets.Version5 {
		return
	}
	buf, err := packets.Append5(nil, &packets.Disconnect{ReasonCode: code})
	if err != nil {
		return
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(disconnectWait))
	_, _ = s.conn.Write(buf)
}

// messageProperties keeps the properties of a 5.0 PUBLISH or will that
// travel with the message (section 3.3.2.3); nil when it has none. The
// Topic Alias and Subscription Identifiers are the connection's, not the
// message's, and Will Delay Interval is the will's.
func messageProperties(p *packets.Properties) *bridge.Properties {
	if p == nil || (p.PayloadFormatIndicator == nil && p.MessageExpiryInterval == nil && p.ContentType == "" &&
		p.ResponseTopic == "" && len(p.CorrelationData) == 0 && len(p.UserProperties) == 0) {
		return nil
	}
	m := &bridge.Properties{
		PayloadFormat:   p.PayloadFormatIndicator,
		MessageExpiry:   p.MessageExpiryInterval,
		ContentType:     p.ContentType,
		ResponseTopic:   p.ResponseTopic,
		CorrelationData: p.CorrelationData,
	}
	if len(p.UserProperties) > 0 {
		m.UserProperties = make([]bridge.UserProperty, len(p.UserProperties))
		for i, u := range p.UserProperties {
			m.UserProperties[i] = bridge.UserProperty{Name: u.Name, Value: u.Value}
		}
	}
	return m
}

// publishProperties are the properties of a PUBLISH carrying msg to a 5.0
// client: the message's own, unchanged [MQTT-3.3.2-4] [MQTT-3.3.2-17]
// [MQTT-3.3.2-18], with what remains of its Message Expiry Interval
// [MQTT-3.3.2-6]. nil for a 3.1.1 client and for a message without any.
func (s *Session) publishProperties(msg *bridge.Message, remaining uint32) *packets.Properties {
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
