package main

import (
	"errors"
	"math"
	"testing"
)

func TestStamp_RoundTrip(t *testing.T) {
	tests := []struct {
		name string
		size int
		s    stamp
	}{
		{"zero", 16, stamp{}},
		{"typical", 64, stamp{Run: 0xBEEF, Publisher: 7, Seq: 4999, SentNanos: 123456789}},
		{"extremes", 1024, stamp{Run: math.MaxUint16, Publisher: math.MaxUint16, Seq: math.MaxUint32, SentNanos: math.MaxInt64}},
		{"negative time", 16, stamp{SentNanos: -5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newPayload(tt.size)
			tt.s.put(b)
			got, err := readStamp(b)
			if err != nil {
				t.Fatalf("readStamp: %v", err)
			}
			if got != tt.s {
				t.Errorf("readStamp = %+v, want %+v", got, tt.s)
			}
			if len(b) != tt.size {
				t.Errorf("payload is %d bytes, want %d", len(b), tt.size)
			}
		})
	}
}

func TestStamp_FillerUntouched(t *testing.T) {
	b := newPayload(40)
	want := string(b[payloadHeaderLen:])
	stamp{Run: 1, Publisher: 2, Seq: 3, SentNanos: 4}.put(b)
	if got := string(b[payloadHeaderLen:]); got != want {
		t.Errorf("filler changed: %q, want %q", got, want)
	}
}

func TestReadStamp_Short(t *testing.T) {
	for _, n := range []int{0, 1, 15} {
		if _, err := readStamp(make([]byte, n)); !errors.Is(err, errShortPayload) {
			t.Errorf("readStamp(%d bytes) error = %v, want errShortPayload", n, err)
		}
	}
}
