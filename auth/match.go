package auth

import "strings"

// The matchers below walk both strings level by level without allocating:
// CanRead runs once per delivered message.

// topicMatches reports whether the topic name matches filter with MQTT's rules
// (Mosquitto's mosquitto_topic_matches_sub): '+' matches exactly one level,
// '#' the rest including the parent level [MQTT-4.7.1-2], and a filter
// starting with a wildcard does not match a topic starting with '$'
// [MQTT-4.7.2-1].
func topicMatches(filter, topic string) bool {
	if filter == "" || topic == "" || (filter[0] == '$') != (topic[0] == '$') {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		switch {
		case !fmore && !tmore:
			return true
		case !tmore:
			// "a/#" matches "a" [MQTT-4.7.1-2].
			return frest == "#"
		case !fmore:
			return false
		}
		filter, topic = frest, trest
	}
}

// subMatchesACL reports whether an ACL filter covers every topic a
// subscription filter can match (Mosquitto's mosquitto_sub_matches_acl): a '+'
// in the subscription is covered only by '+' or '#' in the ACL, a '#' only by
// '#'; a literal level only by the same literal or a wildcard.
func subMatchesACL(acl, sub string) bool {
	if acl == "" || sub == "" || (acl[0] == '$') != (sub[0] == '$') {
		return false
	}
	for {
		al, arest, amore := strings.Cut(acl, "/")
		if al == "#" {
			return true
		}
		sl, srest, smore := strings.Cut(sub, "/")
		switch al {
		case "+":
			if sl == "#" {
				return false
			}
		default:
			if al != sl {
				return false
			}
		}
		switch {
		case !amore && !smore:
			return true
		case !smore:
			return arest == "#"
		case !amore:
			return false
		}
		acl, sub = arest, srest
	}
}

// validFilter reports whether f is a valid topic filter: non-empty, and each
// '+' or '#' alone in its level, '#' only last [MQTT-4.7.1-2] [MQTT-4.7.1-3].
// Mosquitto applies the same check to ACL topics (mosquitto_sub_topic_check).
func validFilter(f string) bool {
	if f == "" || len(f) > 65535 {
		return false
	}
	for {
		level, rest, more := strings.Cut(f, "/")
		if len(level) > 1 && strings.ContainsAny(level, "+#") {
			return false
		}
		if level == "#" && more {
			return false
		}
		if !more {
			return true
		}
		f = rest
	}
}
