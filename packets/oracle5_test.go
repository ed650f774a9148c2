package packets

// The MQTT 5.0 oracle: paho.golang's packets, converted to this package's
// model. paho.golang reads properties unconditionally, so it serves 5.0 only.
//
// Where paho.golang and the specification differ, the tests follow the
// specification; paho.golang is more lenient in these ways, each of which
// the native decoder refuses:
//
//   - bytes after the last field (trailing bytes) are ignored, and a
//     Property Length beyond the body is cut short silently (section 2.2.2.1);
//   - a Variable Byte Integer may run past four bytes (section 1.5.5);
//   - a property given twice is accepted, the last value kept (section
//     2.2.2.2 and every property's "It is a Protocol Error to include ...
//     more than once"); of several Subscription Identifiers it keeps only
//     the last, where a PUBLISH may carry several [MQTT-3.3.4-3];
//   - forbidden values are accepted: Receive Maximum, Maximum Packet Size,
//     Topic Alias [MQTT-3.3.2-8] or Subscription Identifier 0, a 0-or-1
//     property above 1, QoS 3 and Retain Handling 3 in subscription
//     options, a Reason Code the packet type does not define
//     ([MQTT-3.4.2-1] and the like), packet id 0 [MQTT-2.2.1-3];
//   - reserved bits are not checked: CONNECT flag bit 0 [MQTT-3.1.2-3],
//     CONNACK flags bits 7-1 [MQTT-3.2.2-1], subscription options bits 6-7
//     [MQTT-3.8.3-5], and the will QoS/retain rules [MQTT-3.1.2-11],
//     [MQTT-3.1.2-13]; nor DUP on QoS 0 [MQTT-3.3.1-2];
//   - UTF-8 strings are not validated [MQTT-1.5.4-1], [MQTT-1.5.4-2];
//   - SUBSCRIBE, UNSUBSCRIBE, SUBACK and UNSUBACK may have no payload
//     [MQTT-3.8.3-2], [MQTT-3.10.3-2]; an empty topic filter is accepted
//     [MQTT-4.7.3-1]; No Local on a shared subscription is accepted
//     [MQTT-3.8.3-4];
//   - Will Properties are checked against the CONNECT set (its own comment
//     says so): Will Delay Interval in CONNECT properties, or Session
//     Expiry in Will Properties, pass (sections 3.1.2.11, 3.1.3.2).
//
// paho.golang is stricter in two ways. It reads every CONNECT as 5.0, so
// the oracle is asked only about level 5. And it refuses a DISCONNECT of
// Remaining Length 0, which section 3.14.2.1 allows ("the DISCONNECT has a
// Remaining Length of 0"): pahoStricter lists it. (Its AUTH accepts the
// same short form.)

import (
	"bytes"
	"fmt"
	"reflect"

	paho5 "github.com/eclipse/paho.golang/packets"
)

// pahoUnpack5 decodes a body with paho.golang's Unpack. A panic inside
// paho.golang counts as a refusal.
func pahoUnpack5(h fixedHeader, body []byte) (cp *paho5.ControlPacket, err error) {
	defer func() {
		if r := recover(); r != nil {
			cp, err = nil, fmt.Errorf("paho.golang panicked: %v", r)
		}
	}()
	cp = paho5.NewControlPacket(byte(h.typ))
	if cp == nil {
		return nil, fmt.Errorf("paho.golang: no packet type %d", h.typ)
	}
	if pub, ok := cp.Content.(*paho5.Publish); ok {
		pub.QoS, pub.Duplicate, pub.Retain = h.qos(), h.dup(), h.retain()
	}
	if err := cp.Content.Unpack(bytes.NewBuffer(body)); err != nil {
		return nil, err
	}
	return cp, nil
}

// fromPaho5 converts a paho.golang packet to the model.
func fromPaho5(cp *paho5.ControlPacket) Packet {
	switch p := cp.Content.(type) {
	case *paho5.Connect:
		c := &Connect{ProtocolName: p.ProtocolName, ProtocolVersion: Version(p.ProtocolVersion), CleanSession: p.CleanStart,
			KeepAlive: p.KeepAlive, ClientID: p.ClientID, UsernameFlag: p.UsernameFlag, Username: p.Username,
			PasswordFlag: p.PasswordFlag, Properties: fromPahoProps(p.Properties)}
		if p.PasswordFlag {
			c.Password = cloneNonEmpty(p.Password)
		}
		if p.WillFlag {
			c.Will = &Will{Topic: p.WillTopic, Payload: cloneNonEmpty(p.WillMessage), QoS: p.WillQOS, Retain: p.WillRetain,
				Properties: fromPahoProps(p.WillProperties)}
		}
		return c
	case *paho5.Connack:
		return &Connack{SessionPresent: p.SessionPresent, ReturnCode: ReasonCode(p.ReasonCode), Properties: fromPahoProps(p.Properties)}
	case *paho5.Publish:
		return &Publish{Dup: p.Duplicate, QoS: p.QoS, Retain: p.Retain, Topic: p.Topic, PacketID: p.PacketID,
			Payload: cloneNonEmpty(p.Payload), Properties: fromPahoProps(p.Properties)}
	case *paho5.Puback:
		return &Puback{PacketID: p.PacketID, ReasonCode: ReasonCode(p.ReasonCode), Properties: fromPahoProps(p.Properties)}
	case *paho5.Pubrec:
		return &Pubrec{PacketID: p.PacketID, ReasonCode: ReasonCode(p.ReasonCode), Properties: fromPahoProps(p.Properties)}
	case *paho5.Pubrel:
		return &Pubrel{PacketID: p.PacketID, ReasonCode: ReasonCode(p.ReasonCode), Properties: fromPahoProps(p.Properties)}
	case *paho5.Pubcomp:
		return &Pubcomp{PacketID: p.PacketID, ReasonCode: ReasonCode(p.ReasonCode), Properties: fromPahoProps(p.Properties)}
	case *paho5.Subscribe:
		s := &Subscribe{PacketID: p.PacketID, Properties: fromPahoProps(p.Properties)}
		for _, o := range p.Subscriptions {
			s.Subscriptions = append(s.Subscriptions, Subscription{Filter: o.Topic, QoS: o.QoS, NoLocal: o.NoLocal,
				RetainAsPublished: o.RetainAsPublished, RetainHandling: o.RetainHandling})
		}
		return s
	case *paho5.Suback:
		return &Suback{PacketID: p.PacketID, ReturnCodes: codesOf(p.Reasons), Properties: fromPahoProps(p.Properties)}
	case *paho5.Unsubscribe:
		return &Unsubscribe{PacketID: p.PacketID, Filters: p.Topics, Properties: fromPahoProps(p.Properties)}
	case *paho5.Unsuback:
		return &Unsuback{PacketID: p.PacketID, ReasonCodes: codesOf(p.Reasons), Properties: fromPahoProps(p.Properties)}
	case *paho5.Pingreq:
		return &Pingreq{}
	case *paho5.Pingresp:
		return &Pingresp{}
	case *paho5.Disconnect:
		return &Disconnect{ReasonCode: ReasonCode(p.ReasonCode), Properties: fromPahoProps(p.Properties)}
	case *paho5.Auth:
		return &Auth{ReasonCode: ReasonCode(p.ReasonCode), Properties: fromPahoProps(p.Properties)}
	}
	panic(fmt.Sprintf("fromPaho5: %T", cp.Content))
}

func codesOf(b []byte) []ReasonCode {
	if len(b) == 0 {
		return nil
	}
	codes := make([]ReasonCode, len(b))
	for i, c := range b {
		codes[i] = ReasonCode(c)
	}
	return codes
}

// fromPahoProps converts paho.golang's properties; an empty set is nil, as
// the native decoder gives it.
func fromPahoProps(pp *paho5.Properties) *Properties {
	if pp == nil {
		return nil
	}
	p := &Properties{
		PayloadFormatIndicator: pp.PayloadFormat, MessageExpiryInterval: pp.MessageExpiry, ContentType: pp.ContentType,
		ResponseTopic: pp.ResponseTopic, CorrelationData: cloneNonEmpty(pp.CorrelationData),
		SessionExpiryInterval: pp.SessionExpiryInterval, AssignedClientIdentifier: pp.AssignedClientID,
		ServerKeepAlive: pp.ServerKeepAlive, AuthenticationMethod: pp.AuthMethod, AuthenticationData: cloneNonEmpty(pp.AuthData),
		RequestProblemInformation: pp.RequestProblemInfo, WillDelayInterval: pp.WillDelayInterval,
		RequestResponseInformation: pp.RequestResponseInfo, ResponseInformation: pp.ResponseInfo,
		ServerReference: pp.ServerReference, ReasonString: pp.ReasonString, ReceiveMaximum: pp.ReceiveMaximum,
		TopicAliasMaximum: pp.TopicAliasMaximum, TopicAlias: pp.TopicAlias, MaximumQoS: pp.MaximumQOS,
		RetainAvailable: pp.RetainAvailable, MaximumPacketSize: pp.MaximumPacketSize,
		WildcardSubscriptionAvailable: pp.WildcardSubAvailable, SubscriptionIdentifierAvailable: pp.SubIDAvailable,
		SharedSubscriptionAvailable: pp.SharedSubAvailable,
	}
	if pp.SubscriptionIdentifier != nil {
		p.SubscriptionIdentifiers = []uint32{uint32(*pp.SubscriptionIdentifier)}
	}
	for _, u := range pp.User {
		p.UserProperties = append(p.UserProperties, UserProperty{Name: u.Key, Value: u.Value})
	}
	if reflect.ValueOf(*p).IsZero() {
		return nil
	}
	return p
}

// lastSubscriptionIdentifier reduces a packet's Subscription Identifiers
// to the last one, the one paho.golang keeps, for comparison.
func lastSubscriptionIdentifier(p Packet) Packet {
	pub, ok := p.(*Publish)
	if !ok || pub.Properties == nil || len(pub.Properties.SubscriptionIdentifiers) < 2 {
		return p
	}
	c, props := *pub, *pub.Properties
	ids := props.SubscriptionIdentifiers
	props.SubscriptionIdentifiers = ids[len(ids)-1:]
	c.Properties = &props
	return &c
}

// stringsValid reports whether every string field of v, at any depth, is
// one the decoder accepts [MQTT-1.5.4-1], [MQTT-1.5.4-2]: the one value rule
// Append5 does not check on the way out.
func stringsValid(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		return checkUTF8([]byte(v.String())) == nil
	case reflect.Pointer, reflect.Interface:
		return v.IsNil() || stringsValid(v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			if !stringsValid(v.Field(i)) {
				return false
			}
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return true
		}
		for i := range v.Len() {
			if !stringsValid(v.Index(i)) {
				return false
			}
		}
	}
	return true
}
