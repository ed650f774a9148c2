package packets

import "io"

// Sizes of a Reader's input buffer. A connection starts with a small buffer,
// enough for the control packets of an idle client, and moves to the large
// one the first time a read fills it: a busy publisher then gets many
// packets per read, while thousands of idle connections cost little.
const (
	smallInput = 256
	largeInput = 4096
)

// inbuf is a read buffer over the connection that grows once from
// smallInput to largeInput when the peer sends in bursts.
type inbuf struct {
	src  io.Reader
	buf  []byte
	r, w int
}

// fill reads at least one more byte into the buffer.
func (b *inbuf) fill() error {
	if b.r == b.w {
		b.r, b.w = 0, 0
	}
	if b.buf == nil {
		b.buf = make([]byte, smallInput)
	}
	n, err := b.src.Read(b.buf[b.w:])
	b.w += n
	if b.w == len(b.buf) && len(b.buf) < largeInput {
		grown := make([]byte, largeInput)
		b.w = copy(grown, b.buf[b.r:b.w])
		b.r = 0
		b.buf = grown
	}
	if n > 0 {
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// firstRead is how much fillFirst reads before a buffer exists: a
// PINGREQ, or the start of any other packet.
const firstRead = 32

// fillFirst is fill for an inbuf without a buffer: it waits for the first
// bytes in an array on the stack and makes the buffer once they are there.
func (b *inbuf) fillFirst() error {
	var first [firstRead]byte
	n, err := b.src.Read(first[:])
	if n > 0 {
		b.buf = make([]byte, smallInput)
		b.r, b.w = 0, copy(b.buf, first[:n])
		return nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// ReadByte implements io.ByteReader.
func (b *inbuf) ReadByte() (byte, error) {
	for b.r == b.w {
		if err := b.fill(); err != nil {
			return 0, err
		}
	}
	c := b.buf[b.r]
	b.r++
	return c, nil
}

// Read implements io.Reader: buffered bytes first, then large reads go
// straight to the source.
func (b *inbuf) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if b.r == b.w {
		if len(p) >= len(b.buf) && len(b.buf) > 0 {
			return b.src.Read(p)
		}
		if err := b.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	return n, nil
}
