package packets

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestInbuf_ReadsEveryByteWhateverTheChunking(t *testing.T) {
	data := make([]byte, 3*largeInput+17)
	for i := range data {
		data[i] = byte(i * 7)
	}
	sources := []struct {
		name string
		src  func() io.Reader
	}{
		{"one read", func() io.Reader { return bytes.NewReader(data) }},
		{"one byte per read", func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) }},
		{"half reads", func() io.Reader { return iotest.HalfReader(bytes.NewReader(data)) }},
		{"EOF with data", func() io.Reader { return iotest.DataErrReader(bytes.NewReader(data)) }},
	}
	// Alternate single bytes and chunks of several sizes, as the fixed
	// header and body reads do.
	chunks := []int{1, 1, 3, 300, 1, 5000, 2, 64, 4096}
	for _, s := range sources {
		t.Run(s.name, func(t *testing.T) {
			b := &inbuf{src: s.src()}
			var got []byte
			for i := 0; len(got) < len(data); i++ {
				n := min(chunks[i%len(chunks)], len(data)-len(got))
				if n == 1 {
					c, err := b.ReadByte()
					if err != nil {
						t.Fatalf("ReadByte at %d: %v", len(got), err)
					}
					got = append(got, c)
					continue
				}
				p := make([]byte, n)
				if _, err := io.ReadFull(b, p); err != nil {
					t.Fatalf("ReadFull(%d) at %d: %v", n, len(got), err)
				}
				got = append(got, p...)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("bytes differ from the source")
			}
			if _, err := b.ReadByte(); !errors.Is(err, io.EOF) {
				t.Fatalf("after the end: %v, want io.EOF", err)
			}
		})
	}
}

func TestInbuf_StaysSmallForIdleClientsAndGrowsForBursts(t *testing.T) {
	tests := []struct {
		name    string
		input   []byte
		reads   int
		wantCap int
	}{
		{"a PINGREQ", []byte{0xC0, 0x00}, 2, smallInput},
		{"a burst that fills the small buffer", bytes.Repeat([]byte{0xC0, 0x00}, smallInput), 2, largeInput},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &inbuf{src: bytes.NewReader(tt.input)}
			for range tt.reads {
				if _, err := b.ReadByte(); err != nil {
					t.Fatal(err)
				}
			}
			if len(b.buf) != tt.wantCap {
				t.Fatalf("buffer is %d bytes, want %d", len(b.buf), tt.wantCap)
			}
		})
	}
}
