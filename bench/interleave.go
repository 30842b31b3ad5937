package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// An interleaved run sends from several sockets by turns, a few
// milliseconds each, and times each socket's turns: one socket per arm, each
// opened in its own network namespace and cgroup, so that each sees one
// variant's filter. Issue #18 holds cgwall to the empty programs within 3
// points, and this host's throughput drifts by more than that between runs
// a second apart (the two no-filter runs around a slot of the full run at
// 4a738a8 differed by more than 3% in 99 of 140 slots); turns of a few
// milliseconds see the same state of the host, whatever it is.

// interleaveEnv is the job of an interleaved sender.
const interleaveEnv = "CGWALL_BENCH_INTERLEAVED"

// burst is the sendmmsg calls of one turn: 1,024 packets, about 3 ms here.
const burst = 16

// senderArm is where one socket of an interleaved run is opened.
type senderArm struct {
	Netns  string // network namespace (path)
	Cgroup string // cgroup (path): its programs judge the socket's packets
}

// interleavedJob is an interleaved run: senderJob's traffic from each arm,
// each arm sending for Duration in all, by turns.
type interleavedJob struct {
	senderJob
	Arms []senderArm
}

// interleavedResult is each arm's packets and time; each arm's network
// namespace transmitted all the packets its arms' sockets sent (checked).
type interleavedResult struct {
	Arms []senderResult `json:"arms"`
}

// interleavedMain opens the arms' sockets, sends from each by turns (in an
// order reversed every cycle, so that a drift within a cycle favours no arm)
// and prints an interleavedResult as JSON.
func interleavedMain(job string) error {
	var j interleavedJob
	if err := json.Unmarshal([]byte(job), &j); err != nil {
		return err
	}
	runtime.LockOSThread() // the thread moves between namespaces
	socks := make([]*socket, len(j.Arms))
	for i, a := range j.Arms {
		s, err := armSocket(j.senderJob, a)
		if err != nil {
			return fmt.Errorf("arm %d (%s, %s): %w", i, a.Netns, a.Cgroup, err)
		}
		defer unix.Close(s.fd)
		socks[i] = s
	}
	if err := pinThread(j.CPU); err != nil {
		return fmt.Errorf("pin to CPU %d: %w", j.CPU, err)
	}
	for end := time.Now().Add(j.Warmup); time.Now().Before(end); {
		for _, s := range socks {
			s.turn()
		}
	}
	for _, s := range socks {
		s.res = senderResult{}
	}
	tx0, err := armTx(j.Arms)
	if err != nil {
		return err
	}
	order := make([]int, len(socks))
	for i := range order {
		order[i] = i
	}
	for total := j.Duration * time.Duration(len(socks)); ; {
		for _, i := range order {
			start := time.Now()
			socks[i].turn()
			socks[i].res.Seconds += time.Since(start).Seconds()
		}
		if spent(socks) >= total.Seconds() {
			break
		}
		for l, r := 0, len(order)-1; l < r; l, r = l+1, r-1 {
			order[l], order[r] = order[r], order[l]
		}
	}
	tx1, err := armTx(j.Arms)
	if err != nil {
		return err
	}
	res := interleavedResult{}
	for _, s := range socks {
		res.Arms = append(res.Arms, s.res)
	}
	if err := checkWire(j.Arms, res.Arms, tx0, tx1); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// armSocket opens an arm's socket: in its network namespace, by this
// thread, and in its cgroup, by this process, which the socket's cgroup is
// taken from when it is made.
func armSocket(j senderJob, a senderArm) (*socket, error) {
	if err := enterNetns(a.Netns); err != nil {
		return nil, err
	}
	procs := a.Cgroup + "/cgroup.procs"
	if err := os.WriteFile(procs, []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		return nil, fmt.Errorf("move into the cgroup: %w", err)
	}
	return newSocket(j)
}

func enterNetns(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter %s: %w", path, err)
	}
	return nil
}

// turn is one arm's turn: burst batches.
func (s *socket) turn() {
	for range burst {
		s.send()
	}
}

func spent(socks []*socket) float64 {
	var t float64
	for _, s := range socks {
		t += s.res.Seconds
	}
	return t
}

// armTx reads the transmitted packets of each arm's network namespace's
// sending device.
func armTx(arms []senderArm) (map[string]uint64, error) {
	tx := map[string]uint64{}
	for _, a := range arms {
		if _, ok := tx[a.Netns]; ok {
			continue
		}
		if err := enterNetns(a.Netns); err != nil {
			return nil, err
		}
		n, err := txPackets(srcDev)
		if err != nil {
			return nil, err
		}
		tx[a.Netns] = n
	}
	return tx, nil
}

// checkWire sets each arm's Wire to its Sent after checking that its
// namespace's device transmitted what its arms sent, give or take the
// neighbour discovery that IPv6 adds: a filter that dropped packets
// silently would show there.
func checkWire(arms []senderArm, res []senderResult, tx0, tx1 map[string]uint64) error {
	sent := map[string]uint64{}
	for i, a := range arms {
		sent[a.Netns] += res[i].Sent
		res[i].Wire = res[i].Sent
	}
	for ns, n := range sent {
		wire := tx1[ns] - tx0[ns]
		if wire < n || wire > n+n/1000 {
			return fmt.Errorf("%s transmitted %d packets, its sockets sent %d", ns, wire, n)
		}
	}
	return nil
}

// nftAlone is the ruleFiles format of the nftables rules that name the
// interleaved runs' nftables cgroup.
const nftAlone = "nft-alone"

// interleavedVariants are the arms of an interleaved run: cgwall, the empty
// programs and no filter in netns a, each in a cgroup of its own, and
// nftables in netns c, which has no other rules. Each is held to the no
// filter of netns a: a no-filter arm in netns c would pay for nftables'
// hook too.
var interleavedVariants = []string{vNone, vFloor, vCgwall, vNft}

// interleaved puts every variant of interleavedVariants in force at once,
// each on its own arm, runs an interleaved sender and returns a sample per
// variant.
func (e *e2eEnv) interleaved(ctx context.Context, round, n, dsts int, set string, files ruleFiles) (out []e2eSample, err error) {
	family := setFamily(set)
	var undo []func() error
	defer func() {
		for _, u := range slices.Backward(undo) {
			if uerr := u(); err == nil {
				err = uerr
			}
		}
	}()
	floor, err := attachEmpty(e.floorCg.Path, floorHooks(family))
	if err != nil {
		return nil, err
	}
	undo = append(undo, floor)
	var cg e2eSample
	stop, err := e.startCgwall(ctx, false, files, &cg)
	if err != nil {
		return nil, err
	}
	undo = append(undo, stop)
	c := e.pairs["c"].src
	if err := command(ctx, nsenter(c, append(netfilter[vNft].load, files[nftAlone])...)...); err != nil {
		return nil, err
	}
	undo = append(undo, func() error { return command(context.Background(), nsenter(c, netfilter[vNft].unload...)...) })

	variants := slices.Clone(interleavedVariants)
	e.rng.Shuffle(len(variants), func(i, j int) { variants[i], variants[j] = variants[j], variants[i] })
	job := interleavedJob{senderJob: senderJob{Family: family, Dsts: dsts, Batch: e.cfg.Batch, CPU: e.cfg.SenderCPU, Warmup: e.cfg.Warmup.Duration, Duration: e.cfg.Duration.Duration}}
	for _, v := range variants {
		job.Arms = append(job.Arms, e.arm(v))
	}
	quiet := waitQuiet(ctx, e.cfg.SenderCPU)
	var res interleavedResult
	timeout := time.Duration(len(variants))*job.Duration + job.Warmup + 20*time.Second
	if err := runChild(ctx, e.self, e.cg.Path, interleaveEnv, job, timeout, &res); err != nil {
		return nil, err
	}
	for i, v := range variants {
		r := res.Arms[i]
		if r.Errors > 0 {
			return nil, fmt.Errorf("interleaved, %s: %d sendmmsg calls failed (%s): the traffic should pass every filter", v, r.Errors, r.LastErr)
		}
		out = append(out, e2eSample{Variant: v, Set: set, Rules: n, Round: round, Dsts: dsts, Quiet: quiet,
			PPS: float64(r.Sent) / r.Seconds, Sent: r.Sent, Wire: r.Wire, Interleaved: true})
	}
	return out, nil
}

// arm is where a variant's socket is opened in an interleaved run.
func (e *e2eEnv) arm(variant string) senderArm {
	a, c := netnsPath(e.pairs["a"].src), netnsPath(e.pairs["c"].src)
	switch variant {
	case vFloor:
		return senderArm{a, e.floorCg.Path}
	case vCgwall:
		return senderArm{a, e.cg.Path}
	case vNft:
		return senderArm{c, e.nftCg.Path}
	}
	return senderArm{a, e.plainCg.Path}
}

// reviewInterleaved summarises an interleaved run for the log: each arm's
// share of no filter.
func reviewInterleaved(samples []e2eSample) string {
	pps := map[string]float64{}
	for _, s := range samples {
		pps[s.Variant] = s.PPS
	}
	var parts []string
	for _, v := range interleavedVariants {
		p := fmt.Sprintf(" %s %.0fk", v, pps[v]/1000)
		if base := pps[vNone]; v != vNone && base > 0 {
			p += fmt.Sprintf(" (%.1f%%)", 100*pps[v]/base)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ";")
}

// interleave runs an interleaved run after the slot of a size of the
// ipv4-mixed or ipv6 set (issue #18's sets) that cfg.Interleaved lists, and
// adds its samples to res.
func (e *e2eEnv) interleave(ctx context.Context, round, n, dsts int, set string, files ruleFiles, res *results, log io.Writer) error {
	// The ipv4-mixed loop also runs the log part's size, without the e2e
	// part.
	if !slices.Contains(e.cfg.Interleaved, n) || !e.cfg.parts["e2e"] && set == "" {
		return nil
	}
	samples, err := e.interleaved(ctx, round, n, dsts, set, files)
	if err != nil {
		return fmt.Errorf("interleaved, %s rules, %d destinations: %w", human(n), dsts, err)
	}
	res.E2E = append(res.E2E, samples...)
	fmt.Fprintf(log, "end to end: round %d/%d, %s, %s %s rules, interleaved:%s\n", round+1, e.cfg.rounds, patternName(dsts), human(n), setName(set), reviewInterleaved(samples))
	return nil
}

func setName(set string) string {
	if set == "" {
		return "ipv4-mixed"
	}
	return set
}
