package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// learnedBatch is how many learned entries one batch lookup reads. A hash
// map's batch must hold a whole bucket, and 1024 is far above any bucket's
// length; the buffers, allocated per count, are some 100 KiB, which a scrape
// allocates for each policy.
const learnedBatch = 1024

// LearnedAddrs counts the addresses of each family that DNS answers put in
// force for the name rules (Learn), for metrics. The kernel keeps no count of
// a hash map's entries that a syscall returns, so it reads the learned maps
// a batch at a time, at some 300 ns an entry: 0.3 ms empty, 0.7 ms with a
// thousand addresses, 63 ms with both maps full (DefaultLearnedCapacity
// IPv4 addresses and half as many IPv6 ones; BenchmarkLearnedAddrs). A
// policy loaded or opened without name rules has none.
func (d *Datapath) LearnedAddrs() (v4, v6 int, err error) {
	if v4, err = countLearned[[4]byte](d.objs.Learned4); err != nil {
		return 0, 0, err
	}
	if v6, err = countLearned[[16]byte](d.objs.Learned6); err != nil {
		return 0, 0, err
	}
	return v4, v6, nil
}

// countLearned counts the entries of a learned map, whose keys are K.
func countLearned[K any](m *ebpf.Map) (int, error) {
	keys := make([]K, learnedBatch)
	values := make([]cgwallLearned, learnedBatch)
	var cursor ebpf.MapBatchCursor
	total := 0
	for {
		n, err := m.BatchLookup(&cursor, keys, values, nil)
		total += n
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return total, nil // the end, with the last entries in n
		}
		if err != nil {
			return 0, fmt.Errorf("count learned addresses: %w", err)
		}
	}
}
