package auth

import "strings"

// Topic names are matched against ACL filters with topics.Match, the
// broker's own matcher, and ACL topics are validated with
// topics.ValidateFilter. subMatchesACL below walks both strings level by
// level without allocating: CanSubscribe runs once per filter.

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
