package sequence

import "testing"

func TestTracker(t *testing.T) {
	type msg struct {
		pub int
		seq uint32
	}
	tests := []struct {
		name                   string
		in                     []msg
		unique, dups, disorder uint64
	}{
		{"in order", []msg{{0, 0}, {0, 1}, {0, 2}}, 3, 0, 0},
		{"duplicate", []msg{{0, 0}, {0, 1}, {0, 1}}, 2, 1, 0},
		{"redelivered earlier message is a duplicate, not out of order", []msg{{0, 0}, {0, 1}, {0, 2}, {0, 0}}, 3, 1, 0},
		{"late message is out of order", []msg{{0, 0}, {0, 2}, {0, 1}}, 3, 0, 1},
		{"each publisher has its own order", []msg{{0, 5}, {1, 0}, {1, 1}, {0, 6}}, 4, 0, 0},
		{"gap is not out of order", []msg{{0, 0}, {0, 100}}, 2, 0, 0},
		{"same seq from two publishers is not a duplicate", []msg{{0, 3}, {1, 3}}, 2, 0, 0},
		{"grows past the size hint", []msg{{0, 1 << 20}, {0, 1 << 20}, {0, 1}}, 2, 1, 1},
		{"highest sequence", []msg{{1, 4294967295}, {1, 4294967295}}, 1, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker(2, 64)
			for _, m := range tt.in {
				tr.Observe(m.pub, m.seq)
			}
			if tr.Unique() != tt.unique || tr.Duplicates() != tt.dups || tr.OutOfOrder() != tt.disorder {
				t.Errorf("unique/duplicates/out of order = %d/%d/%d, want %d/%d/%d",
					tr.Unique(), tr.Duplicates(), tr.OutOfOrder(), tt.unique, tt.dups, tt.disorder)
			}
		})
	}
}

func TestTracker_ObserveReportsFresh(t *testing.T) {
	tr := NewTracker(1, 0)
	if !tr.Observe(0, 9) {
		t.Error("first Observe(0, 9) = false, want true")
	}
	if tr.Observe(0, 9) {
		t.Error("second Observe(0, 9) = true, want false (duplicate)")
	}
}

func TestTracker_Has(t *testing.T) {
	tr := NewTracker(1, 0)
	tr.Observe(0, 70)
	tr.Observe(3, 1) // a publisher beyond the size hint
	for _, tt := range []struct {
		pub  int
		seq  uint32
		want bool
	}{
		{0, 70, true}, {0, 69, false}, {0, 1 << 20, false}, {3, 1, true}, {2, 1, false}, {9, 0, false}, {-1, 0, false},
	} {
		if got := tr.Has(tt.pub, tt.seq); got != tt.want {
			t.Errorf("Has(%d, %d) = %v, want %v", tt.pub, tt.seq, got, tt.want)
		}
	}
}
