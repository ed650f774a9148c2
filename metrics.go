package main

import (
	"net/http"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// counterCollector exposes the session and bridge counters to Prometheus;
// the values are read when scraped, so the hot path only bumps atomics.
type counterCollector struct{ s *Server }

func (c counterCollector) values() map[string]int64 {
	out := c.s.env.Stats.Snapshot()
	for k, v := range c.s.bridge.Stats() {
		out["bridge_"+k] = v
	}
	return out
}

// Describe implements prometheus.Collector; the metric set is unchecked.
func (c counterCollector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (c counterCollector) Collect(ch chan<- prometheus.Metric) {
	vals := c.values()
	names := make([]string, 0, len(vals))
	for k := range vals {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		desc := prometheus.NewDesc("mqtt_"+k, "MQTT server counter "+k+".", nil, prometheus.Labels{"node": c.s.cfg.NodeID})
		ch <- prometheus.MustNewConstMetric(desc, prometheus.UntypedValue, float64(vals[k]))
	}
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	s.metricsOnce.Do(func() {
		reg := prometheus.NewRegistry()
		reg.MustRegister(counterCollector{s}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		s.metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	})
	s.metrics.ServeHTTP(w, r)
}
