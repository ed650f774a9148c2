package main

import "testing"

func TestSequenceTracker(t *testing.T) {
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
			tr := newSequenceTracker(2, 64)
			for _, m := range tt.in {
				tr.observe(m.pub, m.seq)
			}
			if tr.unique != tt.unique || tr.duplicates != tt.dups || tr.outOfOrder != tt.disorder {
				t.Errorf("unique/duplicates/out of order = %d/%d/%d, want %d/%d/%d",
					tr.unique, tr.duplicates, tr.outOfOrder, tt.unique, tt.dups, tt.disorder)
			}
		})
	}
}

func TestSequenceTracker_ObserveReportsFresh(t *testing.T) {
	tr := newSequenceTracker(1, 0)
	if !tr.observe(0, 9) {
		t.Error("first observe(0, 9) = false, want true")
	}
	if tr.observe(0, 9) {
		t.Error("second observe(0, 9) = true, want false (duplicate)")
	}
}
