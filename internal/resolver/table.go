package resolver

import (
	"container/heap"
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// forgetBatch bounds one Forget call, so that 100k addresses expiring at
// once hold up answers (which wait for forgetMu) one batch at a time.
const forgetBatch = 4096

// table holds the learned addresses: which asked names hold each address,
// until when, and the one timer for the earliest expiry.
//
// An address is in the datapath while some name holds it. Two locks keep
// Learn and Forget from undoing each other:
//   - an answer marks its items pending (under mu) before its Learn call,
//     and the expiry round never takes a pending item, so an address is not
//     forgotten before or while its Learn runs;
//   - Learn runs under forgetMu shared, the expiry round (which decides what
//     to forget and forgets it) under forgetMu exclusive, so an address the
//     round lets go of and an answer takes up again is learned after the
//     Forget, not before it.
type table struct {
	learner      Learner
	minTTL       time.Duration
	maxPerName   int
	now          func() time.Time
	forgetFailed func(n int, err error)

	forgetMu sync.RWMutex

	mu      sync.Mutex
	names   map[string]*name
	holders map[netip.Addr]int // items per address, dying ones included
	expiry  expiryHeap
	armed   time.Time // when the timer fires; zero when it is stopped

	wake     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// name is the addresses one asked name holds, the least recently answered
// first.
type name struct {
	items map[netip.Addr]*item
	order list.List // of *item
}

// item is one address held by one name.
type item struct {
	addr    netip.Addr
	owner   *name // nil once evicted: the item is dying
	key     string
	elem    *list.Element
	expiry  time.Time
	pending int // answers whose Learn has not returned
	index   int // in the heap
}

func newTable(l Learner, minTTL time.Duration, maxPerName int, now func() time.Time, forgetFailed func(int, error)) *table {
	return &table{
		learner: l, minTTL: minTTL, maxPerName: maxPerName, now: now, forgetFailed: forgetFailed,
		names:   map[string]*name{},
		holders: map[netip.Addr]int{},
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
}

// learn puts the answer's addresses under the asked name and into force.
// Its items are held (pending) from before Learn until after it returns;
// their lifetime starts when the client can have the answer. On a Learn
// error the items stay and expire as usual: whatever part of the batch
// went in is forgotten then.
func (t *table) learn(asked string, recs []record, pattern string) error {
	items := make([]*item, len(recs))
	addrs := make([]netip.Addr, len(recs))
	t.mu.Lock()
	for i, rec := range recs {
		items[i] = t.hold(asked, rec.addr)
		addrs[i] = rec.addr
	}
	t.evict(asked)
	t.mu.Unlock()

	t.forgetMu.RLock()
	err := t.learner.Learn(addrs, pattern)
	t.forgetMu.RUnlock()

	t.mu.Lock()
	now := t.now()
	for i, it := range items {
		it.pending--
		if it.owner != nil {
			it.expiry = later(it.expiry, now.Add(max(recs[i].ttl, t.minTTL)))
		}
		heap.Fix(&t.expiry, it.index)
	}
	t.rearm()
	t.mu.Unlock()
	return err
}

// hold returns asked's item for a, made if new, pending and most recently
// answered.
func (t *table) hold(asked string, a netip.Addr) *item {
	n := t.names[asked]
	if n == nil {
		n = &name{items: map[netip.Addr]*item{}}
		t.names[asked] = n
	}
	it := n.items[a]
	if it == nil {
		it = &item{addr: a, owner: n, key: asked}
		it.elem = n.order.PushBack(it)
		n.items[a] = it
		t.holders[a]++
		it.pending++
		heap.Push(&t.expiry, it)
		return it
	}
	n.order.MoveToBack(it.elem)
	it.pending++
	heap.Fix(&t.expiry, it.index)
	return it
}

// evict takes the least recently answered addresses of asked over the cap
// out of the name. They die at once, but through the expiry round, which
// alone forgets.
func (t *table) evict(asked string) {
	n := t.names[asked]
	for len(n.items) > t.maxPerName {
		it := n.order.Remove(n.order.Front()).(*item)
		delete(n.items, it.addr)
		it.owner, it.expiry = nil, time.Time{}
		heap.Fix(&t.expiry, it.index)
	}
	t.rearm()
}

// run is the expiry loop: it forgets what has expired and sleeps until the
// earliest expiry or until an answer brings that earlier.
func (t *table) run() {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-t.done:
			return
		case <-timer.C:
		case <-t.wake:
		}
		t.expire()
		t.mu.Lock()
		t.armed = time.Time{}
		if next, ok := t.next(); ok {
			t.armed = next
			// Timers since Go 1.23 drop a stale tick on Reset.
			timer.Reset(max(next.Sub(t.now()), 0))
		} else {
			timer.Stop()
		}
		t.mu.Unlock()
	}
}

// expire forgets the addresses no name holds any more, a batch at a time.
func (t *table) expire() {
	for {
		t.forgetMu.Lock()
		gone, more := t.pop()
		if len(gone) > 0 {
			if err := t.learner.Forget(gone); err != nil {
				t.forgetFailed(len(gone), err)
			}
		}
		t.forgetMu.Unlock()
		if !more {
			return
		}
	}
}

// pop removes up to forgetBatch expired items and returns the addresses that
// no item holds any more, and whether more have expired.
func (t *table) pop() (gone []netip.Addr, more bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for range forgetBatch {
		if !t.expired(now) {
			return gone, false
		}
		it := heap.Pop(&t.expiry).(*item)
		if n := it.owner; n != nil {
			n.order.Remove(it.elem)
			delete(n.items, it.addr)
			if len(n.items) == 0 {
				delete(t.names, it.key)
			}
		}
		if t.holders[it.addr]--; t.holders[it.addr] == 0 {
			delete(t.holders, it.addr)
			gone = append(gone, it.addr)
		}
	}
	return gone, t.expired(now)
}

func (t *table) expired(now time.Time) bool {
	return len(t.expiry) > 0 && t.expiry[0].pending == 0 && !t.expiry[0].expiry.After(now)
}

// next is the earliest expiry, if an item can expire.
func (t *table) next() (time.Time, bool) {
	if len(t.expiry) == 0 || t.expiry[0].pending > 0 {
		return time.Time{}, false
	}
	return t.expiry[0].expiry, true
}

// rearm wakes the loop when the earliest expiry came before the timer's.
func (t *table) rearm() {
	next, ok := t.next()
	if !ok || (!t.armed.IsZero() && !next.Before(t.armed)) {
		return
	}
	t.kick()
}

// kick makes the loop look at the heap again (also what tests with their own
// clock call after moving it).
func (t *table) kick() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *table) stop() { t.stopOnce.Do(func() { close(t.done) }) }

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// expiryHeap orders items by expiry; pending items, which cannot expire,
// sort last.
type expiryHeap []*item

func (h expiryHeap) Len() int { return len(h) }
func (h expiryHeap) Less(i, j int) bool {
	if (h[i].pending > 0) != (h[j].pending > 0) {
		return h[j].pending > 0
	}
	return h[i].expiry.Before(h[j].expiry)
}
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *expiryHeap) Push(x any) {
	it := x.(*item)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *expiryHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}
