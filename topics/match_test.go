package topics

import (
	"testing"

	"github.com/bridgemq/server/internal/topicgen"
)

func TestMatch(t *testing.T) {
	for _, tt := range topicgen.MatchCases {
		t.Run(tt.Name, func(t *testing.T) {
			if got := Match(tt.Filter, tt.Topic); got != tt.Want {
				t.Fatalf("Match(%q, %q) = %v, want %v", tt.Filter, tt.Topic, got, tt.Want)
			}
		})
	}
}

func TestMatch_DoesNotAllocate(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		for _, tt := range topicgen.MatchCases {
			Match(tt.Filter, tt.Topic)
		}
	})
	if allocs != 0 {
		t.Fatalf("Match allocates %v times per run", allocs)
	}
}
