package session

import "sync/atomic"

// Stats counts what the sessions of a server do; safe for concurrent use.
type Stats struct {
	Connections      atomic.Int64 // open connections
	ConnectsRefused  atomic.Int64 // CONNECTs answered with a refusal or closed
	ConnectsDenied   atomic.Int64 // CONNECTs refused as not authorized: bad credentials, or another user's session
	PublishReceived  atomic.Int64 // PUBLISH packets received from clients
	PublishDenied    atomic.Int64 // PUBLISH (and wills) refused by the ACL, acknowledged and dropped
	PublishDropped   atomic.Int64 // QoS 0 PUBLISH the bridge could not accept
	PublishRefused   atomic.Int64 // PUBLISH over -max-topic-length or -max-topic-levels
	SubscribeRefused atomic.Int64 // SUBSCRIBE filters answered 0x80 by a limit (length, levels, per-client count)
	SubscribeDenied  atomic.Int64 // SUBSCRIBE filters answered 0x80 by the ACL
	PublishThrottled atomic.Int64 // PUBLISH bodies whose reading waited for -max-inflight-bytes
	Delivered        atomic.Int64 // PUBLISH packets sent to clients
	DroppedQoS0      atomic.Int64 // QoS 0 messages dropped because a client's queue was full
	DroppedQueueFull atomic.Int64 // QoS 1/2 messages dropped because a client's queue was full
	DeliveryDenied   atomic.Int64 // messages not sent because the ACL denies the client reading their topic
	DroppedStale     atomic.Int64 // live messages not newer than the retained message just sent on their topic
	WillsPublished   atomic.Int64 // will messages published
	// DroppedExpired counts messages not sent because their MQTT 5.0
	// Message Expiry Interval had passed.
	DroppedExpired atomic.Int64
	// DroppedTooLarge counts messages not sent to a 5.0 client because the
	// PUBLISH would exceed its Maximum Packet Size [MQTT-3.1.2-25].
	DroppedTooLarge atomic.Int64
}

// Snapshot returns the counters by name.
func (s *Stats) Snapshot() map[string]int64 {
	return map[string]int64{
		"connections":              s.Connections.Load(),
		"connects_refused":         s.ConnectsRefused.Load(),
		"connects_denied":          s.ConnectsDenied.Load(),
		"publish_received":         s.PublishReceived.Load(),
		"publish_denied":           s.PublishDenied.Load(),
		"publish_dropped":          s.PublishDropped.Load(),
		"publish_refused_limit":    s.PublishRefused.Load(),
		"subscribe_refused_limit":  s.SubscribeRefused.Load(),
		"subscribe_denied":         s.SubscribeDenied.Load(),
		"publish_throttled":        s.PublishThrottled.Load(),
		"messages_delivered":       s.Delivered.Load(),
		"dropped_qos0_queue_full":  s.DroppedQoS0.Load(),
		"dropped_qos12_queue_full": s.DroppedQueueFull.Load(),
		"delivery_denied":          s.DeliveryDenied.Load(),
		"dropped_stale_live":       s.DroppedStale.Load(),
		"dropped_expired":          s.DroppedExpired.Load(),
		"dropped_too_large":        s.DroppedTooLarge.Load(),
		"wills_published":          s.WillsPublished.Load(),
	}
}
