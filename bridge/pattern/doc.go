// Package pattern translates MQTT topic filters into what a replica
// subscribes to in Redis: a channel for a filter without wildcards, an
// escaped glob for PSUBSCRIBE otherwise, and a PatternSet that keeps a
// replica's Redis subscriptions minimal (a pattern another covers is not
// subscribed) and within a budget (past it, patterns are widened at level
// boundaries). Redis pays for every pattern on every PUBLISH, so this is
// where the bridge's cost in Redis is decided. Receivers re-match every
// message with topics.Match: Redis's '*' also crosses '/'.
package pattern
