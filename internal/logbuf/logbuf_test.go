package logbuf

import (
	"slices"
	"testing"
)

func TestBuffer(t *testing.T) {
	tests := []struct {
		name   string
		limit  int
		writes []string
		parts  []string
		want   []string
		str    string
	}{
		{"lines with every part", 0, []string{"a x\nb y\n", "a y\n"}, []string{"a", "y"}, []string{"a y"}, "a x\nb y\na y\n"},
		{"no parts: every non-empty line", 0, []string{"a\n\nb"}, nil, []string{"a", "b"}, "a\n\nb"},
		{"past the limit, later writes dropped", 3, []string{"ab\n", "cd\n", "ef\n"}, nil, []string{"ab", "cd"}, "ab\ncd\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := Buffer{Limit: tt.limit}
			for _, w := range tt.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if got := b.Lines(tt.parts...); !slices.Equal(got, tt.want) {
				t.Errorf("Lines(%q) = %q, want %q", tt.parts, got, tt.want)
			}
			if got := b.String(); got != tt.str {
				t.Errorf("String() = %q, want %q", got, tt.str)
			}
		})
	}
}
