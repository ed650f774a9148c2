package auth

import "github.com/bridgemq/server/packets"

// Authorizer decides who may connect and what they may do; a nil *ACL allows
// everything. A nil *Authorizer is a broker with no security configured: it
// accepts every client and allows every operation.
type Authorizer struct {
	// Passwords, when set, must hold every user name a client presents.
	Passwords *Passwords
	// ACL, when set, limits what each client may subscribe to, read and write.
	ACL *ACL
	// AllowAnonymous admits clients that present no user name.
	AllowAnonymous bool
}

// Authenticate returns the MQTT 3.1.1 CONNACK return code for a CONNECT's
// credentials: 0x00 accepted, 0x04 bad user name or password, 0x05 not
// authorised.
//
//   - No user name (or an empty one, which the ACL also treats as anonymous):
//     accepted iff AllowAnonymous, else 0x05.
//   - A password without a user name is a malformed CONNECT [MQTT-3.1.2-22];
//     the caller should already have closed the connection, and gets 0x04.
//   - A user name with a password file configured: the user must exist and
//     the password match, else 0x04.
//   - A user name and no password file: accepted, as Mosquitto does.
func (a *Authorizer) Authenticate(usernameFlag bool, username string, passwordFlag bool, password []byte) packets.ReasonCode {
	if a == nil {
		return packets.Accepted
	}
	if passwordFlag && !usernameFlag {
		return packets.RefusedBadUsernamePassword
	}
	if !usernameFlag || username == "" {
		if a.AllowAnonymous {
			return packets.Accepted
		}
		return packets.RefusedNotAuthorized
	}
	if a.Passwords == nil {
		return packets.Accepted
	}
	if !passwordFlag || !a.Passwords.Check(username, password) {
		return packets.RefusedBadUsernamePassword
	}
	return packets.Accepted
}

// CanSubscribe reports whether the client may subscribe to filter.
func (a *Authorizer) CanSubscribe(clientID, username, filter string) bool {
	if !a.ChecksReads() {
		return true
	}
	return a.ACL.CanSubscribe(clientID, username, filter)
}

// CanRead reports whether a message on topic may be delivered to the client.
func (a *Authorizer) CanRead(clientID, username, topic string) bool {
	if !a.ChecksReads() {
		return true
	}
	return a.ACL.CanRead(clientID, username, topic)
}

// CanWrite reports whether the client may publish to topic.
func (a *Authorizer) CanWrite(clientID, username, topic string) bool {
	if a == nil || a.ACL == nil {
		return true
	}
	return a.ACL.CanWrite(clientID, username, topic)
}

// ChecksReads is false when no ACL is configured: the delivery hot path can
// then skip calling CanRead for every message.
func (a *Authorizer) ChecksReads() bool {
	return a != nil && a.ACL != nil
}
