package server

// What the tests of package server_test, which drive a server through
// internal/mqtttest's client, compare against.

// RefusalBurst is refusalBurst.
const RefusalBurst = refusalBurst

// LatencyBuckets is latencyBuckets.
var LatencyBuckets = latencyBuckets
