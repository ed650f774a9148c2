package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metric is one of the server's Prometheus series: the key it has in
// Server.Stats, and its type. Counters are named <key>_total, as Prometheus
// wants; the values themselves stay atomics bumped on the hot path and are
// read only when scraped.
type metric struct {
	key  string // Server.Stats key; the series is mqtt_<key>[_total]
	kind prometheus.ValueType
	help string
}

// metrics lists every series /metrics serves. A Stats key missing here is not
// exported (TestMetrics_EveryStatIsDescribed keeps the two in step).
var metrics = []metric{
	{"connections", prometheus.GaugeValue, "Open client connections."},
	{"connects_refused", prometheus.CounterValue, "CONNECTs answered with a refusal or closed."},
	{"connects_denied", prometheus.CounterValue, "CONNECTs refused as not authorized (bad credentials, another user's session); also in connects_refused."},
	{"publish_received", prometheus.CounterValue, "PUBLISH packets received from clients."},
	{"publish_denied", prometheus.CounterValue, "PUBLISH packets and wills refused by the ACL (acknowledged and dropped)."},
	{"publish_dropped", prometheus.CounterValue, "QoS 0 PUBLISH packets the bridge could not accept."},
	{"publish_refused_limit", prometheus.CounterValue, "PUBLISH packets over -max-topic-length or -max-topic-levels."},
	{"subscribe_refused_limit", prometheus.CounterValue, "SUBSCRIBE filters answered 0x80 by a limit (length, levels, per-client count)."},
	{"subscribe_denied", prometheus.CounterValue, "SUBSCRIBE filters answered 0x80 by the ACL."},
	{"publish_throttled", prometheus.CounterValue, "PUBLISH bodies whose reading waited for -max-inflight-bytes."},
	{"messages_delivered", prometheus.CounterValue, "PUBLISH packets sent to clients."},
	{"dropped_qos0_queue_full", prometheus.CounterValue, "QoS 0 messages dropped because a client's queue was full."},
	{"dropped_qos12_queue_full", prometheus.CounterValue, "QoS 1 and 2 messages dropped because a client's queue was full."},
	{"delivery_denied", prometheus.CounterValue, "Messages not sent because the ACL denies the client reading their topic."},
	{"dropped_stale_live", prometheus.CounterValue, "Live messages not newer than the retained message just sent on their topic."},
	{"dropped_expired", prometheus.CounterValue, "Messages not sent because their MQTT 5.0 Message Expiry Interval had passed."},
	{"dropped_too_large", prometheus.CounterValue, "Messages not sent because the PUBLISH exceeds the MQTT 5.0 client's Maximum Packet Size."},
	{"wills_published", prometheus.CounterValue, "Will messages published by this replica's sessions."},

	{"bridge_published", prometheus.CounterValue, "Messages the Redis bridge published."},
	{"bridge_publish_errors", prometheus.CounterValue, "Publishes Redis did not accept."},
	{"bridge_qos0_dropped", prometheus.CounterValue, "QoS 0 publishes Redis did not accept, dropped."},
	{"bridge_received", prometheus.CounterValue, "Messages received from Redis."},
	{"bridge_delivered", prometheus.CounterValue, "Messages from Redis handed to local sessions."},
	{"bridge_deduplicated", prometheus.CounterValue, "Copies of a message already received (several matching patterns, replays)."},
	{"bridge_replayed", prometheus.CounterValue, "Messages read back from the streams after a gap."},
	{"bridge_replays", prometheus.CounterValue, "Replays of the streams after a gap in the subscription (Redis reconnect)."},
	{"bridge_decode_errors", prometheus.CounterValue, "Envelopes from Redis that could not be decoded."},
	{"bridge_offline_queue_dropped", prometheus.CounterValue, "Messages dropped from a full offline session queue (-max-queued-messages or -max-queued-bytes), the oldest first."},
	{"bridge_offline_queue_expired", prometheus.CounterValue, "Messages expired from an offline session queue (-message-expiry)."},
	{"bridge_offline_queue_trimmed", prometheus.CounterValue, "Offline session replays that started before the stream's first entry."},
	{"bridge_replay_trimmed", prometheus.CounterValue, "Blip replays that started before the stream's first entry, per shard."},
	{"bridge_stream_byte_trims", prometheus.CounterValue, "Stream trims made by -redis-stream-max-bytes."},
	{"bridge_dead_node_checks", prometheus.CounterValue, "Rounds of the check for dead replicas (whose wills and sessions a survivor takes over)."},
	{"bridge_wills_published", prometheus.CounterValue, "Will messages published by this node's broker (with Redis, including those of dead replicas' clients and delayed wills that came due)."},
	{"bridge_wills_delayed", prometheus.CounterValue, "Wills with a Will Delay Interval that began waiting for it in Redis."},
	{"bridge_wills_cancelled", prometheus.CounterValue, "Delayed wills cancelled because the client connected again before they were due [MQTT-3.1.3-9]."},
	{"bridge_wills_refused", prometheus.CounterValue, "Wills kept in Redis that this replica did not publish for another replica's connection because the ACL in force no longer lets their user publish to the topic."},
	{"bridge_takeovers", prometheus.CounterValue, "Session takeovers across replicas."},
	{"bridge_claim_conflicts", prometheus.CounterValue, "Client record claims retried because another connection claimed it at the same time."},
	{"bridge_republished_after_redis_restart", prometheus.CounterValue, "Messages published again after Redis restarted or failed over."},
	{"bridge_publish_not_replicated", prometheus.CounterValue, "QoS 1 and 2 publishes fewer Redis replicas confirmed than -redis-min-replicas-acked."},
	{"bridge_retained_messages", prometheus.GaugeValue, "Retained messages this replica knows of."},
	{"bridge_subscription_filters", prometheus.GaugeValue, "Distinct topic filters this replica subscribes to for its clients."},
	{"bridge_shared_groups", prometheus.GaugeValue, "Shared subscription groups with members on this replica."},
	{"bridge_shared_members", prometheus.GaugeValue, "Shared subscriptions (client and group pairs) held on this replica."},
	{"bridge_shared_claimed", prometheus.CounterValue, "Messages this replica claimed in Redis for one of its shared subscription groups."},
	{"bridge_shared_claimed_late", prometheus.CounterValue, "Shared subscription messages this replica claimed after waiting its fallback delay (50 ms) as it was not the preferred replica: the preferred one lagged, or the replicas' views of the members differed for a moment. Each still went to one member."},
	{"bridge_shared_remote_members", prometheus.GaugeValue, "Members of this replica's shared subscription groups on other replicas, as this replica last read them from Redis; messages are spread over them and its own."},
	{"bridge_shared_not_claimed", prometheus.CounterValue, "Shared subscription messages whose claim Redis did not answer after every retry, or that Redis did not take when handed off."},
	{"bridge_shared_handed_back", prometheus.CounterValue, "Shared subscription messages a member left unsent or unacknowledged when its connection ended, given to another member of the group (section 4.8.2)."},
	{"bridge_shared_dropped", prometheus.CounterValue, "Shared subscription messages a member left unsent or unacknowledged when its session ended with its connection, which no other member could take."},
	{"bridge_shared_handed_off", prometheus.CounterValue, "Shared subscription messages this replica put in a group's list in Redis for the members on other replicas."},
	{"bridge_shared_taken_over", prometheus.CounterValue, "Shared subscription messages this replica took from a group's list in Redis and gave to one of its members."},
	{"bridge_shared_owed_moved", prometheus.CounterValue, "Shared subscription messages the members of a dead replica owed, which this replica, reaping it, moved to their groups' lists in Redis for other members."},
	{"bridge_shared_owed_not_forgotten", prometheus.CounterValue, "Shared subscription messages finished by their member whose record in Redis could not be removed while Redis did not answer (a reaper of this replica would give them to another member)."},
	{"bridge_subscriptions", prometheus.GaugeValue, "Subscriptions (client and filter pairs) held on this replica, offline persistent sessions of a single node included."},
}

// metricName is the Prometheus name of m.
func metricName(m metric) string {
	if m.kind == prometheus.CounterValue {
		return "mqtt_" + m.key + "_total"
	}
	return "mqtt_" + m.key
}

// statsCollector exposes Server.Stats to Prometheus with typed, described
// series, each labelled with the node id.
type statsCollector struct {
	stats func() map[string]int64
	descs []*prometheus.Desc // in the order of metrics
}

func newStatsCollector(node string, stats func() map[string]int64) *statsCollector {
	c := &statsCollector{stats: stats}
	for _, m := range metrics {
		c.descs = append(c.descs, prometheus.NewDesc(metricName(m), m.help, nil, prometheus.Labels{"node": node}))
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A bridge without some series
// (the in-process one has no Redis counters) leaves them out.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	vals := c.stats()
	for i, m := range metrics {
		if v, ok := vals[m.key]; ok {
			ch <- prometheus.MustNewConstMetric(c.descs[i], m.kind, float64(v))
		}
	}
}

// latencyBuckets are the latency histograms' upper bounds in seconds: from
// 100 µs (a Redis round trip on one host) to 10 s (the bridge's publish
// timeout).
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// histograms are the server's latency distributions, observed on the hot
// path (one Observe each, no allocation) and read when scraped.
type histograms struct {
	// publishAck is from reading a QoS 1 or 2 PUBLISH to queueing its
	// PUBACK or PUBREC: the bridge's answer included.
	publishAck prometheus.Histogram
	// redisPublish is one publish pipeline batch's round trip to Redis.
	redisPublish prometheus.Histogram
}

func newHistograms(node string) histograms {
	labels := prometheus.Labels{"node": node}
	return histograms{
		publishAck: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:        "mqtt_publish_ack_latency_seconds",
			Help:        "Seconds from reading a QoS 1 or 2 PUBLISH to queueing its PUBACK or PUBREC.",
			ConstLabels: labels,
			Buckets:     latencyBuckets,
		}),
		redisPublish: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:        "mqtt_bridge_redis_publish_latency_seconds",
			Help:        "Seconds each publish pipeline batch takes to go to Redis and back (Redis bridge only).",
			ConstLabels: labels,
			Buckets:     latencyBuckets,
		}),
	}
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	s.metricsOnce.Do(func() {
		reg := prometheus.NewRegistry()
		reg.MustRegister(newStatsCollector(s.cfg.NodeID, s.Stats), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		if s.hist.publishAck != nil {
			reg.MustRegister(s.hist.publishAck)
		}
		// A single node has no Redis round trip to show (New leaves it nil).
		if s.hist.redisPublish != nil {
			reg.MustRegister(s.hist.redisPublish)
		}
		s.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	})
	s.metrics.ServeHTTP(w, r)
}
