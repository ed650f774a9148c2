package packets

import "fmt"

// PropertyID is the identifier that starts each MQTT 5.0 property (section
// 2.2.2.2, Table 2-4). It is a Variable Byte Integer on the wire; every
// defined identifier fits in its first byte.
type PropertyID byte

// The MQTT 5.0 properties.
const (
	PropPayloadFormatIndicator          PropertyID = 0x01
	PropMessageExpiryInterval           PropertyID = 0x02
	PropContentType                     PropertyID = 0x03
	PropResponseTopic                   PropertyID = 0x08
	PropCorrelationData                 PropertyID = 0x09
	PropSubscriptionIdentifier          PropertyID = 0x0B
	PropSessionExpiryInterval           PropertyID = 0x11
	PropAssignedClientIdentifier        PropertyID = 0x12
	PropServerKeepAlive                 PropertyID = 0x13
	PropAuthenticationMethod            PropertyID = 0x15
	PropAuthenticationData              PropertyID = 0x16
	PropRequestProblemInformation       PropertyID = 0x17
	PropWillDelayInterval               PropertyID = 0x18
	PropRequestResponseInformation      PropertyID = 0x19
	PropResponseInformation             PropertyID = 0x1A
	PropServerReference                 PropertyID = 0x1C
	PropReasonString                    PropertyID = 0x1F
	PropReceiveMaximum                  PropertyID = 0x21
	PropTopicAliasMaximum               PropertyID = 0x22
	PropTopicAlias                      PropertyID = 0x23
	PropMaximumQoS                      PropertyID = 0x24
	PropRetainAvailable                 PropertyID = 0x25
	PropUserProperty                    PropertyID = 0x26
	PropMaximumPacketSize               PropertyID = 0x27
	PropWildcardSubscriptionAvailable   PropertyID = 0x28
	PropSubscriptionIdentifierAvailable PropertyID = 0x29
	PropSharedSubscriptionAvailable     PropertyID = 0x2A
)

// MaxSubscriptionIdentifier is the largest Subscription Identifier, the
// largest Variable Byte Integer (section 3.8.2.1.2).
const MaxSubscriptionIdentifier = MaxRemainingLength

// UserProperty is one name/value pair of the User Property (section
// 1.5.7). A packet may carry any number of them, in an order that is kept,
// with repeated names [MQTT-3.3.2-18].
type UserProperty struct {
	Name, Value string
}

// Properties are the MQTT 5.0 properties of one packet, or of a will. The
// optional numeric properties are pointers, nil when absent, since zero is
// a meaningful value for most of them; a string or binary property is
// absent when empty. (An empty string or binary property on the wire
// decodes as absent, so it does not survive a round trip: Append leaves it
// out.) Which properties a packet type may carry is checked by the Reader
// and by Append.
type Properties struct {
	PayloadFormatIndicator *byte   // 0 unspecified bytes, 1 UTF-8; PUBLISH, will
	MessageExpiryInterval  *uint32 // seconds; PUBLISH, will
	ContentType            string  // PUBLISH, will
	ResponseTopic          string  // PUBLISH, will
	CorrelationData        []byte  // PUBLISH, will
	// SubscriptionIdentifiers: one in a SUBSCRIBE; in a PUBLISH a server
	// sends, one per matching subscription that has one [MQTT-3.3.4-3].
	// Each is 1..MaxSubscriptionIdentifier.
	SubscriptionIdentifiers         []uint32
	SessionExpiryInterval           *uint32 // seconds; CONNECT, CONNACK, DISCONNECT
	AssignedClientIdentifier        string  // CONNACK
	ServerKeepAlive                 *uint16 // seconds; CONNACK
	AuthenticationMethod            string  // CONNECT, CONNACK, AUTH
	AuthenticationData              []byte  // CONNECT, CONNACK, AUTH
	RequestProblemInformation       *byte   // 0 or 1; CONNECT
	WillDelayInterval               *uint32 // seconds; will
	RequestResponseInformation      *byte   // 0 or 1; CONNECT
	ResponseInformation             string  // CONNACK
	ServerReference                 string  // CONNACK, DISCONNECT
	ReasonString                    string  // acknowledgements, DISCONNECT, AUTH
	ReceiveMaximum                  *uint16 // not 0; CONNECT, CONNACK
	TopicAliasMaximum               *uint16 // CONNECT, CONNACK
	TopicAlias                      *uint16 // not 0; PUBLISH
	MaximumQoS                      *byte   // 0 or 1; CONNACK
	RetainAvailable                 *byte   // 0 or 1; CONNACK
	UserProperties                  []UserProperty
	MaximumPacketSize               *uint32 // not 0; CONNECT, CONNACK
	WildcardSubscriptionAvailable   *byte   // 0 or 1; CONNACK
	SubscriptionIdentifierAvailable *byte   // 0 or 1; CONNACK
	SharedSubscriptionAvailable     *byte   // 0 or 1; CONNACK
}

// propertySet is a set of PropertyIDs, one bit each; every identifier is
// below 64.
type propertySet uint64

func props(ids ...PropertyID) propertySet {
	var s propertySet
	for _, id := range ids {
		s |= 1 << id
	}
	return s
}

// willProperties is the pseudo packet type whose allowed set is the Will
// Properties of a CONNECT (section 3.1.3.2).
const willProperties Type = 0

// allowedProperties is Table 2-4 read by packet type: a property outside
// its packet's set is a Malformed Packet (section 2.2.2.2). PINGREQ and
// PINGRESP carry no properties.
var allowedProperties = [16]propertySet{
	willProperties: props(PropPayloadFormatIndicator, PropMessageExpiryInterval, PropContentType,
		PropResponseTopic, PropCorrelationData, PropWillDelayInterval, PropUserProperty),
	TypeConnect: props(PropSessionExpiryInterval, PropAuthenticationMethod, PropAuthenticationData,
		PropRequestProblemInformation, PropRequestResponseInformation, PropReceiveMaximum,
		PropTopicAliasMaximum, PropUserProperty, PropMaximumPacketSize),
	TypeConnack: props(PropSessionExpiryInterval, PropAssignedClientIdentifier, PropServerKeepAlive,
		PropAuthenticationMethod, PropAuthenticationData, PropResponseInformation, PropServerReference,
		PropReasonString, PropReceiveMaximum, PropTopicAliasMaximum, PropMaximumQoS, PropRetainAvailable,
		PropUserProperty, PropMaximumPacketSize, PropWildcardSubscriptionAvailable,
		PropSubscriptionIdentifierAvailable, PropSharedSubscriptionAvailable),
	TypePublish: props(PropPayloadFormatIndicator, PropMessageExpiryInterval, PropContentType,
		PropResponseTopic, PropCorrelationData, PropSubscriptionIdentifier, PropTopicAlias, PropUserProperty),
	TypePuback:      props(PropReasonString, PropUserProperty),
	TypePubrec:      props(PropReasonString, PropUserProperty),
	TypePubrel:      props(PropReasonString, PropUserProperty),
	TypePubcomp:     props(PropReasonString, PropUserProperty),
	TypeSubscribe:   props(PropSubscriptionIdentifier, PropUserProperty),
	TypeSuback:      props(PropReasonString, PropUserProperty),
	TypeUnsubscribe: props(PropUserProperty),
	TypeUnsuback:    props(PropReasonString, PropUserProperty),
	TypeDisconnect: props(PropSessionExpiryInterval, PropServerReference, PropReasonString,
		PropUserProperty),
	TypeAuth: props(PropAuthenticationMethod, PropAuthenticationData, PropReasonString, PropUserProperty),
}

// where names the packet a property list belongs to, for error messages.
func where(t Type) string {
	if t == willProperties {
		return "will properties"
	}
	return t.String()
}

// decodeProperties reads a Property Length and the properties it covers
// (section 2.2.2) for a packet of type t (willProperties for a will). An
// empty list gives nil. Strings and binary data are copied: the body may be
// the Reader's reusable buffer.
func decodeProperties(s *scanner, t Type) (*Properties, error) {
	n, err := s.varint("property length")
	if err != nil {
		return nil, err
	}
	if n > s.remaining() {
		return nil, s.malformed("property length %d exceeds the %d bytes left", n, s.remaining())
	}
	if n == 0 {
		return nil, nil
	}
	ps := scanner{b: s.b[s.off : s.off+n], typ: s.typ}
	s.off += n
	p := &Properties{}
	var seen propertySet
	for ps.remaining() > 0 {
		b, err := ps.byte("property identifier")
		if err != nil {
			return nil, err
		}
		id := PropertyID(b)
		// Identifiers are Variable Byte Integers; none defined needs a
		// second byte, so a continuation bit is an unknown identifier.
		if b >= 64 || allowedProperties[t]&(1<<id) == 0 {
			return nil, ps.malformed("property 0x%02x is not allowed in %s (section 2.2.2.2)", b, where(t))
		}
		if seen&(1<<id) != 0 && id != PropUserProperty && !(id == PropSubscriptionIdentifier && t == TypePublish) {
			return nil, ps.protocol("property 0x%02x appears twice in %s", b, where(t))
		}
		seen |= 1 << id
		if err := p.decodeOne(&ps, id); err != nil {
			return nil, err
		}
	}
	if p.set() == 0 {
		return nil, nil // only empty strings or binary data, which decode as absent
	}
	return p, nil
}

// decodeOne reads the value of property id into p and checks the value
// rules of its section.
func (p *Properties) decodeOne(s *scanner, id PropertyID) error {
	switch id {
	case PropPayloadFormatIndicator:
		return s.flagProp(&p.PayloadFormatIndicator, "payload format indicator")
	case PropRequestProblemInformation:
		return s.flagProp(&p.RequestProblemInformation, "request problem information")
	case PropRequestResponseInformation:
		return s.flagProp(&p.RequestResponseInformation, "request response information")
	case PropMaximumQoS:
		return s.flagProp(&p.MaximumQoS, "maximum QoS")
	case PropRetainAvailable:
		return s.flagProp(&p.RetainAvailable, "retain available")
	case PropWildcardSubscriptionAvailable:
		return s.flagProp(&p.WildcardSubscriptionAvailable, "wildcard subscription available")
	case PropSubscriptionIdentifierAvailable:
		return s.flagProp(&p.SubscriptionIdentifierAvailable, "subscription identifier available")
	case PropSharedSubscriptionAvailable:
		return s.flagProp(&p.SharedSubscriptionAvailable, "shared subscription available")
	case PropMessageExpiryInterval:
		return s.uint32Prop(&p.MessageExpiryInterval, "message expiry interval", false)
	case PropSessionExpiryInterval:
		return s.uint32Prop(&p.SessionExpiryInterval, "session expiry interval", false)
	case PropWillDelayInterval:
		return s.uint32Prop(&p.WillDelayInterval, "will delay interval", false)
	case PropMaximumPacketSize:
		// "It is a Protocol Error ... for it to be set to zero" (3.1.2.11.4).
		return s.uint32Prop(&p.MaximumPacketSize, "maximum packet size", true)
	case PropServerKeepAlive:
		return s.uint16Prop(&p.ServerKeepAlive, "server keep alive", false)
	case PropReceiveMaximum:
		// "It is a Protocol Error ... for it to have the value 0" (3.1.2.11.3).
		return s.uint16Prop(&p.ReceiveMaximum, "receive maximum", true)
	case PropTopicAliasMaximum:
		return s.uint16Prop(&p.TopicAliasMaximum, "topic alias maximum", false)
	case PropTopicAlias:
		// A Topic Alias of 0 is not permitted [MQTT-3.3.2-8]: the receiver
		// answers DISCONNECT 0x94, not the Protocol Error of other zeros.
		if err := s.uint16Prop(&p.TopicAlias, "topic alias", false); err != nil {
			return err
		}
		if *p.TopicAlias == 0 {
			return fmt.Errorf("%w: %s: topic alias 0 [MQTT-3.3.2-8]", ErrTopicAliasInvalid, s.typ)
		}
		return nil
	case PropContentType:
		return s.strProp(&p.ContentType, "content type")
	case PropResponseTopic:
		return s.strProp(&p.ResponseTopic, "response topic")
	case PropAssignedClientIdentifier:
		return s.strProp(&p.AssignedClientIdentifier, "assigned client identifier")
	case PropAuthenticationMethod:
		return s.strProp(&p.AuthenticationMethod, "authentication method")
	case PropResponseInformation:
		return s.strProp(&p.ResponseInformation, "response information")
	case PropServerReference:
		return s.strProp(&p.ServerReference, "server reference")
	case PropReasonString:
		return s.strProp(&p.ReasonString, "reason string")
	case PropCorrelationData:
		v, err := s.binary("correlation data")
		p.CorrelationData = cloneNonEmpty(v)
		return err
	case PropAuthenticationData:
		v, err := s.binary("authentication data")
		p.AuthenticationData = cloneNonEmpty(v)
		return err
	case PropSubscriptionIdentifier:
		v, err := s.varint("subscription identifier")
		if err != nil {
			return err
		}
		if v == 0 {
			// "It is a Protocol Error if the Subscription Identifier has a
			// value of 0" (3.8.2.1.2).
			return s.protocol("subscription identifier 0")
		}
		p.SubscriptionIdentifiers = append(p.SubscriptionIdentifiers, uint32(v))
		return nil
	case PropUserProperty:
		// A UTF-8 String Pair (section 1.5.7) [MQTT-1.5.7-1].
		name, err := s.str("user property name")
		if err != nil {
			return err
		}
		value, err := s.str("user property value")
		if err != nil {
			return err
		}
		p.UserProperties = append(p.UserProperties, UserProperty{string(name), string(value)})
		return nil
	}
	return s.malformed("unknown property 0x%02x", byte(id))
}

// flagProp reads a one-byte property whose only values are 0 and 1: for
// all of them but the Payload Format Indicator the specification calls any
// other value a Protocol Error (3.1.2.11.6, 3.1.2.11.7, 3.2.2.3.4,
// 3.2.2.3.5, 3.2.2.3.11-13). The Payload Format Indicator defines only 0
// and 1 as well (3.3.2.3.2); another value is treated the same way.
func (s *scanner) flagProp(dst **byte, field string) error {
	v, err := s.byte(field)
	if err != nil {
		return err
	}
	if v > 1 {
		return s.protocol("%s %d, want 0 or 1", field, v)
	}
	*dst = &v
	return nil
}

func (s *scanner) uint16Prop(dst **uint16, field string, nonZero bool) error {
	v, err := s.uint16(field)
	if err != nil {
		return err
	}
	if nonZero && v == 0 {
		return s.protocol("%s 0", field)
	}
	*dst = &v
	return nil
}

func (s *scanner) uint32Prop(dst **uint32, field string, nonZero bool) error {
	if s.remaining() < 4 {
		return s.malformed("%s truncated", field)
	}
	b := s.b[s.off:]
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	s.off += 4
	if nonZero && v == 0 {
		return s.protocol("%s 0", field)
	}
	*dst = &v
	return nil
}

func (s *scanner) strProp(dst *string, field string) error {
	v, err := s.str(field)
	if err != nil {
		return err
	}
	*dst = string(v)
	return nil
}

// set returns the properties p holds, as Append writes them.
func (p *Properties) set() propertySet {
	if p == nil {
		return 0
	}
	var s propertySet
	add := func(id PropertyID, present bool) {
		if present {
			s |= 1 << id
		}
	}
	add(PropPayloadFormatIndicator, p.PayloadFormatIndicator != nil)
	add(PropMessageExpiryInterval, p.MessageExpiryInterval != nil)
	add(PropContentType, p.ContentType != "")
	add(PropResponseTopic, p.ResponseTopic != "")
	add(PropCorrelationData, len(p.CorrelationData) > 0)
	add(PropSubscriptionIdentifier, len(p.SubscriptionIdentifiers) > 0)
	add(PropSessionExpiryInterval, p.SessionExpiryInterval != nil)
	add(PropAssignedClientIdentifier, p.AssignedClientIdentifier != "")
	add(PropServerKeepAlive, p.ServerKeepAlive != nil)
	add(PropAuthenticationMethod, p.AuthenticationMethod != "")
	add(PropAuthenticationData, len(p.AuthenticationData) > 0)
	add(PropRequestProblemInformation, p.RequestProblemInformation != nil)
	add(PropWillDelayInterval, p.WillDelayInterval != nil)
	add(PropRequestResponseInformation, p.RequestResponseInformation != nil)
	add(PropResponseInformation, p.ResponseInformation != "")
	add(PropServerReference, p.ServerReference != "")
	add(PropReasonString, p.ReasonString != "")
	add(PropReceiveMaximum, p.ReceiveMaximum != nil)
	add(PropTopicAliasMaximum, p.TopicAliasMaximum != nil)
	add(PropTopicAlias, p.TopicAlias != nil)
	add(PropMaximumQoS, p.MaximumQoS != nil)
	add(PropRetainAvailable, p.RetainAvailable != nil)
	add(PropUserProperty, len(p.UserProperties) > 0)
	add(PropMaximumPacketSize, p.MaximumPacketSize != nil)
	add(PropWildcardSubscriptionAvailable, p.WildcardSubscriptionAvailable != nil)
	add(PropSubscriptionIdentifierAvailable, p.SubscriptionIdentifierAvailable != nil)
	add(PropSharedSubscriptionAvailable, p.SharedSubscriptionAvailable != nil)
	return s
}

// checkProperties enforces on the way out what decodeProperties enforces on
// the way in, and returns the length of the encoded properties, without
// the Property Length in front.
func checkProperties(p *Properties, t Type) (int, error) {
	if p == nil {
		return 0, nil
	}
	bad := func(format string, args ...any) (int, error) {
		return 0, fmt.Errorf("encoding %s: %w: %s", where(t), ErrMalformed, fmt.Sprintf(format, args...))
	}
	if extra := p.set() &^ allowedProperties[t]; extra != 0 {
		for id := PropertyID(0); id < 64; id++ {
			if extra&(1<<id) != 0 {
				return bad("property 0x%02x is not allowed (section 2.2.2.2)", byte(id))
			}
		}
	}
	if t != TypePublish && len(p.SubscriptionIdentifiers) > 1 {
		return bad("%d subscription identifiers", len(p.SubscriptionIdentifiers))
	}
	for _, f := range []*byte{p.PayloadFormatIndicator, p.RequestProblemInformation, p.RequestResponseInformation,
		p.MaximumQoS, p.RetainAvailable, p.WildcardSubscriptionAvailable, p.SubscriptionIdentifierAvailable,
		p.SharedSubscriptionAvailable} {
		if f != nil && *f > 1 {
			return bad("a property that is 0 or 1 is %d", *f)
		}
	}
	switch {
	case p.ReceiveMaximum != nil && *p.ReceiveMaximum == 0:
		return bad("receive maximum 0")
	case p.TopicAlias != nil && *p.TopicAlias == 0:
		return bad("topic alias 0 [MQTT-3.3.2-8]")
	case p.MaximumPacketSize != nil && *p.MaximumPacketSize == 0:
		return bad("maximum packet size 0")
	}
	for _, id := range p.SubscriptionIdentifiers {
		if id == 0 || id > MaxSubscriptionIdentifier {
			return bad("subscription identifier %d", id)
		}
	}
	for _, s := range []string{p.ContentType, p.ResponseTopic, p.AssignedClientIdentifier, p.AuthenticationMethod,
		p.ResponseInformation, p.ServerReference, p.ReasonString} {
		if len(s) > 0xFFFF {
			return bad("string property of %d bytes", len(s))
		}
	}
	if len(p.CorrelationData) > 0xFFFF || len(p.AuthenticationData) > 0xFFFF {
		return bad("binary property over 65,535 bytes")
	}
	for _, u := range p.UserProperties {
		if len(u.Name) > 0xFFFF || len(u.Value) > 0xFFFF {
			return bad("user property over 65,535 bytes")
		}
	}
	n := propertiesLen(p)
	if n > MaxRemainingLength {
		return bad("properties of %d bytes", n)
	}
	return n, nil
}

// propertiesLen is the length of the encoded properties of p, without the
// Property Length.
func propertiesLen(p *Properties) int {
	if p == nil {
		return 0
	}
	n := 0
	if p.PayloadFormatIndicator != nil {
		n += 2
	}
	if p.MessageExpiryInterval != nil {
		n += 5
	}
	n += strPropLen(p.ContentType) + strPropLen(p.ResponseTopic) + strPropLen(p.CorrelationData)
	for _, id := range p.SubscriptionIdentifiers {
		n += 1 + varintLen(int(id))
	}
	if p.SessionExpiryInterval != nil {
		n += 5
	}
	n += strPropLen(p.AssignedClientIdentifier)
	if p.ServerKeepAlive != nil {
		n += 3
	}
	n += strPropLen(p.AuthenticationMethod) + strPropLen(p.AuthenticationData)
	if p.RequestProblemInformation != nil {
		n += 2
	}
	if p.WillDelayInterval != nil {
		n += 5
	}
	if p.RequestResponseInformation != nil {
		n += 2
	}
	n += strPropLen(p.ResponseInformation) + strPropLen(p.ServerReference) + strPropLen(p.ReasonString)
	if p.ReceiveMaximum != nil {
		n += 3
	}
	if p.TopicAliasMaximum != nil {
		n += 3
	}
	if p.TopicAlias != nil {
		n += 3
	}
	if p.MaximumQoS != nil {
		n += 2
	}
	if p.RetainAvailable != nil {
		n += 2
	}
	for _, u := range p.UserProperties {
		n += 5 + len(u.Name) + len(u.Value)
	}
	if p.MaximumPacketSize != nil {
		n += 5
	}
	for _, f := range []*byte{p.WildcardSubscriptionAvailable, p.SubscriptionIdentifierAvailable, p.SharedSubscriptionAvailable} {
		if f != nil {
			n += 2
		}
	}
	return n
}

func strPropLen[S string | []byte](s S) int {
	if len(s) == 0 {
		return 0
	}
	return 3 + len(s)
}

// appendProperties appends the Property Length n (from propertiesLen) and
// the properties of p, in ascending identifier order: the canonical form
// Append writes. User properties keep their order, as do subscription
// identifiers.
func appendProperties(dst []byte, p *Properties, n int) []byte {
	dst = appendRemainingLength(dst, n)
	if p == nil {
		return dst
	}
	dst = appendByteProp(dst, PropPayloadFormatIndicator, p.PayloadFormatIndicator)
	dst = appendUint32Prop(dst, PropMessageExpiryInterval, p.MessageExpiryInterval)
	dst = appendStrProp(dst, PropContentType, p.ContentType)
	dst = appendStrProp(dst, PropResponseTopic, p.ResponseTopic)
	dst = appendStrProp(dst, PropCorrelationData, p.CorrelationData)
	for _, id := range p.SubscriptionIdentifiers {
		dst = appendRemainingLength(append(dst, byte(PropSubscriptionIdentifier)), int(id))
	}
	dst = appendUint32Prop(dst, PropSessionExpiryInterval, p.SessionExpiryInterval)
	dst = appendStrProp(dst, PropAssignedClientIdentifier, p.AssignedClientIdentifier)
	dst = appendUint16Prop(dst, PropServerKeepAlive, p.ServerKeepAlive)
	dst = appendStrProp(dst, PropAuthenticationMethod, p.AuthenticationMethod)
	dst = appendStrProp(dst, PropAuthenticationData, p.AuthenticationData)
	dst = appendByteProp(dst, PropRequestProblemInformation, p.RequestProblemInformation)
	dst = appendUint32Prop(dst, PropWillDelayInterval, p.WillDelayInterval)
	dst = appendByteProp(dst, PropRequestResponseInformation, p.RequestResponseInformation)
	dst = appendStrProp(dst, PropResponseInformation, p.ResponseInformation)
	dst = appendStrProp(dst, PropServerReference, p.ServerReference)
	dst = appendStrProp(dst, PropReasonString, p.ReasonString)
	dst = appendUint16Prop(dst, PropReceiveMaximum, p.ReceiveMaximum)
	dst = appendUint16Prop(dst, PropTopicAliasMaximum, p.TopicAliasMaximum)
	dst = appendUint16Prop(dst, PropTopicAlias, p.TopicAlias)
	dst = appendByteProp(dst, PropMaximumQoS, p.MaximumQoS)
	dst = appendByteProp(dst, PropRetainAvailable, p.RetainAvailable)
	for _, u := range p.UserProperties {
		dst = appendString(appendString(append(dst, byte(PropUserProperty)), u.Name), u.Value)
	}
	dst = appendUint32Prop(dst, PropMaximumPacketSize, p.MaximumPacketSize)
	dst = appendByteProp(dst, PropWildcardSubscriptionAvailable, p.WildcardSubscriptionAvailable)
	dst = appendByteProp(dst, PropSubscriptionIdentifierAvailable, p.SubscriptionIdentifierAvailable)
	return appendByteProp(dst, PropSharedSubscriptionAvailable, p.SharedSubscriptionAvailable)
}

func appendByteProp(dst []byte, id PropertyID, v *byte) []byte {
	if v == nil {
		return dst
	}
	return append(dst, byte(id), *v)
}

func appendUint16Prop(dst []byte, id PropertyID, v *uint16) []byte {
	if v == nil {
		return dst
	}
	return append(dst, byte(id), byte(*v>>8), byte(*v))
}

func appendUint32Prop(dst []byte, id PropertyID, v *uint32) []byte {
	if v == nil {
		return dst
	}
	return append(dst, byte(id), byte(*v>>24), byte(*v>>16), byte(*v>>8), byte(*v))
}

func appendStrProp[S string | []byte](dst []byte, id PropertyID, v S) []byte {
	if len(v) == 0 {
		return dst
	}
	return appendString(append(dst, byte(id)), v)
}

// varintLen is the length of n as a Variable Byte Integer (section 1.5.5).
func varintLen(n int) int {
	switch {
	case n < 1<<7:
		return 1
	case n < 1<<14:
		return 2
	case n < 1<<21:
		return 3
	}
	return 4
}
