package resolver

import (
	"container/heap"
	"container/list"
	"errors"
	"net/netip"
	"sync"
	"time"
)

// forgetBatch bounds one Forget call, so that 100k addresses expiring at
// once hold up answers (which wait for forgetMu) one batch at a time.
const forgetBatch = 4096

// errDropped is the error of an answer whose tenant's table was dropped
// while it was answered: its addresses would go into a datapath that is gone
// or replaced.
var errDropped = errors.New("its tenant's learned addresses were dropped meanwhile")

// tables are the learned addresses of every tenant, one table each, and the
// one timer for the earliest expiry of all.
//
// One timer, not one per tenant: the agent serves many cgroups, most of them
// idle, and a goroutine and timer each would cost as much as their tables.
// The tenants' tables are in a heap of their own, by their earliest expiry,
// rather than their items in one shared heap: an expiry round then forgets
// one tenant's batch under that tenant's forgetMu alone, so that one
// cgroup's expiries never hold up another's answers, each Forget call is a
// whole batch of one datapath however the tenants' expiries interleave, and
// Drop takes a table out in one step.
type tables struct {
	minTTL       time.Duration
	maxPerName   int
	now          func() time.Time
	forgetFailed func(t *Tenant, n int, err error)

	mu      sync.Mutex // guards the fields below and every table's
	tenants map[*Tenant]*table
	due     dueHeap   // every table, by its earliest expiry
	armed   time.Time // when the timer fires; zero when it is stopped

	wake     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// table holds one tenant's learned addresses: which asked names hold each
// address, until when.
//
// An address is in the tenant's datapath while some name of the tenant holds
// it. Two locks keep Learn and Forget from undoing each other:
//   - an answer marks its items pending (under mu) before its Learn call,
//     and the expiry round never takes a pending item, so an address is not
//     forgotten before or while its Learn runs;
//   - Learn runs under forgetMu shared, the expiry round (which decides what
//     to forget and forgets it) under forgetMu exclusive, so an address the
//     round lets go of and an answer takes up again is learned after the
//     Forget, not before it.
type table struct {
	set     *tables
	tenant  *Tenant
	learner Learner

	forgetMu sync.RWMutex

	mu      *sync.Mutex // the set's
	dropped bool        // by Drop: no Learner call is made any more
	names   map[string]*name
	holders map[netip.Addr]int // items per address, dying ones included
	expiry  expiryHeap
	index   int // in set.due
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

func newTables(minTTL time.Duration, maxPerName int, now func() time.Time, forgetFailed func(*Tenant, int, error)) *tables {
	return &tables{
		minTTL: minTTL, maxPerName: maxPerName, now: now, forgetFailed: forgetFailed,
		tenants: map[*Tenant]*table{},
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
}

// of returns t's table, made if t has none. An answer takes its table when
// its query is routed, so that a Drop while it is answered fails it (it
// would learn into the datapath that was dropped) rather than start t's
// next table with it.
func (s *tables) of(t *Tenant) *table {
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.tenants[t]
	if tb == nil {
		tb = &table{
			set: s, tenant: t, learner: t.Learner, mu: &s.mu,
			names:   map[string]*name{},
			holders: map[netip.Addr]int{},
		}
		s.tenants[t] = tb
		heap.Push(&s.due, tb)
	}
	return tb
}

// drop discards t's table and returns once no call to its Learner is under
// way: the Learns in flight (whose answers then fail) and an expiry round's
// Forget. Nothing of the table is forgotten.
func (s *tables) drop(t *Tenant) {
	s.mu.Lock()
	tb := s.tenants[t]
	if tb == nil {
		s.mu.Unlock()
		return
	}
	delete(s.tenants, t)
	heap.Remove(&s.due, tb.index)
	tb.dropped = true
	s.mu.Unlock()
	// Every Learn that did not see dropped holds forgetMu shared, and a
	// round's Forget holds it exclusive: taking it waits for them all.
	tb.forgetMu.Lock()
	//lint:ignore SA2001 the lock is taken only to wait for its holders
	tb.forgetMu.Unlock()
}

// learn puts the answer's addresses under the asked name and into force.
// Its items are held (pending) from before Learn until after it returns;
// their lifetime starts when the client can have the answer. On a Learn
// error the items stay and expire as usual: whatever part of the batch
// went in is forgotten then.
func (t *table) learn(asked string, recs []record, pattern string) error {
	items := make([]*item, len(recs))
	addrs := make([]netip.Addr, len(recs))
	// forgetMu comes first so that Drop, once it has marked the table,
	// waits for every Learn that did not see the mark.
	t.forgetMu.RLock()
	t.mu.Lock()
	if t.dropped {
		t.mu.Unlock()
		t.forgetMu.RUnlock()
		return errDropped
	}
	for i, rec := range recs {
		items[i] = t.hold(asked, rec.addr)
		addrs[i] = rec.addr
	}
	t.evict(asked)
	t.settle()
	t.mu.Unlock()

	err := t.learner.Learn(addrs, pattern)
	t.forgetMu.RUnlock()

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dropped {
		return errDropped
	}
	now := t.set.now()
	for i, it := range items {
		it.pending--
		if it.owner != nil {
			it.expiry = later(it.expiry, now.Add(max(recs[i].ttl, t.set.minTTL)))
		}
		heap.Fix(&t.expiry, it.index)
	}
	t.settle()
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
	for len(n.items) > t.set.maxPerName {
		it := n.order.Remove(n.order.Front()).(*item)
		delete(n.items, it.addr)
		it.owner, it.expiry = nil, time.Time{}
		heap.Fix(&t.expiry, it.index)
	}
}

// settle puts the table where its earliest expiry now is among the tenants'
// and wakes the loop if that came before the timer.
func (t *table) settle() {
	heap.Fix(&t.set.due, t.index)
	t.set.rearm()
}

// run is the expiry loop: it forgets what has expired and sleeps until the
// earliest expiry or until an answer brings that earlier.
func (s *tables) run() {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-timer.C:
		case <-s.wake:
		}
		s.expire()
		s.mu.Lock()
		s.armed = time.Time{}
		if next, ok := s.next(); ok {
			s.armed = next
			// Timers since Go 1.23 drop a stale tick on Reset.
			timer.Reset(max(next.Sub(s.now()), 0))
		} else {
			timer.Stop()
		}
		s.mu.Unlock()
	}
}

// expire forgets what has expired in every table, a batch of the table with
// the earliest expiry at a time.
func (s *tables) expire() {
	for {
		s.mu.Lock()
		var tb *table
		if len(s.due) > 0 && s.due[0].expired(s.now()) {
			tb = s.due[0]
		}
		s.mu.Unlock()
		if tb == nil {
			return
		}
		tb.round()
	}
}

// expire forgets the addresses that no name of the table holds any more, a
// batch at a time.
func (t *table) expire() {
	for t.round() {
	}
}

// round forgets one batch and says whether more have expired.
func (t *table) round() (more bool) {
	t.forgetMu.Lock()
	defer t.forgetMu.Unlock()
	gone, more := t.pop()
	if len(gone) > 0 {
		if err := t.learner.Forget(gone); err != nil {
			t.set.forgetFailed(t.tenant, len(gone), err)
		}
	}
	return more
}

// pop removes up to forgetBatch expired items and returns the addresses that
// no item holds any more, and whether more have expired.
func (t *table) pop() (gone []netip.Addr, more bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dropped {
		return nil, false
	}
	defer heap.Fix(&t.set.due, t.index)
	now := t.set.now()
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
	next, ok := t.next()
	return ok && !next.After(now)
}

// next is the table's earliest expiry, if an item can expire.
func (t *table) next() (time.Time, bool) {
	if len(t.expiry) == 0 || t.expiry[0].pending > 0 {
		return time.Time{}, false
	}
	return t.expiry[0].expiry, true
}

// next is the earliest expiry of all tables, if an item can expire.
func (s *tables) next() (time.Time, bool) {
	if len(s.due) == 0 {
		return time.Time{}, false
	}
	return s.due[0].next()
}

// rearm wakes the loop when the earliest expiry came before the timer's.
func (s *tables) rearm() {
	next, ok := s.next()
	if !ok || (!s.armed.IsZero() && !next.Before(s.armed)) {
		return
	}
	s.kick()
}

// kick makes the loop look at the heap again (also what tests with their own
// clock call after moving it).
func (s *tables) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (t *table) kick() { t.set.kick() }

func (s *tables) stop() { s.stopOnce.Do(func() { close(s.done) }) }

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

// dueHeap orders tables by their earliest expiry; tables with nothing that
// can expire sort last.
type dueHeap []*table

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	a, aok := h[i].next()
	b, bok := h[j].next()
	if aok != bok {
		return aok
	}
	return a.Before(b)
}
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *dueHeap) Push(x any) {
	tb := x.(*table)
	tb.index = len(*h)
	*h = append(*h, tb)
}
func (h *dueHeap) Pop() any {
	old := *h
	tb := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return tb
}
