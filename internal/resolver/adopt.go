package resolver

import (
	"container/heap"
	"net/netip"
)

// adoptedName holds the addresses a tenant's datapath had learned before
// this resolver served it. No query name is empty.
const adoptedName = ""

// Adopt puts addrs, in force in t's datapath already (an agent that starts
// again finds what the one before learned), in t's table: they expire
// after the TTL floor unless an answer holds them longer. Call it after
// Serve.
func (r *Resolver) Adopt(t *Tenant, addrs []netip.Addr) {
	if tables := r.tablesNow(); tables != nil && len(addrs) > 0 {
		tables.of(t).adopt(addrs)
	}
}

func (t *table) adopt(addrs []netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dropped {
		return
	}
	expiry := t.set.now().Add(t.set.minTTL)
	for _, a := range addrs {
		it := t.hold(adoptedName, a)
		it.pending--
		it.expiry = later(it.expiry, expiry)
		heap.Fix(&t.expiry, it.index)
	}
	t.settle()
}
