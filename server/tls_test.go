package server

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/bridgemq/server/packets"
	"github.com/bridgemq/server/session"
)

// readFrame reads exactly one packet, fixed header included, and refuses
// a malformed or oversized Remaining Length before reading the body.
func TestReadFrame(t *testing.T) {
	connect, err := packets.Append(nil, &packets.Connect{ProtocolVersion: packets.Version311, CleanSession: true, ClientID: "c"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      []byte
		max     int
		want    []byte
		wantErr error
	}{
		{"one CONNECT, next packet left unread", append(append([]byte{}, connect...), 0xc0, 0x00), 100, connect, nil},
		{"two-byte remaining length", append([]byte{0x30, 0x80, 0x01}, make([]byte, 128)...), 200, append([]byte{0x30, 0x80, 0x01}, make([]byte, 128)...), nil},
		{"remaining length over 4 bytes", []byte{0x10, 0xff, 0xff, 0xff, 0xff, 0x01}, 0, nil, packets.ErrMalformed},
		{"over -max-packet-size", []byte{0x10, 0x80, 0x01}, 100, nil, packets.ErrPacketTooLarge},
		{"body cut short", []byte{0x10, 0x05, 0x00}, 100, nil, io.ErrUnexpectedEOF},
		{"nothing", nil, 100, nil, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := bytes.NewReader(tt.in)
			got, err := readFrame(r, tt.max)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("readFrame = %x, %v; want %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tt.want) {
				t.Fatalf("readFrame = %x, %v; want %x", got, err, tt.want)
			}
			if rest := len(tt.in) - len(tt.want); r.Len() != rest {
				t.Errorf("%d bytes left unread, want %d", r.Len(), rest)
			}
		})
	}
}

// refuseAll is an Authorizer that refuses every CONNECT.
type refuseAll struct{ session.AllowAll }

func (refuseAll) Authenticate(bool, string, bool, []byte) packets.ReasonCode {
	return packets.RefusedNotAuthorized
}

// identityAuth accepts only the secret of its own identity; every other
// CONNECT goes to the Authorizer it wraps.
func TestIdentityAuth_AcceptsOnlyTheSecret(t *testing.T) {
	id, err := newIdentity()
	if err != nil {
		t.Fatal(err)
	}
	other, err := newIdentity()
	if err != nil {
		t.Fatal(err)
	}
	a := identityAuth{Authorizer: refuseAll{}, id: id}
	tests := []struct {
		name         string
		userFlag     bool
		passwordFlag bool
		password     []byte
		want         packets.ReasonCode
	}{
		{"the secret", true, true, id.secret, packets.Accepted},
		{"another server's secret", true, true, other.secret, packets.RefusedNotAuthorized},
		{"a prefix of the secret", true, true, id.secret[:16], packets.RefusedNotAuthorized},
		{"the secret without the username flag", false, true, id.secret, packets.RefusedNotAuthorized},
		{"no password", true, false, nil, packets.RefusedNotAuthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := a.Authenticate(tt.userFlag, "alice", tt.passwordFlag, tt.password); got != tt.want {
				t.Errorf("Authenticate = %#x, want %#x", got, tt.want)
			}
		})
	}
}
