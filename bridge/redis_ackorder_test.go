package bridge

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
)

// A client's answers come in the order its messages were queued, whatever
// the order the publishers answer them in, each with its own result.
func TestAckOrder_AnswersOneClientInQueueOrder(t *testing.T) {
	o := newAckOrder()
	var got []string
	answer := make([]func(error), 4)
	for i := range answer {
		answer[i] = o.queue("c", func(err error) { got = append(got, fmt.Sprint(i, err)) })
	}
	failed := errors.New("failed")
	answer[2](failed)
	answer[1](nil)
	if len(got) != 0 {
		t.Fatalf("answered %q before the first message's answer", got)
	}
	answer[0](nil)
	if want := []string{"0 <nil>", "1 <nil>", "2 failed"}; !slices.Equal(got, want) {
		t.Fatalf("answered %q, want %q", got, want)
	}
	answer[3](nil)
	if len(got) != 4 || got[3] != "3 <nil>" {
		t.Fatalf("answered %q, want the fourth last", got)
	}
	if n := o.lineCount(); n != 0 {
		t.Fatalf("%d lines kept after every answer was given", n)
	}
}

// A message waiting on a stalled master holds back its own client's later
// answers only: another client's come at once.
func TestAckOrder_StalledClientHoldsBackNoOtherClient(t *testing.T) {
	o := newAckOrder()
	stalled := o.queue("slow", func(error) {})
	var slowLater, fast bool
	later := o.queue("slow", func(error) { slowLater = true })
	o.queue("fast", func(error) { fast = true })(nil)
	later(nil)
	if !fast || slowLater {
		t.Fatalf("fast client answered %v, slow client's later message answered %v; want true, false", fast, slowLater)
	}
	stalled(nil)
	if !slowLater {
		t.Fatal("the slow client's later message was not answered after the first")
	}
}

// Answers given from many goroutines at once (one per shard publisher)
// still reach each client in queue order, one callback at a time.
func TestAckOrder_ConcurrentPublishersKeepEachClientsOrder(t *testing.T) {
	const clients, perClient, publishers = 8, 500, 16
	o := newAckOrder()
	got := make([][]int, clients)
	inCallback := make([]int, clients) // callbacks of a client never overlap: no lock needed
	work := make([]chan func(), publishers)
	var wg sync.WaitGroup
	for i := range work {
		work[i] = make(chan func(), clients*perClient)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for f := range work[i] {
				f()
			}
		}()
	}
	for n := range perClient {
		for c := range clients {
			answer := o.queue(fmt.Sprint("client", c), func(error) {
				inCallback[c]++
				if inCallback[c] != 1 {
					t.Errorf("client %d: callbacks overlap", c)
				}
				got[c] = append(got[c], n)
				inCallback[c]--
			})
			work[(n*7+c)%publishers] <- func() { answer(nil) }
		}
	}
	for _, w := range work {
		close(w)
	}
	wg.Wait()
	for c, seq := range got {
		if len(seq) != perClient {
			t.Fatalf("client %d: %d answers, want %d", c, len(seq), perClient)
		}
		for i, n := range seq {
			if n != i {
				t.Fatalf("client %d: answer %d is message %d's", c, i, n)
			}
		}
	}
	if n := o.lineCount(); n != 0 {
		t.Fatalf("%d lines kept after every answer was given", n)
	}
}

// lineCount is the number of client ids with answers not yet given.
func (o *ackOrder) lineCount() int {
	n := 0
	for i := range o.stripes {
		st := &o.stripes[i]
		st.mu.Lock()
		n += len(st.lines)
		st.mu.Unlock()
	}
	return n
}
