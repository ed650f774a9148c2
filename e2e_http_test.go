package main

// HTTP helpers for the health and metrics endpoints. Replicas as real
// processes (for the tests that must kill one the hard way) are
// mqtttest.Process.

import (
	"bytes"
	"fmt"
	"net/http"
	"time"
)

// httpStatus GETs http://addr+path and returns the status code.
func httpStatus(addr, path string) (int, error) {
	code, _, err := httpGet(addr, path)
	return code, err
}

// httpGet GETs http://addr+path with a bounded timeout and returns the
// status code and body.
func httpGet(addr, path string) (int, []byte, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, nil, fmt.Errorf("GET %s%s: %w", addr, path, err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("GET %s%s body: %w", addr, path, err)
	}
	return resp.StatusCode, body.Bytes(), nil
}
