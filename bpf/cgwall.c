//go:build ignore

// cgwall's datapath: per-cgroup packet filter programs that judge every packet's
// remote address against rules kept in maps that userspace edits live.
//
// The decision rule lives in one function, decide(); its Go twin is
// policy.Policy.Decide. Both must agree on every input (see the differential
// tests in internal/datapath).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual MIT/GPL";

// Verdicts use the Aya example's numbers: 0 drops, 1 passes. A rule's action is a
// verdict too.
enum verdict {
	VERDICT_DROP = 0,
	VERDICT_PASS = 1,
};

enum direction {
	DIR_EGRESS = 0,
	DIR_INGRESS = 1,
	DIR_MAX,
};

// Which program made a decision; reported in events.
enum hook {
	HOOK_EGRESS = 0,  // cgroup_skb/egress: every packet sent
	HOOK_INGRESS,     // cgroup_skb/ingress: every packet delivered
	HOOK_CONNECT,     // cgroup/connect4|6: connect() fails with EPERM
	HOOK_SENDMSG,     // cgroup/sendmsg4|6: unconnected sendto() fails with EPERM
	HOOK_SOCK_CREATE, // cgroup/sock_create: raw and packet sockets refused
	HOOK_MAX,
};

enum log_level {
	LOG_NONE = 0,
	LOG_DROP = 1,
	LOG_ALL = 2,
};

// Indexes of the per-CPU stats map, per hook: stats[hook * STAT_MAX + stat].
enum stat {
	STAT_PASS = 0,
	STAT_DROP,
	STAT_AUDIT_DROP,  // would have been dropped; passed because of audit mode
	STAT_MALFORMED,   // IP header unreadable or invalid; dropped (fail closed) and counted as a drop
	STAT_EVENTS_LOST, // ring buffer full; the event was not delivered
	STAT_MAX,
};

enum event_flag {
	EVENT_F_AUDIT = 1 << 0,
	EVENT_F_MALFORMED = 1 << 1,
};

// A rule as stored in every rule map. id ties events to the rule userspace
// knows; 0 means "no rule, the default decided". The counters live in the rule
// itself, added to atomically, so counting costs no extra lookup.
struct rule {
	__u32 id;
	__u8 action; // enum verdict
	__u8 pad[3];
	__u64 packets;
	__u64 bytes;
};

// Lengths an IPv4 prefix rule can have; host rules (/32) are kept apart.
#define LENS4 32

// A policy's settings; one per generation. lens4 lists the lengths that the
// generation's IPv4 prefix rules have, longest first: the lookup tries those
// and no other. A generation's lists never change while it is in force; a
// rule of a new length goes in by building the other generation.
struct config {
	__u8 default_action[DIR_MAX]; // enum verdict per direction
	__u8 audit;
	__u8 log_level; // enum log_level
	__u8 deny_raw;  // refuse raw and packet sockets
	__u8 pad;
	__u8 nlens4[DIR_MAX];
	// The direction's bitmap has a bit per 2^bitmap4_shift addresses: 8 for
	// /24s, 16 for /16s; 0 means it has none.
	__u8 bitmap4_shift[DIR_MAX];
	// The direction's IPv6 bitmap hashes the first bitmap6_len bits of an
	// address, the length of its shortest IPv6 rule; 0 means it has none.
	__u8 bitmap6_len[DIR_MAX];
	__u8 pad2[2];
	__u8 lens4[DIR_MAX][LENS4];
};

// Which generation of the policy is in force. Userspace builds a new policy in
// the other generation and switches with one write of gen, so every hook moves
// from the old policy to the new one at once. Until live is set, the programs
// let everything pass unseen: an attach that dies before it commits leaves
// nothing in force.
struct state {
	__u32 gen; // 0 or 1
	__u32 live;
	__u32 next_rule_id; // userspace's: the next rule ID to hand out
	__u32 pad;
};

struct counter {
	__u64 packets;
	__u64 bytes;
};

// The key of a prefix rule: its length and its address, masked to that length
// (IPv4), or as the LPM trie wants it (IPv6).
struct prefix_key4 {
	__u32 prefixlen;
	__u32 addr; // network order
};

struct prefix_key6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct addr6 {
	__u8 addr[16];
};

// The process behind a decision: its PID (the thread group's, in the initial
// PID namespace) and its thread's command name.
struct owner {
	__u32 pid;
	char comm[16];
};

// One decision, as streamed to userspace.
struct event {
	// When the decision was made: CLOCK_BOOTTIME, which, unlike the
	// monotonic clock, keeps counting through suspend, so that userspace turns
	// it into wall-clock time with one offset read once.
	__u64 boot_ns;
	__u8 src[16]; // IPv4 in the first 4 bytes; zero when the hook does not know it
	__u8 dst[16];
	__u32 rule_id;
	__u32 len;   // packet length; 0 at the socket hooks
	__u16 sport; // host order; 0 when unknown
	__u16 dport;
	__u8 family; // 4 or 6; 0 for a malformed packet or a socket creation
	__u8 action; // enum verdict: the decision, even when audit let it pass
	__u8 hook;   // enum hook
	__u8 proto;  // IPPROTO_*
	__u8 flags;  // enum event_flag
	__u8 sock_family; // HOOK_SOCK_CREATE: AF_* of the refused socket
	__u8 sock_type;   // HOOK_SOCK_CREATE: SOCK_* of the refused socket
	__u8 pad;
	struct owner owner; // pid 0 when the hook cannot know it
};

// Force bpf2go to emit Go types for these.
const struct event *unused_event __attribute__((unused));
const struct owner *unused_owner __attribute__((unused));
const struct rule *unused_rule __attribute__((unused));
const struct config *unused_config __attribute__((unused));
const struct state *unused_state __attribute__((unused));
const struct counter *unused_counter __attribute__((unused));
const struct prefix_key4 *unused_prefix_key4 __attribute__((unused));
const struct prefix_key6 *unused_prefix_key6 __attribute__((unused));
const struct addr6 *unused_addr6 __attribute__((unused));
const enum verdict *unused_verdict __attribute__((unused));
const enum direction *unused_direction __attribute__((unused));
const enum hook *unused_hook __attribute__((unused));
const enum log_level *unused_log_level __attribute__((unused));
const enum event_flag *unused_event_flag __attribute__((unused));
const enum stat *unused_stat __attribute__((unused));

// Rule maps. Host rules (/32, /128) sit in hash maps, consulted first: a host
// match is always the longest prefix, and a hash lookup costs about the same
// at any size. Shorter IPv4 prefixes sit in a hash map keyed by length and
// masked address, tried for each length the policy has, longest first (see
// struct config): IPv4 lists use few lengths. IPv6 lists spread over many
// (/32 to /64 and more), where one probe per length costs more than the walk
// of an LPM trie, so shorter IPv6 prefixes sit in a trie. Each is an inner map
// of a two-generation outer map (see struct state); userspace sizes the hash
// maps for the policy it loads; elements are allocated as they are inserted.
struct host4_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct rule);
};

struct prefix4_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct prefix_key4);
	__type(value, struct rule);
};

struct host6_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct addr6);
	__type(value, struct rule);
};

struct prefix6_map {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 24);
	__type(key, struct prefix_key6);
	__type(value, struct rule);
};

// One bit per IPv4 /24 (large policies: 2 MiB) or /16 (small ones: 8 KiB),
// set when some rule of the direction overlaps it: a clear bit answers "no
// rule" with one load, whatever the policy's size (struct config says which
// granularity a generation has). Userspace sets a rule's bits before it
// inserts the rule, and clears bits only by building a new generation.
#define BITMAP4_WORDS (1 << 18)

struct bitmap4_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	// Filled by userspace in one copy. BPF_F_INNER_MAP lets the outer map's
	// template be small: creating a 2 MiB one costs 1-2 ms of every load.
	__uint(map_flags, BPF_F_MMAPABLE | BPF_F_INNER_MAP);
	__uint(max_entries, BITMAP4_WORDS);
	__type(key, __u32);
	__type(value, __u64);
};

// IPv6 rules spread over too many lengths for a bitmap of units; instead, one
// of 2^16 bits (8 KiB) over a hash of each address's first bitmap6_len bits
// (struct config): a rule can only match an address whose first bits, as
// many as the shortest rule has, are its own, so a clear bit answers "no
// rule" with one load. Userspace sets bits as for the IPv4 bitmap.
#define BITMAP6_WORDS (1 << 10)

struct bitmap6_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE | BPF_F_INNER_MAP);
	__uint(max_entries, BITMAP6_WORDS);
	__type(key, __u32);
	__type(value, __u64);
};

// A persistent policy keeps each rule map in an outer map of two generations
// that userspace switches between. A filter whose policy never changes (run,
// exec) is built from the same source with CGWALL_FIXED: its programs
// reference the rule maps themselves, so loading it writes no map-in-map slot
// (each such write waits for an RCU grace period: 1 to 16 ms, host by host).
#ifdef CGWALL_FIXED
#define GENERATIONS(name, inner) struct inner name SEC(".maps");
#else
#define GENERATIONS(name, inner)                                                           \
	struct {                                                                           \
		__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);                                  \
		__uint(max_entries, 2);                                                    \
		__type(key, __u32);                                                        \
		__array(values, struct inner);                                             \
	} name SEC(".maps");
#endif

GENERATIONS(egress_host4, host4_map)
GENERATIONS(egress_prefix4, prefix4_map)
GENERATIONS(egress_host6, host6_map)
GENERATIONS(egress_prefix6, prefix6_map)
GENERATIONS(ingress_host4, host4_map)
GENERATIONS(ingress_prefix4, prefix4_map)
GENERATIONS(ingress_host6, host6_map)
GENERATIONS(ingress_prefix6, prefix6_map)
GENERATIONS(egress_bitmap4, bitmap4_map)
GENERATIONS(ingress_bitmap4, bitmap4_map)
GENERATIONS(egress_bitmap6, bitmap6_map)
GENERATIONS(ingress_bitmap6, bitmap6_map)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct config);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct state);
} current SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOOK_MAX * STAT_MAX);
	__type(key, __u32);
	__type(value, struct counter);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

// The process that last connected a socket or sent from it unconnected, as
// the socket hooks saw it (see note_owner), kept with the socket while logging
// is on. Packets
// of the socket judged at egress and ingress run where the kernel happens to
// be (softirq for TCP's ACKs and retransmits, another task's context for a
// delivered packet): only this names their process, and never wrongly.
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct owner);
} owners SEC(".maps");

// The policy in force for one decision: its generation, read once, and its
// settings.
struct policy {
	__u32 gen;
	struct config *cfg;
};

// policy_get returns 0 and the policy in force, or -1 when none is (not yet
// committed), in which case the program lets everything pass.
static __always_inline int policy_get(struct policy *pol)
{
	__u32 zero = 0;
	struct state *st = bpf_map_lookup_elem(&current, &zero);

	if (!st || !st->live)
		return -1;
	pol->gen = st->gen & 1;
	pol->cfg = bpf_map_lookup_elem(&settings, &pol->gen);
	return pol->cfg ? 0 : -1;
}

// A packet's facts that the decision and the event need.
struct flow {
	__u8 src[16]; // IPv4 in the first 4 bytes
	__u8 dst[16];
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 proto;
	struct owner owner; // for the event; pid 0 when unknown
};

static __always_inline void count(int hook, enum stat stat, __u32 len)
{
	__u32 key = hook * STAT_MAX + stat;
	struct counter *c = bpf_map_lookup_elem(&stats, &key);

	if (c) {
		c->packets++;
		c->bytes += len;
	}
}

// inner returns a generation's rule map of one kind.
static __always_inline void *inner(void *outer, __u32 gen)
{
#ifdef CGWALL_FIXED
	return outer;
#else
	return bpf_map_lookup_elem(outer, &gen);
#endif
}

// The outcome of matching an address against the rules.
struct match {
	__u32 rule_id; // 0: no rule matched, the default decides
	__u8 action;   // enum verdict; set when rule_id is
	__u8 pad[3];
};

// hit takes a matching rule's verdict and counts the packet against it.
static __always_inline void hit(struct match *m, struct rule *r, __u32 len)
{
	m->rule_id = r->id;
	m->action = r->action;
	__sync_fetch_and_add(&r->packets, 1);
	__sync_fetch_and_add(&r->bytes, len);
}

// A walk over the IPv4 prefix lengths of a generation, with bpf_loop: its
// callback is verified once, however many lengths a policy has.
struct walk {
	__u32 gen;
	__u32 dir;
	__u32 len;     // the packet's, for the rule's counters
	__u32 addr;    // network order
	struct match m;
};

// mask returns the network-order mask of an IPv4 prefix length below 32.
static __always_inline __u32 mask(__u32 bits)
{
	return bits ? bpf_htonl(~0U << (32 - bits)) : 0;
}

// walk4 looks up the i-th longest IPv4 prefix length; it stops the walk at the
// first match, which is the longest. It looks up the settings and the inner
// map again rather than take pointers through struct walk: both lookups are
// inlined array reads, and scalars are all the verifier has to carry from
// the caller's stack into the callback.
static long walk4(__u32 i, struct walk *w)
{
	__u32 gen = w->gen, dir = w->dir & 1;
	struct config *cfg = bpf_map_lookup_elem(&settings, &gen);
	void *prefix = inner(dir == DIR_EGRESS ? (void *)&egress_prefix4 : (void *)&ingress_prefix4, gen);

	if (!cfg || !prefix)
		return 1;
	// i < nlens4 <= LENS4; the mask is the bound the verifier can see.
	struct prefix_key4 key = {.prefixlen = cfg->lens4[dir][i & (LENS4 - 1)]};
	key.addr = w->addr & mask(key.prefixlen);
	struct rule *r = bpf_map_lookup_elem(prefix, &key);
	if (!r)
		return 0;
	hit(&w->m, r, w->len);
	return 1;
}

// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are judged by the IPv4 rules.
static __always_inline int is_v4_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;
	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

// bit_clear says whether bit i of a generation's bitmap (an outer map of
// bitmaps) is clear, which rules out every rule; not where it has none.
static __always_inline int bit_clear(void *outer, __u32 gen, __u32 i)
{
	void *bm = inner(outer, gen);

	if (!bm)
		return 0;
	__u32 word = i >> 6;
	__u64 *w = bpf_map_lookup_elem(bm, &word);
	return w && !(*w & (1ULL << (i & 63)));
}

// no_rule4 says whether the bitmap, where the generation has one, rules out
// every rule for addr.
static __always_inline int no_rule4(int dir, const struct policy *pol, __u32 addr)
{
	__u32 shift = pol->cfg->bitmap4_shift[dir & 1];

	return shift && bit_clear(dir == DIR_EGRESS ? (void *)&egress_bitmap4 : (void *)&ingress_bitmap4,
				  pol->gen, bpf_ntohl(addr) >> (shift & 31));
}

static __always_inline void match4(int dir, const struct policy *pol, __u32 addr, __u32 len,
				   struct match *m)
{
	__u32 gen = pol->gen;

	if (no_rule4(dir, pol, addr))
		return;
	void *host = inner(dir == DIR_EGRESS ? (void *)&egress_host4 : (void *)&ingress_host4, gen);
	struct rule *r = host ? bpf_map_lookup_elem(host, &addr) : 0;
	if (r) {
		hit(m, r, len);
		return;
	}
	__u8 n = pol->cfg->nlens4[dir];
	if (!n)
		return;
	struct walk w = {.gen = gen, .dir = dir, .len = len, .addr = addr, .m = *m};
	bpf_loop(n, walk4, &w, 0);
	*m = w.m;
}

// hash6 hashes the first bits bits (1 to 128) of an IPv6 address to 16 bits.
// Its Go twin is datapath.hash6.
static __always_inline __u32 hash6(const __u8 *addr, __u32 bits)
{
	__u64 hi, lo;

	__builtin_memcpy(&hi, addr, 8);
	__builtin_memcpy(&lo, addr + 8, 8);
	hi = __builtin_bswap64(hi);
	lo = __builtin_bswap64(lo);
	if (bits <= 64) {
		hi &= ~0ULL << ((64 - bits) & 63);
		lo = 0;
	} else {
		lo &= ~0ULL << ((128 - bits) & 63);
	}
	return ((hi ^ lo * 0x9e3779b97f4a7c15ULL) * 0xc2b2ae3d27d4eb4fULL) >> 48;
}

// no_rule6 says whether the IPv6 bitmap, where the generation has one, rules
// out every rule for addr.
static __always_inline int no_rule6(int dir, const struct policy *pol, const __u8 *addr)
{
	__u32 bits = pol->cfg->bitmap6_len[dir & 1];

	return bits && bit_clear(dir == DIR_EGRESS ? (void *)&egress_bitmap6 : (void *)&ingress_bitmap6,
				 pol->gen, hash6(addr, bits));
}

static __always_inline void match6(int dir, const struct policy *pol, const __u8 *addr, __u32 len,
				   struct match *m)
{
	__u32 gen = pol->gen;

	if (no_rule6(dir, pol, addr))
		return;
	void *host = inner(dir == DIR_EGRESS ? (void *)&egress_host6 : (void *)&ingress_host6, gen);
	struct rule *r = host ? bpf_map_lookup_elem(host, addr) : 0;

	if (r) {
		hit(m, r, len);
		return;
	}
	void *prefix = inner(dir == DIR_EGRESS ? (void *)&egress_prefix6 : (void *)&ingress_prefix6, gen);
	if (!prefix)
		return;
	struct prefix_key6 key = {.prefixlen = 128};
	__builtin_memcpy(key.addr, addr, 16);
	r = bpf_map_lookup_elem(prefix, &key);
	if (r)
		hit(m, r, len);
}

// decide is the decision rule: the most specific prefix that contains the
// remote address (the destination on egress, the source on ingress) decides;
// no match means the direction's default. The matching rule, if any, counts
// the packet.
static __always_inline void decide(int dir, const struct flow *f, const struct policy *pol,
				   __u32 len, struct match *m)
{
	const __u8 *addr = dir == DIR_EGRESS ? f->dst : f->src;

	m->rule_id = 0;
	m->action = pol->cfg->default_action[dir];
	// One call site for the IPv4 lookup, so that the verifier walks it once.
	if (f->family == 4 || is_v4_mapped(addr))
		match4(dir, pol, f->family == 4 ? *(__u32 *)addr : *(__u32 *)&addr[12], len, m);
	else
		match6(dir, pol, addr, len, m);
}

// logs says whether the log level asks for an event about a decision.
static __always_inline int logs(const struct config *cfg, __u8 action)
{
	return cfg->log_level == LOG_ALL || (cfg->log_level == LOG_DROP && action == VERDICT_DROP);
}

// event_for reserves an event when the log level asks for this decision. Never
// wait for userspace: a full ring buffer loses the event, and counts it.
static __always_inline struct event *event_for(const struct config *cfg, int hook, __u8 action,
					       __u32 len)
{
	if (!logs(cfg, action))
		return 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(hook, STAT_EVENTS_LOST, len);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->boot_ns = bpf_ktime_get_boot_ns();
	e->action = action;
	e->hook = hook;
	e->len = len;
	e->flags = cfg->audit ? EVENT_F_AUDIT : 0;
	return e;
}

static __always_inline void emit(const struct config *cfg, int hook, const struct flow *f,
				 const struct match *m, __u32 len, __u8 flags)
{
	struct event *e = event_for(cfg, hook, m->action, len);

	if (!e)
		return;
	__builtin_memcpy(e->src, f->src, sizeof(e->src));
	__builtin_memcpy(e->dst, f->dst, sizeof(e->dst));
	e->rule_id = m->rule_id;
	e->sport = f->sport;
	e->dport = f->dport;
	e->family = f->family;
	e->proto = f->proto;
	e->flags |= flags;
	e->owner = f->owner;
	bpf_ringbuf_submit(e, 0);
}

// name_processes is set by userspace before load: the helpers that name the
// current process need CAP_PERFMON in the socket hooks, and a loader without
// it gets programs that name none (the verifier skips the branches it knows
// dead, helpers and all).
volatile const __u8 name_processes = 1;

// current_owner returns the process the hook runs in: the socket hooks run in
// the system call of the process that makes it.
static __always_inline void current_owner(struct owner *o)
{
	if (!name_processes)
		return;
	o->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(o->comm, sizeof(o->comm));
}

// note_owner names the calling process in o, where this decision's event
// needs it, and keeps it with the socket for the events of its packets at
// egress and ingress. It writes the socket's record only when a process
// other than the recorded one calls, so that an unconnected sender pays a
// lookup a datagram, not a name and a write.
static __always_inline void note_owner(struct bpf_sock *sk, struct owner *o, int logged)
{
	o->pid = bpf_get_current_pid_tgid() >> 32;
	if (logged)
		bpf_get_current_comm(o->comm, sizeof(o->comm));
	struct owner *rec = bpf_sk_storage_get(&owners, sk, 0, 0);
	if (rec && rec->pid == o->pid)
		return;
	if (!logged)
		bpf_get_current_comm(o->comm, sizeof(o->comm));
	rec = bpf_sk_storage_get(&owners, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (rec)
		*rec = *o;
}

// skb_owner copies the recorded owner of the packet's socket, if it has one.
static __always_inline void skb_owner(struct __sk_buff *skb, struct owner *o)
{
	struct bpf_sock *sk = skb->sk;

	if (!name_processes)
		return;
	if (sk)
		sk = bpf_sk_fullsock(sk);
	if (!sk)
		return;
	struct owner *rec = bpf_sk_storage_get(&owners, sk, 0, 0);
	if (rec)
		*o = *rec;
}

// enforce counts and logs a decision and turns it into the program's return
// value: in audit mode everything passes.
static __always_inline int enforce(const struct policy *pol, int hook, const struct flow *f,
				   const struct match *m, __u32 len, __u8 flags)
{
	const struct config *cfg = pol->cfg;

	emit(cfg, hook, f, m, len, flags);
	if (m->action == VERDICT_PASS) {
		count(hook, STAT_PASS, len);
		return VERDICT_PASS;
	}
	if (cfg->audit) {
		count(hook, STAT_AUDIT_DROP, len);
		return VERDICT_PASS;
	}
	count(hook, STAT_DROP, len);
	return VERDICT_DROP;
}

// load reads the first size bytes of an skb, straight from its linear part
// when they are there (cgroup_skb programs see the packet from its IP header),
// else through the helper.
static __always_inline int load(struct __sk_buff *skb, void *to, __u32 size)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;

	if (data + size <= end) {
		__builtin_memcpy(to, data, size);
		return 0;
	}
	return bpf_skb_load_bytes(skb, 0, to, size);
}

// load_ports reads the ports of a TCP or UDP packet whose transport header
// starts at off. Ports only feed the log, so they are read only for an event,
// and a packet too short for them is judged all the same.
static __always_inline void load_ports(struct __sk_buff *skb, __u32 off, struct flow *f)
{
	__be16 ports[2];

	if (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP)
		return;
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
		return;
	f->sport = bpf_ntohs(ports[0]);
	f->dport = bpf_ntohs(ports[1]);
}

// parse reads the addresses of an skb that starts at its IP header, and where
// its transport header starts (0 for a fragment after the first).
// It returns 0 for IP, 1 for non-IP and -1 for a malformed IP header.
static __always_inline int parse(struct __sk_buff *skb, struct flow *f, __u32 *l4)
{
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (load(skb, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl < 5 ||
		    ip.ihl * 4 > skb->len)
			return -1;
		f->family = 4;
		f->proto = ip.protocol;
		*(__u32 *)f->src = ip.saddr;
		*(__u32 *)f->dst = ip.daddr;
		*l4 = ip.frag_off & bpf_htons(0x1fff) ? 0 : ip.ihl * 4;
		return 0;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (load(skb, &ip6, sizeof(ip6)) || ip6.version != 6)
			return -1;
		f->family = 6;
		f->proto = ip6.nexthdr;
		__builtin_memcpy(f->src, &ip6.saddr, 16);
		__builtin_memcpy(f->dst, &ip6.daddr, 16);
		*l4 = sizeof(ip6);
		return 0;
	}
	return 1;
}

static __always_inline int filter_skb(struct __sk_buff *skb, int dir)
{
	int hook = dir == DIR_EGRESS ? HOOK_EGRESS : HOOK_INGRESS;
	struct policy pol;
	if (policy_get(&pol))
		return VERDICT_PASS;

	struct flow f = {};
	struct match m = {.action = VERDICT_DROP};
	__u32 l4 = 0;
	int ret = parse(skb, &f, &l4);
	if (ret > 0)
		return VERDICT_PASS;
	if (ret < 0) {
		count(hook, STAT_MALFORMED, skb->len);
		return enforce(&pol, hook, &f, &m, skb->len, EVENT_F_MALFORMED);
	}
	decide(dir, &f, &pol, skb->len, &m);
	// What only the event needs is read only for an event.
	if (logs(pol.cfg, m.action)) {
		if (l4)
			load_ports(skb, l4, &f);
		skb_owner(skb, &f.owner);
	}
	return enforce(&pol, hook, &f, &m, skb->len, 0);
}

SEC("cgroup_skb/egress")
int cgwall_egress(struct __sk_buff *skb)
{
	return filter_skb(skb, DIR_EGRESS);
}

SEC("cgroup_skb/ingress")
int cgwall_ingress(struct __sk_buff *skb)
{
	return filter_skb(skb, DIR_INGRESS);
}

// filter_addr judges the destination of a connect() or sendto() by the egress
// rules, so that a blocked client fails at once with EPERM instead of waiting
// for retransmissions of packets that cgroup_skb would drop.
static __always_inline int filter_addr(struct bpf_sock_addr *ctx, int hook, int v6)
{
	struct policy pol;
	if (policy_get(&pol))
		return VERDICT_PASS;

	struct flow f = {};
	if (v6) {
		__u32 *dst = (__u32 *)f.dst;
		f.family = 6;
		dst[0] = ctx->user_ip6[0];
		dst[1] = ctx->user_ip6[1];
		dst[2] = ctx->user_ip6[2];
		dst[3] = ctx->user_ip6[3];
	} else {
		f.family = 4;
		*(__u32 *)f.dst = ctx->user_ip4;
	}
	f.proto = ctx->protocol;
	f.dport = bpf_ntohs((__u16)ctx->user_port);

	struct match m;
	decide(DIR_EGRESS, &f, &pol, 0, &m);
	if (name_processes && pol.cfg->log_level != LOG_NONE)
		note_owner(ctx->sk, &f.owner, logs(pol.cfg, m.action));
	return enforce(&pol, hook, &f, &m, 0, 0);
}

SEC("cgroup/connect4")
int cgwall_connect4(struct bpf_sock_addr *ctx)
{
	return filter_addr(ctx, HOOK_CONNECT, 0);
}

SEC("cgroup/connect6")
int cgwall_connect6(struct bpf_sock_addr *ctx)
{
	return filter_addr(ctx, HOOK_CONNECT, 1);
}

SEC("cgroup/sendmsg4")
int cgwall_sendmsg4(struct bpf_sock_addr *ctx)
{
	return filter_addr(ctx, HOOK_SENDMSG, 0);
}

SEC("cgroup/sendmsg6")
int cgwall_sendmsg6(struct bpf_sock_addr *ctx)
{
	return filter_addr(ctx, HOOK_SENDMSG, 1);
}

// uapi headers do not export these socket constants.
#define SOCK_RAW 3
#define AF_PACKET 17

// refuse_socket logs and counts a refused socket and says whether to refuse it
// (VERDICT_DROP) or let it be: no policy in force, no deny_raw, or audit mode.
static __always_inline int refuse_socket(__u32 family, __u32 type, __u32 protocol)
{
	struct policy pol;
	if (policy_get(&pol) || !pol.cfg->deny_raw)
		return VERDICT_PASS;

	struct config *cfg = pol.cfg;
	struct event *e = event_for(cfg, HOOK_SOCK_CREATE, VERDICT_DROP, 0);
	if (e) {
		e->sock_family = family;
		e->sock_type = type;
		e->proto = protocol;
		current_owner(&e->owner);
		bpf_ringbuf_submit(e, 0);
	}
	if (cfg->audit) {
		count(HOOK_SOCK_CREATE, STAT_AUDIT_DROP, 0);
		return VERDICT_PASS;
	}
	count(HOOK_SOCK_CREATE, STAT_DROP, 0);
	return VERDICT_DROP;
}

// cgwall_sock_create refuses raw IPv4 and IPv6 sockets. The kernel runs this
// hook for AF_INET and AF_INET6 only.
SEC("cgroup/sock_create")
int cgwall_sock_create(struct bpf_sock *sk)
{
	if (sk->type != SOCK_RAW)
		return VERDICT_PASS;
	return refuse_socket(sk->family, sk->type, sk->protocol);
}

// cgwall_packet_create refuses packet sockets, which bypass cgroup_skb
// entirely, so a policy is only a wall with this in place. cgroup/sock_create
// never sees them; the socket_create LSM hook, attached per cgroup, does.
// Arguments: family, type, protocol, kern. Kernel-internal sockets pass.
SEC("lsm_cgroup/socket_create")
int cgwall_packet_create(unsigned long long *ctx)
{
	if ((int)ctx[0] != AF_PACKET || (int)ctx[3])
		return 1;
	return refuse_socket(ctx[0], ctx[1], ctx[2]) == VERDICT_PASS;
}
