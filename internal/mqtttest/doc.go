// Package mqtttest is the support the end-to-end tests share: a raw MQTT
// client speaking the project's own codec with nothing done automatically
// (Client), replicas in the test's process (Server) or as child processes
// of the binary built once per test run (Process, Binary), one cluster
// builder with options (StartCluster). Replicas are driven only through
// package server's exported API or the binary's flags. It is for tests only.
package mqtttest

import "time"

// WaitTimeout bounds every wait for something that should happen.
const WaitTimeout = 5 * time.Second
