package main

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// payloadHeaderLen is the smallest payload the tool sends: the header every
// message carries so a subscriber can tell who sent it, in which order and
// when, without any shared state with the publisher.
const payloadHeaderLen = 16

// errShortPayload is returned for a payload too short to carry the header.
var errShortPayload = errors.New("payload shorter than the 16-byte bench header")

// stamp is the header at the start of every payload the tool publishes:
//
//	bytes 0-1   run tag: tells this run's messages from a persistent session's leftovers
//	bytes 2-3   publisher id
//	bytes 4-7   sequence number, per publisher, from 0
//	bytes 8-15  send time in nanoseconds since the tool's start (monotonic clock)
//
// Big endian throughout. Bytes after the header are filler.
type stamp struct {
	Run       uint16
	Publisher uint16
	Seq       uint32
	SentNanos int64
}

// put writes s into the first payloadHeaderLen bytes of b, which must be at
// least that long.
func (s stamp) put(b []byte) {
	_ = b[payloadHeaderLen-1]
	binary.BigEndian.PutUint16(b[0:], s.Run)
	binary.BigEndian.PutUint16(b[2:], s.Publisher)
	binary.BigEndian.PutUint32(b[4:], s.Seq)
	binary.BigEndian.PutUint64(b[8:], uint64(s.SentNanos))
}

// readStamp decodes the header at the start of a payload.
func readStamp(b []byte) (stamp, error) {
	if len(b) < payloadHeaderLen {
		return stamp{}, fmt.Errorf("reading %d-byte payload: %w", len(b), errShortPayload)
	}
	return stamp{
		Run:       binary.BigEndian.Uint16(b[0:]),
		Publisher: binary.BigEndian.Uint16(b[2:]),
		Seq:       binary.BigEndian.Uint32(b[4:]),
		SentNanos: int64(binary.BigEndian.Uint64(b[8:])),
	}, nil
}

// newPayload returns a payload buffer of size bytes: room for the stamp,
// then a recognisable filler.
func newPayload(size int) []byte {
	b := make([]byte, size)
	for i := payloadHeaderLen; i < size; i++ {
		b[i] = 'a' + byte(i%26)
	}
	return b
}
