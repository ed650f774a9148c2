package broker

import "testing"

// Size counts what a message holds in memory, its 5.0 properties included:
// the byte bounds on queues and retained pages (issue 8) must not take a
// message of a thousand tiny User Properties for its few payload bytes.
func TestMessage_SizeCountsProperties(t *testing.T) {
	many := make([]UserProperty, 1000)
	for i := range many {
		many[i] = UserProperty{Name: "a", Value: "b"}
	}
	tests := []struct {
		name string
		m    Message
		want int
	}{
		{"topic and payload", Message{Topic: "a/b", Payload: []byte("12345")}, 8},
		{"string properties", Message{Topic: "t", Payload: []byte("p"),
			Properties: &Properties{ContentType: "text/plain", ResponseTopic: "r/1", CorrelationData: []byte{1, 2}}}, 2 + 10 + 3 + 2},
		{"user properties with their overhead", Message{Topic: "t", Properties: &Properties{UserProperties: many}}, 1 + 1000*(userPropertyOverhead+2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.m.Size(); got != tt.want {
				t.Fatalf("Size() = %d, want %d", got, tt.want)
			}
		})
	}
}
