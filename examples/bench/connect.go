package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/bridgemq/server/internal/mqttconn"
)

// connectResult is one connection attempt: the client, or why it failed.
type connectResult struct {
	c   *mqttconn.Conn
	err error
}

// connectAll opens n connections, at most parallel at once; connection i
// goes to addrs[i%len(addrs)] with client id name(i). It records each
// successful connection's time, from dial to CONNACK, in hist and, when
// filters is not nil, subscribes connection i to filters(i) (not timed).
func connectAll(n, parallel int, addrs []string, name func(int) string, cfg *config,
	filters func(int) []string, hist *Histogram) []connectResult {
	out, _ := connectEach(n, parallel, hist, func(i int) (*mqttconn.Conn, error) {
		c, err := mqttconn.Dial(addrs[i%len(addrs)], name(i), cfg.Clean, cfg.ConnectTimeout, mqttconn.Options{Version: cfg.version()})
		if err == nil && filters != nil {
			if _, err = c.Subscribe(filters(i), cfg.QoS, time.Now().Add(cfg.ConnectTimeout)); err != nil {
				c.NC.Close()
				err = fmt.Errorf("subscribing %s: %w", name(i), err)
			}
		}
		return c, err
	})
	return out
}

// connectEach runs connect(i) for i in [0, n), at most parallel at once,
// records each success's time in hist, and returns the results and the
// wall time of the whole.
func connectEach(n, parallel int, hist *Histogram, connect func(i int) (*mqttconn.Conn, error)) ([]connectResult, time.Duration) {
	out := make([]connectResult, n)
	times := make([]time.Duration, n)
	var wg sync.WaitGroup
	slots := make(chan struct{}, parallel)
	began := time.Now()
	for i := range n {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			start := time.Now()
			c, err := connect(i)
			times[i] = time.Since(start)
			out[i] = connectResult{c: c, err: err}
		}()
	}
	wg.Wait()
	wall := time.Since(began)
	for i, r := range out {
		if r.err == nil {
			hist.Record(int64(times[i]))
		}
	}
	return out, wall
}

// firstError returns how many of results failed and the first failure.
func firstError(results []connectResult) (int, error) {
	var first error
	failed := 0
	for _, r := range results {
		if r.err != nil {
			failed++
			if first == nil {
				first = r.err
			}
		}
	}
	return failed, first
}
