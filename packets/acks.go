package packets

// ackBlock hands out packets of one small type from blocks of ackBlockLen,
// so that a Reader allocates once per ackBlockLen acknowledgements instead
// of once per packet. PUBACK and its kind are the most frequent packets a
// busy QoS 1/2 connection reads, and since they carry a *Properties (for
// 5.0) each is a pointer-holding allocation of its own otherwise. A packet
// handed out keeps its block alive, about a kilobyte at most.
type ackBlock[T any] struct{ free []T }

const ackBlockLen = 64

func (b *ackBlock[T]) next() *T {
	if len(b.free) == 0 {
		b.free = make([]T, ackBlockLen)
	}
	p := &b.free[0]
	b.free = b.free[1:]
	return p
}

// ackBlocks are a Reader's blocks for PUBACK, PUBREC, PUBREL and PUBCOMP.
// A nil *ackBlocks allocates each packet on its own.
type ackBlocks struct {
	puback  ackBlock[Puback]
	pubrec  ackBlock[Pubrec]
	pubrel  ackBlock[Pubrel]
	pubcomp ackBlock[Pubcomp]
}

// ack returns a new PUBACK, PUBREC, PUBREL or PUBCOMP (by t) with the
// given fields.
func (a *ackBlocks) ack(t Type, id uint16, code ReasonCode, props *Properties) Packet {
	switch t {
	case TypePuback:
		if a == nil {
			return &Puback{PacketID: id, ReasonCode: code, Properties: props}
		}
		p := a.puback.next()
		*p = Puback{PacketID: id, ReasonCode: code, Properties: props}
		return p
	case TypePubrec:
		if a == nil {
			return &Pubrec{PacketID: id, ReasonCode: code, Properties: props}
		}
		p := a.pubrec.next()
		*p = Pubrec{PacketID: id, ReasonCode: code, Properties: props}
		return p
	case TypePubrel:
		if a == nil {
			return &Pubrel{PacketID: id, ReasonCode: code, Properties: props}
		}
		p := a.pubrel.next()
		*p = Pubrel{PacketID: id, ReasonCode: code, Properties: props}
		return p
	default:
		if a == nil {
			return &Pubcomp{PacketID: id, ReasonCode: code, Properties: props}
		}
		p := a.pubcomp.next()
		*p = Pubcomp{PacketID: id, ReasonCode: code, Properties: props}
		return p
	}
}
