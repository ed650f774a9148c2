// Package mqtttest is the support the end-to-end tests share: a raw MQTT
// client speaking the project's own codec with nothing done automatically,
// and the server binary built once per test process. It is for tests only.
package mqtttest

import "time"

// WaitTimeout bounds every wait for something that should happen.
const WaitTimeout = 5 * time.Second
