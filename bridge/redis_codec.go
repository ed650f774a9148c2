package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// sessionStateVersion leads every stored session state. Version 2 adds,
// after the packet ids awaiting PUBREL, the indexes of the queued and then
// of the in-flight messages that are retained ones (RETAIN=1) [MQTT-3.3.1-8];
// it is written only when there is one,
// so a replica of the previous release reads every other state.
const (
	sessionStateVersion   byte = 1
	sessionStateVersionV2 byte = 2
)

// ErrSessionState reports a stored session state that cannot be read.
var ErrSessionState = errors.New("stored session state is malformed")

// appendSessionState encodes what a persistent session keeps between
// connections besides its subscriptions: in-flight messages, queued
// messages and QoS 2 packet ids awaiting PUBREL. Messages are envelopes.
func appendSessionState(dst []byte, s *StoredSession) []byte {
	var retained, retainedInflight []uint64
	for i, d := range s.Queued {
		if d.Retain {
			retained = append(retained, uint64(i))
		}
	}
	for i, f := range s.Inflight {
		if f.Retain {
			retainedInflight = append(retainedInflight, uint64(i))
		}
	}
	version := sessionStateVersion
	if len(retained)+len(retainedInflight) > 0 {
		version = sessionStateVersionV2
	}
	dst = append(dst, version)
	dst = binary.AppendUvarint(dst, uint64(len(s.Inflight)))
	for _, f := range s.Inflight {
		dst = binary.BigEndian.AppendUint16(dst, f.PacketID)
		rel := byte(0)
		if f.Released {
			rel = 1
		}
		dst = append(dst, f.QoS, rel)
		dst = appendMessage(dst, f.Message)
	}
	dst = binary.AppendUvarint(dst, uint64(len(s.Queued)))
	for _, d := range s.Queued {
		dst = append(dst, d.QoS)
		dst = appendMessage(dst, d.Message)
	}
	dst = binary.AppendUvarint(dst, uint64(len(s.AwaitingRelease)))
	for _, id := range s.AwaitingRelease {
		dst = binary.BigEndian.AppendUint16(dst, id)
	}
	if version == sessionStateVersionV2 {
		for _, list := range [][]uint64{retained, retainedInflight} {
			dst = binary.AppendUvarint(dst, uint64(len(list)))
			for _, i := range list {
				dst = binary.AppendUvarint(dst, i)
			}
		}
	}
	return dst
}

func appendMessage(dst []byte, m *Message) []byte {
	if m == nil {
		m = &Message{}
	}
	dst = binary.AppendUvarint(dst, uint64(EnvelopeSize(m)))
	return AppendEnvelope(dst, m, "")
}

// decodeSessionState reads what appendSessionState wrote into s.
func decodeSessionState(src string, s *StoredSession) error {
	d := stateReader{src: src}
	v := d.byte()
	if d.err == nil && v != sessionStateVersion && v != sessionStateVersionV2 {
		return fmt.Errorf("decode session state: version %d: %w", v, ErrSessionState)
	}
	n := d.count()
	for i := uint64(0); i < n && d.err == nil; i++ {
		var f Inflight
		f.PacketID = d.uint16()
		f.QoS = d.byte()
		f.Released = d.byte() == 1
		f.Message = d.message()
		s.Inflight = append(s.Inflight, f)
	}
	n = d.count()
	for i := uint64(0); i < n && d.err == nil; i++ {
		q := d.byte()
		s.Queued = append(s.Queued, Delivery{QoS: q, Message: d.message()})
	}
	n = d.count()
	for i := uint64(0); i < n && d.err == nil; i++ {
		s.AwaitingRelease = append(s.AwaitingRelease, d.uint16())
	}
	if v == sessionStateVersionV2 {
		d.retainedIndexes(len(s.Queued), func(i int) { s.Queued[i].Retain = true })
		d.retainedIndexes(len(s.Inflight), func(i int) { s.Inflight[i].Retain = true })
	}
	if d.err == nil && d.p != len(src) {
		d.err = fmt.Errorf("%d trailing bytes: %w", len(src)-d.p, ErrSessionState)
	}
	if d.err != nil {
		return fmt.Errorf("decode session state: %w", d.err)
	}
	return nil
}

// stateReader reads a session state, keeping the first error.
type stateReader struct {
	src string
	p   int
	err error
}

func (d *stateReader) need(n int) bool {
	if d.err == nil && len(d.src)-d.p < n {
		d.err = fmt.Errorf("truncated at byte %d: %w", d.p, ErrSessionState)
	}
	return d.err == nil
}

func (d *stateReader) byte() byte {
	if !d.need(1) {
		return 0
	}
	d.p++
	return d.src[d.p-1]
}

func (d *stateReader) uint16() uint16 {
	if !d.need(2) {
		return 0
	}
	d.p += 2
	return uint16(d.src[d.p-2])<<8 | uint16(d.src[d.p-1])
}

// count reads an element count, which cannot exceed the bytes left.
func (d *stateReader) count() uint64 {
	if d.err != nil {
		return 0
	}
	n, k := binary.Uvarint([]byte(d.src[d.p:min(len(d.src), d.p+binary.MaxVarintLen64)]))
	if k <= 0 || n > uint64(len(d.src)-d.p-k) {
		d.err = fmt.Errorf("bad count at byte %d: %w", d.p, ErrSessionState)
		return 0
	}
	d.p += k
	return n
}

// retainedIndexes reads a count and that many indexes below n, calling set
// for each.
func (d *stateReader) retainedIndexes(n int, set func(int)) {
	c := d.count()
	for j := uint64(0); j < c && d.err == nil; j++ {
		i := d.uvarint()
		if d.err == nil && i >= uint64(n) {
			d.err = fmt.Errorf("retained index %d of %d: %w", i, n, ErrSessionState)
		}
		if d.err == nil {
			set(int(i))
		}
	}
}

// uvarint reads a number that is not a count of what follows.
func (d *stateReader) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	n, k := binary.Uvarint([]byte(d.src[d.p:min(len(d.src), d.p+binary.MaxVarintLen64)]))
	if k <= 0 {
		d.err = fmt.Errorf("bad number at byte %d: %w", d.p, ErrSessionState)
		return 0
	}
	d.p += k
	return n
}

func (d *stateReader) message() *Message {
	if d.err != nil {
		return nil
	}
	env, p, err := readString(d.src, d.p, "message")
	if err != nil {
		d.err = fmt.Errorf("%w: %w", ErrSessionState, err)
		return nil
	}
	d.p = p
	m := new(Message)
	if _, err := DecodeEnvelope(env, m); err != nil {
		d.err = fmt.Errorf("%w: %w", ErrSessionState, err)
		return nil
	}
	return m
}
