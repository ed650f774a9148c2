package pattern

// GlobMatch reports whether s matches the Redis glob pattern, with the
// semantics of Redis's stringmatchlen (util.c), the matcher PSUBSCRIBE uses:
// '*' matches any run of bytes including '/', '?' any one byte, "[...]" a
// class ('^' negates, "a-z" ranges, '\' escapes), '\' escapes the next byte.
// Matching is byte-wise, as in Redis. Tests use it to check that a pattern
// from RedisSubscription never misses a topic its filter matches; a bridge
// without Redis may use it to emulate PSUBSCRIBE.
func GlobMatch(pattern, s string) bool {
	skipLonger := false
	return globMatch(pattern, s, &skipLonger, 0)
}

// globMatch follows stringmatchlen_impl step by step. Where the C code reads
// the byte after the pattern (its terminating NUL), at() returns 0.
func globMatch(p, s string, skipLonger *bool, nesting int) bool {
	if nesting > 1000 {
		return false // Redis's protection against abusive patterns.
	}
	at := func(i int) byte {
		if i < len(p) {
			return p[i]
		}
		return 0
	}
	pi, si := 0, 0
	for pi < len(p) && si < len(s) {
		switch p[pi] {
		case '*':
			for at(pi+1) == '*' {
				pi++
			}
			if pi == len(p)-1 {
				return true
			}
			for si < len(s) {
				if globMatch(p[pi+1:], s[si:], skipLonger, nesting+1) {
					return true
				}
				if *skipLonger {
					return false
				}
				si++
			}
			*skipLonger = true
			return false
		case '?':
			si++
		case '[':
			pi++
			not := at(pi) == '^'
			if not {
				pi++
			}
			if in := matchClass(p, &pi, s[si]); in == not {
				return false
			}
			si++
		case '\\':
			if len(p)-pi >= 2 {
				pi++
			}
			fallthrough
		default:
			if p[pi] != s[si] {
				return false
			}
			si++
		}
		pi++
		if si == len(s) {
			for at(pi) == '*' {
				pi++
			}
			break
		}
	}
	return pi >= len(p) && si == len(s)
}

// matchClass reports whether c is in the class starting at p[*pi] (after
// '[' and any '^'), leaving *pi on the closing ']' (or, for an unterminated
// class, on the pattern's last byte, as Redis does).
func matchClass(p string, pi *int, c byte) bool {
	i, match := *pi, false
	for {
		switch {
		case i+1 < len(p) && p[i] == '\\':
			i++
			if p[i] == c {
				match = true
			}
		case i < len(p) && p[i] == ']':
			*pi = i
			return match
		case i >= len(p):
			*pi = i - 1
			return match
		case i+2 < len(p) && p[i+1] == '-':
			// C compares plain chars, signed on the usual ABIs.
			lo, hi, b := int8(p[i]), int8(p[i+2]), int8(c)
			if lo > hi {
				lo, hi = hi, lo
			}
			i += 2
			if b >= lo && b <= hi {
				match = true
			}
		default:
			if p[i] == c {
				match = true
			}
		}
		i++
	}
}
