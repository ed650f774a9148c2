// Package auth decides who may connect to the broker and what each client may
// publish, subscribe to and receive.
//
// It reads the two files Mosquitto operators already have, so a deployment can
// move over without rewriting them:
//
//   - the password file written by mosquitto_passwd (LoadPasswordFile), with
//     Mosquitto 2.x PBKDF2-SHA512 ("$7$") and Mosquitto 1.x salted SHA-512
//     ("$6$") hashes;
//   - the acl_file (LoadACLFile) with its user, topic and pattern lines,
//     evaluated the way Mosquitto 2.0's default security does it: deny rules
//     first, then grants, the client's own rules before the patterns.
//
// RedisUsers reads users and their ACL from Redis instead, in EMQX's layout
// (mqtt_user:<name>, mqtt_acl:<name>), shared by every replica and cached by
// each until a notice on UsersChannel; UserAdmin writes them.
//
// Authorizer combines both files with the allow_anonymous setting and is what the
// session layer calls on CONNECT, SUBSCRIBE, PUBLISH and per delivered message.
// Passwords and ACL are immutable once parsed and safe for concurrent use; a
// configuration reload builds new ones and swaps the pointers.
package auth
