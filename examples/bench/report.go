package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// report is the outcome of one run. Latencies are in microseconds, connect
// times in milliseconds.
type report struct {
	Publishers      int     `json:"publishers"`
	Subscribers     int     `json:"subscribers"`
	QoS             byte    `json:"qos"`
	Size            int     `json:"size"`
	Topics          string  `json:"topics"`
	WildcardFilters int     `json:"wildcard_filters"`
	Rate            float64 `json:"rate"`

	Sent       uint64 `json:"sent"`
	Acked      uint64 `json:"acked"`
	Expected   uint64 `json:"expected"`
	Delivered  uint64 `json:"delivered"`
	Duplicates uint64 `json:"duplicates"`
	OutOfOrder uint64 `json:"out_of_order"`
	Lost       uint64 `json:"lost"`
	Stale      uint64 `json:"stale"`

	PublishSeconds float64 `json:"publish_seconds"`
	PublishRate    float64 `json:"publish_rate"`
	Throughput     float64 `json:"throughput"`

	LatencyP50  float64 `json:"latency_p50_us"`
	LatencyP90  float64 `json:"latency_p90_us"`
	LatencyP99  float64 `json:"latency_p99_us"`
	LatencyP999 float64 `json:"latency_p999_us"`
	LatencyMax  float64 `json:"latency_max_us"`
	LatencyMean float64 `json:"latency_mean_us"`

	// Ack* is publish-to-PUBACK (QoS 1) or publish-to-PUBCOMP (QoS 2), as
	// a publisher sees it: from handing the PUBLISH to its connection to
	// reading the acknowledgement. With -inflight 1 that is the round
	// trip a device waits for before its next message.
	AckP50  float64 `json:"ack_p50_us"`
	AckP90  float64 `json:"ack_p90_us"`
	AckP99  float64 `json:"ack_p99_us"`
	AckP999 float64 `json:"ack_p999_us"`
	AckMax  float64 `json:"ack_max_us"`
	AckMean float64 `json:"ack_mean_us"`

	Connections     uint64  `json:"connections"`
	ConnectFailures int     `json:"connect_failures"`
	ConnectP50      float64 `json:"connect_p50_ms"`
	ConnectP99      float64 `json:"connect_p99_ms"`
	IdleConnections int     `json:"idle_connections"`
	// IdleConnectRate is -idle over the wall time from the first dial to
	// the last CONNACK (failures included), -idle-concurrency at once.
	IdleConnectRate float64 `json:"idle_connect_per_s"`

	// ToolCPUPercent is the tool's own CPU time over the run's wall time:
	// 100 means one core, the sign that the tool, not the broker, limited the run.
	ToolCPUPercent float64 `json:"tool_cpu_pct"`

	Errors []string `json:"errors,omitempty"`
}

func micros(d int64) float64 { return float64(d) / float64(time.Microsecond) }
func millis(d int64) float64 { return float64(d) / float64(time.Millisecond) }

// setLatency fills the latency fields from h (nanoseconds).
func (r *report) setLatency(h *Histogram) {
	r.LatencyP50 = micros(h.Quantile(0.50))
	r.LatencyP90 = micros(h.Quantile(0.90))
	r.LatencyP99 = micros(h.Quantile(0.99))
	r.LatencyP999 = micros(h.Quantile(0.999))
	r.LatencyMax = micros(h.Max())
	r.LatencyMean = h.Mean() / float64(time.Microsecond)
}

// setAck fills the publish-to-acknowledgement fields from h (nanoseconds).
func (r *report) setAck(h *Histogram) {
	r.AckP50 = micros(h.Quantile(0.50))
	r.AckP90 = micros(h.Quantile(0.90))
	r.AckP99 = micros(h.Quantile(0.99))
	r.AckP999 = micros(h.Quantile(0.999))
	r.AckMax = micros(h.Max())
	r.AckMean = h.Mean() / float64(time.Microsecond)
}

// setConnect fills the connect fields from h (nanoseconds).
func (r *report) setConnect(h *Histogram) {
	r.Connections = h.Count()
	r.ConnectP50 = millis(h.Quantile(0.50))
	r.ConnectP99 = millis(h.Quantile(0.99))
}

// write prints r as JSON or as an aligned table.
func (r *report) write(w io.Writer, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("encoding report: %w", err)
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, a...)...) }
	row("workload", "%d pub -> %d sub, QoS %d, %d B, topics %s, +%d wildcard filters/sub, rate %s",
		r.Publishers, r.Subscribers, r.QoS, r.Size, r.Topics, r.WildcardFilters, rateText(r.Rate))
	row("sent", "%d in %.3fs (%.0f msg/s)", r.Sent, r.PublishSeconds, r.PublishRate)
	row("acknowledged", "%d", r.Acked)
	row("delivered", "%d of %d expected", r.Delivered, r.Expected)
	row("duplicates", "%d", r.Duplicates)
	row("out of order", "%d", r.OutOfOrder)
	row("lost", "%d", r.Lost)
	if r.Stale > 0 {
		row("stale", "%d (earlier run or unstamped)", r.Stale)
	}
	row("throughput", "%.0f msg/s delivered", r.Throughput)
	row("latency us", "p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f  mean %.0f",
		r.LatencyP50, r.LatencyP90, r.LatencyP99, r.LatencyP999, r.LatencyMax, r.LatencyMean)
	if r.QoS > 0 {
		row("ack latency us", "p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f  mean %.0f  (publish to PUBACK/PUBCOMP)",
			r.AckP50, r.AckP90, r.AckP99, r.AckP999, r.AckMax, r.AckMean)
	}
	row("connect ms", "p50 %.2f  p99 %.2f  (%d connections, %d failed, %d idle)",
		r.ConnectP50, r.ConnectP99, r.Connections, r.ConnectFailures, r.IdleConnections)
	row("tool CPU", "%.0f%% of one core", r.ToolCPUPercent)
	for _, e := range r.Errors {
		row("error", "%s", e)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing report: %w", err)
	}
	return nil
}

func rateText(r float64) string {
	if r == 0 {
		return "max"
	}
	return fmt.Sprintf("%.0f msg/s", r)
}
