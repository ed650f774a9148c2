package packets

import "fmt"

// decodePublish is the fast path for the hot packet: topic name, packet id
// when QoS > 0, and the rest as payload (section 3.3). The payload is a fresh
// slice the caller owns, unless owned says body already belongs to the
// caller, in which case the payload is a view of it.
func decodePublish(h fixedHeader, body []byte, owned bool) (*Publish, error) {
	qos := h.qos()
	if qos == 0 && h.dup() {
		return nil, fmt.Errorf("%w: PUBLISH DUP must be 0 for QoS 0 [MQTT-3.3.1-2]", ErrMalformed)
	}
	if len(body) < 2 {
		return nil, fmt.Errorf("%w: PUBLISH topic name length truncated", ErrMalformed)
	}
	off := 2 + (int(body[0])<<8 | int(body[1]))
	if off > len(body) {
		return nil, fmt.Errorf("%w: PUBLISH topic name length %d exceeds the %d bytes left",
			ErrMalformed, off-2, len(body)-2)
	}
	topic := body[2:off]
	if err := checkUTF8(topic); err != nil {
		return nil, fmt.Errorf("PUBLISH topic name: %w", err)
	}
	var id uint16
	if qos > 0 {
		if len(body)-off < 2 {
			return nil, fmt.Errorf("%w: PUBLISH packet id truncated", ErrMalformed)
		}
		id = uint16(body[off])<<8 | uint16(body[off+1])
		if id == 0 {
			return nil, fmt.Errorf("%w: PUBLISH packet id must not be 0 [MQTT-2.3.1-1]", ErrMalformed)
		}
		off += 2
	}
	p := &Publish{Dup: h.dup(), QoS: qos, Retain: h.retain(), Topic: string(topic), PacketID: id}
	if payload := body[off:]; len(payload) > 0 {
		if owned {
			p.Payload = payload[:len(payload):len(payload)]
		} else {
			p.Payload = append(make([]byte, 0, len(payload)), payload...)
		}
	}
	return p, nil
}

// AppendPublish appends the encoding of p to dst and returns the extended
// slice. It is the hot path: it does not allocate when dst has room, so one
// outgoing PUBLISH can be encoded once and its bytes shared by every
// subscriber.
//
// It trusts p: the topic must be at most 65,535 bytes, QoS 0 to 2, the whole
// body at most MaxRemainingLength and PacketID non-zero for QoS > 0. Append
// checks all of these and then calls AppendPublish.
func AppendPublish(dst []byte, p *Publish) []byte {
	flags := (p.QoS << 1) & flagQoS
	if p.Dup {
		flags |= flagDup
	}
	if p.Retain {
		flags |= flagRetain
	}
	dst = append(dst, byte(TypePublish)<<4|flags)
	dst = appendRemainingLength(dst, publishBodyLen(p))
	dst = append(dst, byte(len(p.Topic)>>8), byte(len(p.Topic)))
	dst = append(dst, p.Topic...)
	if p.QoS > 0 {
		dst = append(dst, byte(p.PacketID>>8), byte(p.PacketID))
	}
	return append(dst, p.Payload...)
}

func publishBodyLen(p *Publish) int {
	n := 2 + len(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		n += 2
	}
	return n
}
