package topics

// Match reports whether topic matches filter. Both are assumed valid
// (ValidateFilter, ValidateTopicName). It does not allocate.
//
// A filter starting with a wildcard does not match a topic starting with '$'
// [MQTT-4.7.2-1]; "a/#" matches "a" as well as its descendants (section
// 4.7.1.2); empty levels are levels, so "+/a" matches "/a" and "a/+/b"
// matches "a//b".
func Match(filter, topic string) bool {
	if topic != "" && topic[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
		return false // [MQTT-4.7.2-1]
	}
	// fi and ti index the start of the current level; ti > len(topic)
	// means the topic has no levels left.
	fi, ti := 0, 0
	for {
		fe := levelEnd(filter, fi)
		fl := filter[fi:fe]
		if fl == "#" {
			return true // the rest of the topic, including no level at all
		}
		if ti > len(topic) {
			return false
		}
		te := levelEnd(topic, ti)
		if fl != "+" && fl != topic[ti:te] {
			return false
		}
		if fe == len(filter) {
			return te == len(topic)
		}
		fi, ti = fe+1, te+1
	}
}
