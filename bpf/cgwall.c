//go:build ignore

// cgwall's datapath: per-cgroup packet filter programs that judge every packet's
// remote address against rules kept in maps that userspace edits live.
//
// The decision rule lives in by_addr, judge_at, by_ports and, for addresses
// that DNS answers gave (name rules), decide_name; its Go twin is
// policy.Policy.DecideLearned. Both must agree on every input (see the
// differential tests in internal/datapath).

#include <linux/bpf.h>
#include <linux/errno.h>
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
	HOOK_SENDMSG,     // cgroup/sendmsg4|6: unconnected DNS goes to cgwall's resolver
	HOOK_SOCK_CREATE, // cgroup/sock_create: raw and packet sockets refused
	HOOK_RECVMSG,     // cgroup/recvmsg4|6: DNS answers seem to come from the server asked
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

// What else a prefix has besides its address-only rule: rules of a protocol,
// of single ports, or of port ranges, kept in the port maps under the
// prefix's address (struct port_key). A prefix with none costs no port lookup.
enum site_flag {
	SITE_F_PROTO = 1 << 0, // protocol rules (tcp, icmp): in ports, port 0
	SITE_F_PORT = 1 << 1,  // single-port rules: in ports
	SITE_F_RANGE = 1 << 2, // port-range rules: in ranges
	SITE_F_DIRECT = 1 << 3, // one single-port or range rule: in the entry (struct entry's direct_*)
	// No shorter prefix of the direction has rules and contains this one:
	// where none of its rules matches a packet, the default decides.
	SITE_F_OUTERMOST = 1 << 5,
};

// A rule as stored in every rule map. id ties events to the rule userspace
// knows; 0 means "no rule, the default decided" (in an address map, a prefix
// that only has port rules). The counters live in the rule itself, added to
// atomically, so counting costs no extra lookup.
struct rule {
	__u32 id;
	__u8 action; // enum verdict
	__u8 flags;  // enum site_flag, in an address map
	__u8 bits;   // the prefix length, in an address map
	// In an address map: bit port_bit(proto, port) set for each of the
	// prefix's single-port rules, so that a packet to another port mostly
	// skips the ports map.
	__u8 port_bits;
	__u64 packets;
	__u64 bytes;
};

// An entry of an address map: the prefix's address-only rule (r, of ID 0
// for a prefix that only has port rules) and what a packet needs of its port
// rules where it has any.
struct entry {
	struct rule r;
	// The prefix's direct rule (SITE_F_DIRECT): its first single-port rule,
	// or, where it has none, a range with no rule of its protocol inside
	// it; either is the narrowest rule for every port it holds. Kept whole
	// in the entry, which the walk has read when it judges the port rules
	// (judge_at): a port rule that decides costs no line of its own. 0 for
	// none.
	__u32 direct_id;
	__u16 direct_port; // host order: the first port
	__u8 direct_proto;
	// For a prefix with port rules: 1 + the length of the longest shorter
	// prefix of the direction that has rules and contains it, where a
	// packet that none of its rules matches goes next (0: not known, walk
	// the lengths). Edits that would make it stale rebuild the policy
	// (datapath.Set).
	__u8 shorter;
	__u16 direct_end; // host order: a range's last port, the first for a single port
	__u8 direct_action;
	__u8 pad[5];
	__u64 direct_packets;
	__u64 direct_bytes;
};

// The key of a protocol or single-port rule: the prefix it belongs to, its
// protocol, and its port, 0 for every port of the protocol.
struct port_key {
	__u8 addr[16]; // the prefix's address, masked; IPv4 in the first 4 bytes
	__u8 bits;     // the prefix length
	__u8 family;   // 4 or 6
	__u8 proto;
	// 1 for a range rule that narrower ones cover whole, so that it has no
	// block in the ranges map: kept here for userspace, never looked up.
	__u8 shadowed;
	__u16 port; // host order; with shadowed, the range's first port
	__u16 hi;   // with shadowed, the range's last port
};

// The key of a port-range rule in an LPM trie: a range is stored as the
// aligned blocks of ports where it is the narrowest rule, so that the longest
// match is the narrowest range. Everything before port is matched whole.
struct range_key {
	__u32 prefixlen; // RANGE_FIXED_BITS + the block's bits
	__u8 bits;
	__u8 family;
	__u8 proto;
	__u8 pad;
	__u8 addr[16];
	__be16 port; // network order: the trie compares bits from the top
	__u16 pad2;  // named, so that initializers zero it: loaders without
		     // CAP_PERFMON may not pass unwritten stack to a helper
};

#define RANGE_FIXED_BITS (8 * (4 + 16))

// The port rules of a name pattern sit in the port maps under a key of
// family FAMILY_NAME whose address is the pattern's site number (in its
// first 4 bytes) and whose length is 0: one set of entries however many
// addresses the pattern's answers gave.
#define FAMILY_NAME 0

// An address that a DNS answer gave, for a name that a name rule covers:
// the rules of the name's pattern apply to it as to a host prefix of its own
// (see decide_name). r is the pattern's entry: its address-only rule, if it
// has one, and the flags and port bits of its port rules; site is the
// pattern's site number.
struct learned {
	struct rule r;
	__u32 site;
	__u32 pad;
};

// A DNS server a client asked, which its query went to before the socket
// hooks sent it to cgwall's resolver.
struct origin {
	__u8 addr[16]; // IPv4 in the first 4 bytes
	__u16 port;    // host order
	__u8 family;   // 4 or 6
	__u8 pad;
};

// The client end of a query that reached the resolver, as the resolver sees
// it: the source of the packet.
struct origin_key {
	__u8 addr[16];
	__u16 port; // host order
	__u8 family;
	__u8 proto;
};

// A socket's connection to an address and port that a name rule allowed
// when it opened: its later packets pass when the address expires (see
// opened_allowed). gen is the generation in force when it opened: a new
// policy judges the socket anew.
struct allowed {
	__u8 addr[16];
	__u32 rule_id;
	__u32 gen;
	__u16 port; // host order; 0 for a packet without ports
	__u8 proto;
	__u8 pad;
};

// A range rule keeps its range, for userspace to read back: its blocks do not
// show it where a narrower range cuts into it.
struct range_rule {
	struct rule r;
	__u16 lo;
	__u16 hi;
	__u32 pad;
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
	// The direction's IPv6 bitmap (see struct bitmap6_map): its prefix part
	// hashes the first bitmap6_len bits of an address, the length of the
	// shortest IPv6 prefix rule (128 with none); 0 means it has no bitmap.
	// Its host part has 2^bitmap6_hosts bits.
	__u8 bitmap6_len[DIR_MAX];
	__u8 bitmap6_hosts[DIR_MAX];
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
	__u32 port_code;    // userspace's: the attached programs look up port rules
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
const struct entry *unused_entry __attribute__((unused));
const struct seen_key *unused_seen_key __attribute__((unused));
const struct seen_flow *unused_seen __attribute__((unused));
const struct dns_answer *unused_dns_answer __attribute__((unused));
const struct port_key *unused_port_key __attribute__((unused));
const struct range_key *unused_range_key __attribute__((unused));
const struct range_rule *unused_range_rule __attribute__((unused));
const struct learned *unused_learned __attribute__((unused));
const struct origin *unused_origin __attribute__((unused));
const struct origin_key *unused_origin_key __attribute__((unused));
const enum site_flag *unused_site_flag __attribute__((unused));
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
	__type(value, struct entry);
};

struct prefix4_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct prefix_key4);
	__type(value, struct entry);
};

struct host6_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct addr6);
	__type(value, struct entry);
};

struct prefix6_map {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 24);
	__type(key, struct prefix_key6);
	__type(value, struct entry);
};

// Protocol and single-port rules of every prefix of a direction, both
// families, and port ranges (see struct range_key).
struct ports_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct port_key);
	__type(value, struct rule);
};

struct ranges_map {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 24);
	__type(key, struct range_key);
	__type(value, struct range_rule);
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

// IPv6 rules spread over too many lengths for a bitmap of units; instead, two
// parts of hashed bits (struct config says their sizes). The prefix part,
// 2^16 bits (8 KiB), hashes each address's first bitmap6_len bits: a prefix
// rule can only match an address whose first bits, as many as the shortest
// prefix rule has, are its own. The host part, 2^bitmap6_hosts bits after
// it (8 KiB to 2 MiB, 32 bits a host rule or more), hashes the whole
// address, for the host rules. A clear bit in a part rules out its lookup
// with one load: host rules no longer set bits over their /48 that every
// other address of that /48 then meets (`go run ./bench -only decision`: a
// cold miss at 4k ipv6 rules, 1.6x one rule's with one part, 1.2x with
// two). Userspace sets bits as for the IPv4 bitmap.
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
GENERATIONS(egress_ports, ports_map)
GENERATIONS(ingress_ports, ports_map)
GENERATIONS(egress_ranges, ranges_map)
GENERATIONS(ingress_ranges, ranges_map)

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

// The addresses that DNS answers gave for names that name rules cover, by
// family; not per generation: they come and go with answers and their TTLs,
// and userspace writes each with one update. Sized by userspace.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct learned);
} learned4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct addr6);
	__type(value, struct learned);
} learned6 SEC(".maps");

// The server each redirected socket last asked, for recvmsg to make the
// answer come from it, and for egress to tell the resolver (origins).
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct origin);
} asked SEC(".maps");

// The server each query that reached the resolver was for, by the query's
// source; LRU, so that clients gone make room. An LRU map is allocated
// whole: userspace sizes it (datapath.originsSize) where the programs have
// the name code, and it stays at one entry, unused, where they have not.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1);
	__type(key, struct origin_key);
	__type(value, struct origin);
} origins SEC(".maps");

// Sockets opened to an address a name rule allowed (struct allowed).
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct allowed);
} opened SEC(".maps");

// The destinations the cgroup sent to, for learning a policy from what a
// command does (cgwall exec --learn): one entry per address, protocol and
// destination port, with its first packet, its packets and the process that
// owned the first one's socket. Sized by userspace, which reads it when the
// command is done; one entry when not learning.
struct seen_key {
	__u8 addr[16]; // IPv4 in the first 4 bytes
	__u8 family;
	__u8 proto;
	__u16 port; // host order; 0 for a protocol without ports
};

struct seen_flow {
	__u64 first_ns; // CLOCK_BOOTTIME, as events
	__u64 packets;
	struct owner owner; // pid 0 when not known
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct seen_key);
	__type(value, struct seen_flow);
} seen SEC(".maps");

// learn_flows is set by userspace before load when seen is to be filled.
volatile const __u8 learn_flows = 0;

// When learn_answers is set, the DNS answers that arrive over UDP from port
// 53, for userspace to learn which names the addresses reached had: what a
// filter beside a persistent policy (cgwall watch --learn) has instead of
// the resolver. Sized by userspace: one page when not copying.
volatile const __u8 learn_answers = 0;

#define DNS_ANSWER_MAX 2048 // a power of two past what an unfragmented answer holds
struct dns_answer {
	__u64 boot_ns;
	__u32 len;
	__u32 pad;
	__u8 data[DNS_ANSWER_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} answers SEC(".maps");

// seen_lost counts the destinations that found seen full: what learning
// could not record, which userspace reports rather than writes a policy that
// silently lacks them.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} seen_lost SEC(".maps");

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
	__u16 dport; // 0 when the packet has none: rules of ports do not match it
	__u8 family;
	__u8 proto;
	__u8 l4_known; // proto and ports are read (the socket hooks know them)
	__u8 l4_bad;   // with l4_known: the packet is too short for its ports
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
	// The walk stopped at a prefix with port rules (its length, flags and
	// port bits in site_*), without counting: its port rules decide, if one
	// matches (judge_at). tried says that the prefixes of tried_bits and
	// longer had theirs tried, and none matched: a walk takes their address
	// rules, or goes on. need_ports says that the decision is not over: the
	// lengths are walked again from the top (by_ports).
	__u8 need_ports;
	__u8 tried;
	__u8 tried_bits;
	__u8 site_bits;
	__u8 site_flags;
	__u8 site_port_bits;
	__u8 pad;
};

// count_in takes a matching rule's verdict and counts the packet on its
// counters; hit is it for a struct rule.
static __always_inline void count_in(struct match *m, __u32 id, __u8 action, __u64 *packets, __u64 *bytes,
				     __u32 len)
{
	m->rule_id = id;
	m->action = action;
	__sync_fetch_and_add(packets, 1);
	__sync_fetch_and_add(bytes, len);
}

static __always_inline void hit(struct match *m, struct rule *r, __u32 len)
{
	count_in(m, r->id, r->action, &r->packets, &r->bytes, len);
}

// port_rules is set by userspace before load: whether the policy can have
// port rules. A filter whose policy never changes and has none gets programs
// without the port lookups (the verifier skips the branches it knows dead):
// egress verifies in 2.4k instructions instead of 6.5k.
volatile const __u8 port_rules = 1;

// What judging a packet at one prefix that contains its address found.
enum site_outcome {
	SITE_NONE = 0, // no rule of the prefix matches: shorter prefixes decide
	SITE_HIT,      // a rule matched, and counted the packet
	SITE_PORTS,    // the prefix has port rules, not tried yet: stop there
};

// port_bit hashes a protocol and port to a bit of struct rule's port_bits.
// Its Go twin is datapath.portBit.
static __always_inline __u8 port_bit(__u8 proto, __u16 port)
{
	return 1 << ((port ^ port >> 3 ^ port >> 8 ^ proto) & 7);
}


// port_match looks for the rule of m's site (the prefix that stopped the
// walk, with its flags and port bits) in the port maps that matches a
// packet's protocol and port, most specific first: a single port, the
// narrowest range, the protocol. k is the site's key in the port maps with
// the packet's protocol and port. It returns 1 when a rule matched, and
// counted the packet in m. The site's direct rule, if it has one, was tried
// before (judge_at); name patterns have none.
static __always_inline int port_match(int dir, __u32 gen, struct port_key *k, __u32 len, struct match *m)
{
	__u8 flags = m->site_flags, bits = m->site_port_bits;
	__u16 port = k->port;
	void *ports = inner(dir == DIR_EGRESS ? (void *)&egress_ports : (void *)&ingress_ports, gen);
	struct rule *pr;
	if (port && (flags & SITE_F_PORT) && (bits & port_bit(k->proto, port)) && ports) {
		pr = bpf_map_lookup_elem(ports, k);
		if (pr) {
			hit(m, pr, len);
			return 1;
		}
	}
	void *ranges = port && (flags & SITE_F_RANGE) ?
		inner(dir == DIR_EGRESS ? (void *)&egress_ranges : (void *)&ingress_ranges, gen) : 0;
	if (ranges) {
		struct range_key rk = {
			.prefixlen = RANGE_FIXED_BITS + 16,
			.bits = k->bits,
			.family = k->family,
			.proto = k->proto,
			.port = bpf_htons(port),
		};
		__builtin_memcpy(rk.addr, k->addr, sizeof(rk.addr));
		struct range_rule *rr = bpf_map_lookup_elem(ranges, &rk);
		if (rr) {
			hit(m, &rr->r, len);
			return 1;
		}
	}
	if ((flags & SITE_F_PROTO) && ports) {
		k->port = 0;
		pr = bpf_map_lookup_elem(ports, k);
		if (pr) {
			hit(m, pr, len);
			return 1;
		}
	}
	return 0;
}

// site judges a packet at a prefix of bits bits that contains its address,
// whose entry in the address map is e. A prefix with port rules not tried yet
// stops the walk, which hands its entry to judge_at: its port rules (a port
// rule beats a protocol rule beats the address-only rule) are judged there,
// once the packet's protocol and port are known.
static __always_inline int site(struct entry *e, __u8 bits, __u32 len, struct match *m)
{
	struct rule *r = &e->r;

	if (port_rules && r->flags && (!m->tried || bits < m->tried_bits)) {
		m->need_ports = 1;
		m->site_bits = bits;
		m->site_flags = r->flags;
		m->site_port_bits = r->port_bits;
		return SITE_PORTS;
	}
	if (!r->id)
		return SITE_NONE;
	hit(m, r, len);
	return SITE_HIT;
}

// A walk over the IPv4 prefix lengths of a generation, with bpf_loop: its
// callback is verified once, however many lengths a policy has.
struct walk {
	struct entry *at; // the entry of the prefix with port rules that stopped it
	__u32 gen;
	__u32 len;     // the packet's, for the rule's counters
	__u32 addr;    // network order
	struct match m;
};

// mask returns the network-order mask of an IPv4 prefix length below 32.
static __always_inline __u32 mask(__u32 bits)
{
	return bits ? bpf_htonl(~0U << (32 - bits)) : 0;
}

// prefix4_at returns the entry in a generation's IPv4 prefix map of addr's
// prefix of bits bits (below 32), or 0 where it has none.
static __always_inline struct entry *prefix4_at(int dir, __u32 gen, __u32 addr, __u32 bits)
{
	void *m = inner(dir == DIR_EGRESS ? (void *)&egress_prefix4 : (void *)&ingress_prefix4, gen);
	struct prefix_key4 key = {.prefixlen = bits, .addr = addr & mask(bits)};

	return m ? bpf_map_lookup_elem(m, &key) : 0;
}

// prefix6_at returns the entry in a generation's IPv6 prefix trie of the
// longest prefix of addr up to bits bits, or 0 where it has none.
static __always_inline struct entry *prefix6_at(int dir, __u32 gen, const __u8 *addr, __u32 bits)
{
	void *m = inner(dir == DIR_EGRESS ? (void *)&egress_prefix6 : (void *)&ingress_prefix6, gen);
	struct prefix_key6 key = {.prefixlen = bits};

	__builtin_memcpy(key.addr, addr, 16);
	return m ? bpf_map_lookup_elem(m, &key) : 0;
}

// CALLBACKS_PER_DIRECTION(name, fn, ctx) makes fn(dir, i, c) two bpf_loop
// callbacks of the context type ctx, name_egress and name_ingress, in which
// the direction is a constant, as in PER_DIRECTION's functions. Read from the
// context, it would be a scalar that the verifier knows on one path and not
// on another, and an index into the settings by it is refused to loaders
// without CAP_PERFMON (TestRunWithBPFCapabilitiesOnly, ingress port rules).
// A program then also holds only its own direction's functions: with the
// direction in the context, an ingress program's rounds called the egress
// decision too, 16,845 verified instructions against 9,192 for the ingress
// program of TestVerifiedInstructions' fixed policy.
#define CALLBACKS_PER_DIRECTION(name, fn, ctx)                                                     \
	static long name##_egress(__u32 i, ctx *c)                                                 \
	{                                                                                          \
		return fn(DIR_EGRESS, i, c);                                                       \
	}                                                                                          \
	static long name##_ingress(__u32 i, ctx *c)                                                \
	{                                                                                          \
		return fn(DIR_INGRESS, i, c);                                                      \
	}

// BY_DIRECTION(name, dir) is the function of a PER_DIRECTION or
// CALLBACKS_PER_DIRECTION pair for dir: to call, or to hand to bpf_loop.
// dir is a constant wherever it is used, and the compiler picks.
#define BY_DIRECTION(name, dir) ((dir) == DIR_INGRESS ? name##_ingress : name##_egress)

// walk4 looks up the i-th longest IPv4 prefix length; it stops the walk at the
// first match, which is the longest. It looks up the settings and the inner
// map again rather than take pointers through struct walk: both lookups are
// inlined array reads, and scalars are all the verifier has to carry from
// the caller's stack into the callback.
static __always_inline long walk4_dir(int dir, __u32 i, struct walk *w)
{
	__u32 gen = w->gen;
	struct config *cfg = bpf_map_lookup_elem(&settings, &gen);

	if (!cfg)
		return 1;
	// i < nlens4 <= LENS4; the mask is the bound the verifier can see.
	__u32 bits = cfg->lens4[dir][i & (LENS4 - 1)];
	struct entry *e = prefix4_at(dir, gen, w->addr, bits);
	if (!e)
		return 0;
	int s = site(e, bits, w->len, &w->m);
	if (s == SITE_PORTS)
		w->at = e;
	return s != SITE_NONE;
}

CALLBACKS_PER_DIRECTION(walk4, walk4_dir, struct walk)

// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are judged by the IPv4 rules.
static __always_inline int is_v4_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;
	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

// clear_in says whether bit i of a bitmap is clear; not where the bitmap,
// or its word i, is missing.
static __always_inline int clear_in(void *bm, __u32 i)
{
	if (!bm)
		return 0;
	__u32 word = i >> 6;
	__u64 *w = bpf_map_lookup_elem(bm, &word);
	return w && !(*w & (1ULL << (i & 63)));
}

// bit_clear says whether bit i of a generation's bitmap (an outer map of
// bitmaps) is clear, which rules out every rule; not where it has none.
static __always_inline int bit_clear(void *outer, __u32 gen, __u32 i)
{
	return clear_in(inner(outer, gen), i);
}

// no_rule4 says whether the bitmap, where the generation has one, rules out
// every rule for addr.
static __always_inline int no_rule4(int dir, const struct policy *pol, __u32 addr)
{
	__u32 shift = pol->cfg->bitmap4_shift[dir & 1];

	return shift && bit_clear(dir == DIR_EGRESS ? (void *)&egress_bitmap4 : (void *)&ingress_bitmap4,
				  pol->gen, bpf_ntohl(addr) >> (shift & 31));
}

// taken returns the entry that a walk handed over in *at, and clears *at: a
// pointer spilled to the stack may not be partly overwritten by a loader
// without CAP_PERFMON, and clang reuses the slot of a dead struct walk for
// other variables. Volatile, so that the clearing is not left out as a
// dead store.
static __always_inline struct entry *taken(struct entry **at)
{
	struct entry *e = *at;

	*(struct entry *volatile *)at = 0;
	return e;
}

// at_host says what a host map's entry e, or none, decides (see site), and
// returns it where it has port rules to try.
static __always_inline struct entry *at_host(struct entry *e, __u8 bits, __u32 len, struct match *m, int *done)
{
	int s = e ? site(e, bits, len, m) : SITE_NONE;

	*done = s != SITE_NONE;
	return s == SITE_PORTS ? e : 0;
}

// match4 judges an IPv4 address by the address rules (see by_addr). It
// returns the entry of the prefix with port rules that stopped it, if one
// did.
static __always_inline struct entry *match4(int dir, const struct policy *pol, __u32 addr, __u32 len,
					   struct match *m)
{
	__u32 gen = pol->gen;
	int done;

	if (no_rule4(dir, pol, addr))
		return 0;
	void *host = inner(dir == DIR_EGRESS ? (void *)&egress_host4 : (void *)&ingress_host4, gen);
	struct entry *at = at_host(host ? bpf_map_lookup_elem(host, &addr) : 0, 32, len, m, &done);
	if (done)
		return at;
	__u8 n = pol->cfg->nlens4[dir];
	if (!n)
		return 0;
	struct walk w = {.gen = gen, .len = len, .addr = addr, .m = *m};
	bpf_loop(n, BY_DIRECTION(walk4, dir), &w, 0);
	*m = w.m;
	return taken(&w.at);
}

// masked6 returns the first bits bits (0 to 128) of an IPv6 address, as two
// host-order words.
static __always_inline void masked6(const __u8 *addr, __u32 bits, __u64 *hi, __u64 *lo)
{
	__builtin_memcpy(hi, addr, 8);
	__builtin_memcpy(lo, addr + 8, 8);
	*hi = __builtin_bswap64(*hi);
	*lo = __builtin_bswap64(*lo);
	if (!bits) {
		*hi = 0;
		*lo = 0;
	} else if (bits <= 64) {
		*hi &= ~0ULL << ((64 - bits) & 63);
		*lo = 0;
	} else {
		*lo &= ~0ULL << ((128 - bits) & 63);
	}
}

// hash6 hashes the first bits bits (1 to 128) of an IPv6 address to 64 bits,
// of which the bitmaps take the top ones. Its Go twin is datapath.hash6.
static __always_inline __u64 hash6(const __u8 *addr, __u32 bits)
{
	__u64 hi, lo;

	masked6(addr, bits, &hi, &lo);
	return (hi ^ lo * 0x9e3779b97f4a7c15ULL) * 0xc2b2ae3d27d4eb4fULL;
}

// A walk up the IPv6 prefixes that contain an address, longest first, for
// as long as each has port rules and none matches the packet.
struct walk6 {
	struct entry *at; // as struct walk's
	__u32 gen;
	__u32 len;
	__u32 bits; // the next lookup's: the trie's longest prefix up to bits
	__u8 addr[16];
	struct match m;
};

// step6 takes one step of the walk and says whether the walk is over.
static __always_inline long step6(int dir, struct walk6 *w)
{
	struct entry *e = prefix6_at(dir, w->gen, w->addr, w->bits);

	if (!e)
		return 1;
	int s = site(e, e->r.bits, w->len, &w->m);
	if (s == SITE_PORTS)
		w->at = e;
	if (s != SITE_NONE || !e->r.bits)
		return 1;
	w->bits = e->r.bits - 1;
	return 0;
}

static __always_inline long walk6_dir(int dir, __u32 i, struct walk6 *w)
{
	return step6(dir, w);
}

CALLBACKS_PER_DIRECTION(walk6, walk6_dir, struct walk6)

#define MAYBE_HOST 1
#define MAYBE_PREFIX 2

// maybe6 says which of the IPv6 lookups may find a rule for addr: the host
// map's (MAYBE_HOST), the prefix trie's (MAYBE_PREFIX), both where the
// generation has no bitmap.
static __always_inline int maybe6(int dir, const struct policy *pol, const __u8 *addr)
{
	__u32 bits = pol->cfg->bitmap6_len[dir & 1], hosts = pol->cfg->bitmap6_hosts[dir & 1];
	int maybe = 0;

	if (!bits)
		return MAYBE_HOST | MAYBE_PREFIX;
	// One lookup of the generation's bitmap for both parts.
	void *bm = inner(dir == DIR_EGRESS ? (void *)&egress_bitmap6 : (void *)&ingress_bitmap6, pol->gen);
	if (!clear_in(bm, hash6(addr, bits) >> 48))
		maybe |= MAYBE_PREFIX;
	if (!clear_in(bm, BITMAP6_WORDS * 64 + (__u32)(hash6(addr, 128) >> ((64 - hosts) & 63))))
		maybe |= MAYBE_HOST;
	return maybe;
}

// match6 is match4 for an IPv6 address.
static __always_inline struct entry *match6(int dir, const struct policy *pol, const __u8 *addr, __u32 len,
					   struct match *m)
{
	__u32 gen = pol->gen;
	int maybe = maybe6(dir, pol, addr), done;

	if (maybe & MAYBE_HOST) {
		void *host = inner(dir == DIR_EGRESS ? (void *)&egress_host6 : (void *)&ingress_host6, gen);
		struct entry *at = at_host(host ? bpf_map_lookup_elem(host, addr) : 0, 128, len, m, &done);

		if (done)
			return at;
	}
	if (!(maybe & MAYBE_PREFIX))
		return 0;
	struct walk6 w = {.gen = gen, .len = len, .bits = 128, .m = *m};
	__builtin_memcpy(w.addr, addr, 16);
	// The first step inline: only a prefix with port rules that none
	// matched sends the walk further up.
	if (!step6(dir, &w))
		bpf_loop(128, BY_DIRECTION(walk6, dir), &w, 0);
	*m = w.m;
	return taken(&w.at);
}

// addr4 says whether an address (as struct flow keeps it) is judged by the
// IPv4 rules, and sets *a to its IPv4 address if so: IPv4-mapped IPv6
// addresses are.
static __always_inline int addr4(__u8 family, const __u8 *addr, __u32 *a)
{
	if (family == 4) {
		*a = *(__u32 *)addr;
		return 1;
	}
	if (!is_v4_mapped(addr))
		return 0;
	*a = *(__u32 *)&addr[12];
	return 1;
}

// remote_addr copies the remote address of a flow: the destination on
// egress, the source on ingress. A copy, not a pointer into the flow: a
// pointer chosen by direction is arithmetic on a pointer that a global
// function got, which loaders without CAP_PERFMON may not do.
static __always_inline void remote_addr(int dir, const struct flow *f, __u8 *a)
{
	// The barrier keeps the compiler from turning the branches into one
	// copy from a computed address.
	if (dir == DIR_EGRESS) {
		__builtin_memcpy(a, f->dst, 16);
	} else {
		asm volatile("" ::: "memory");
		__builtin_memcpy(a, f->src, 16);
	}
}

// site_key sets k to the port maps' key of the remote address's prefix of
// bits bits, with the packet's protocol and port.
static __always_inline void site_key(int dir, const struct flow *f, __u8 bits, struct port_key *k)
{
	__u8 addr[16];

	remote_addr(dir, f, addr);
	k->bits = bits;
	k->proto = f->proto;
	k->port = f->dport;
	__u32 a4;
	if (addr4(f->family, addr, &a4)) {
		k->family = 4;
		*(__u32 *)k->addr = a4 & mask(bits & 63);
		return;
	}
	__u64 hi, lo;
	k->family = 6;
	masked6(addr, bits, &hi, &lo);
	hi = __builtin_bswap64(hi);
	lo = __builtin_bswap64(lo);
	__builtin_memcpy(k->addr, &hi, 8);
	__builtin_memcpy(k->addr + 8, &lo, 8);
}

// entry_at returns the entry in a generation's address maps of the prefix of
// bits bits (at most k's) of k's address, or 0 where it has none. For an
// IPv6 prefix it is the trie's longest prefix up to bits.
static __always_inline struct entry *entry_at(int dir, __u32 gen, const struct port_key *k, __u32 bits)
{
	void *m;

	if (k->family == 4) {
		__u32 a4 = *(__u32 *)k->addr;
		if (bits >= 32) {
			m = inner(dir == DIR_EGRESS ? (void *)&egress_host4 : (void *)&ingress_host4, gen);
			return m ? bpf_map_lookup_elem(m, &a4) : 0;
		}
		return prefix4_at(dir, gen, a4, bits);
	}
	if (bits >= 128) {
		m = inner(dir == DIR_EGRESS ? (void *)&egress_host6 : (void *)&ingress_host6, gen);
		return m ? bpf_map_lookup_elem(m, k->addr) : 0;
	}
	return prefix6_at(dir, gen, k->addr, bits);
}

// PER_DIRECTION(name, fn, params, args...) makes fn(dir, args...) two
// global functions of the parameters params, name_egress and name_ingress.
// The verifier checks each global function once, not at every call, and the
// direction is a constant in each: an index into the settings that varies
// is pointer arithmetic, which loaders without CAP_PERFMON may not do. Each
// has a parameter gen and uses it, if only in an empty asm: where fn does
// not (the Fixed build has no generations), clang would pass whatever its
// register held, and the verifier refuses a pointer for a scalar.
#define PER_DIRECTION(name, fn, params, ...)                                                       \
	__noinline int name##_egress params                                                        \
	{                                                                                          \
		asm volatile("" ::"r"(gen));                                                       \
		return fn(DIR_EGRESS, __VA_ARGS__);                                                \
	}                                                                                          \
	__noinline int name##_ingress params                                                       \
	{                                                                                          \
		asm volatile("" ::"r"(gen));                                                       \
		return fn(DIR_INGRESS, __VA_ARGS__);                                               \
	}

// What judge_at reads of the entry of the prefix that stopped the walk: a
// copy, as a global function cannot take a pointer into a map from a loader
// without CAP_PERFMON (the verifier refuses the call: "Caller passes invalid
// args"). The rules of the entry are counted by the caller, which has it.
struct site_view {
	__u32 id;
	__u32 direct_id;
	__u16 direct_port;
	__u16 direct_end;
	__u8 direct_proto;
	__u8 shorter;
	__u8 pad[2];
};

// What judge_at found: the caller's entry's direct rule or address rule
// decides, or neither (JUDGED: another rule decided and counted, or the
// default, or the decision goes on, with need_ports set).
enum judged {
	JUDGED = 0,
	JUDGED_DIRECT,
	JUDGED_ADDR,
};

// judge_at judges a packet, whose protocol and port are known, at the prefix
// with port rules that stopped the walk (m's site), whose entry v is: by the
// port rule of that prefix that matches it, most specific first, else by its
// address rule. The direct rule goes first, the narrowest for every port it
// holds, and needs no key; the ports map's and the ranges trie's rules count
// the packet here. Where none matches, the prefix is tried and the decision
// goes on: to the default where the prefix is the outermost, else to the
// shorter prefix its entry names (one lookup). Only where that is not known,
// gone (an edit removed it in place) or has port rules itself does it leave
// need_ports set: the lengths are walked again from the top (by_ports),
// skipping the prefixes tried. One global function per direction, checked
// once: inline, the verifier went through it again for every kind of
// address map the entry can come from, twice the instructions for the
// egress program of a policy with port rules (BenchmarkLoadPorts).
static __always_inline int judge_at_dir(int dir, __u32 gen, const struct flow *f, const struct site_view *v,
					__u32 len, struct match *m)
{
	struct port_key k = {};

	if (!f || !v || !m)
		return JUDGED;
	m->need_ports = 0;
	if ((m->site_flags & SITE_F_DIRECT) && v->direct_proto == f->proto && v->direct_port <= f->dport &&
	    f->dport <= v->direct_end)
		return JUDGED_DIRECT;
	site_key(dir, f, m->site_bits, &k);
	if (port_match(dir, gen, &k, len, m))
		return JUDGED;
	if (v->id)
		return JUDGED_ADDR;
	m->tried = 1;
	m->tried_bits = m->site_bits;
	if (m->site_flags & SITE_F_OUTERMOST)
		return JUDGED;
	struct entry *e = v->shorter ? entry_at(dir, gen, &k, v->shorter - 1) : 0;
	if (!e || site(e, e->r.bits, len, m) != SITE_HIT)
		m->need_ports = 1;
	return JUDGED;
}

PER_DIRECTION(judge_at, judge_at_dir,
	      (__u32 gen, const struct flow *f, const struct site_view *v, __u32 len, struct match *m), gen, f, v,
	      len, m)

// judge judges a packet at the entry at that the walk handed over
// (judge_at), and counts it on the entry's rule where one of those decides.
static __always_inline void judge(int dir, __u32 gen, const struct flow *f, struct entry *at, __u32 len,
				  struct match *m)
{
	struct site_view v = {
		.id = at->r.id,
		.direct_id = at->direct_id,
		.direct_port = at->direct_port,
		.direct_end = at->direct_end,
		.direct_proto = at->direct_proto,
		.shorter = at->shorter,
	};
	int j = BY_DIRECTION(judge_at, dir)(gen, f, &v, len, m);

	// The barrier ends one branch with what the other has not, so that the
	// compiler does not merge the two counts into one at an offset chosen
	// by the branch taken: pointer arithmetic, which loaders without
	// CAP_PERFMON may not do.
	if (j == JUDGED_DIRECT) {
		count_in(m, at->direct_id, at->direct_action, &at->direct_packets, &at->direct_bytes, len);
		asm volatile("" ::: "memory");
	} else if (j == JUDGED_ADDR) {
		hit(m, &at->r, len);
	}
}

// by_addr is the decision rule by address: the longest prefix that contains
// the remote address (the destination on egress, the source on ingress) and
// has a rule matching the packet decides; no match means the direction's
// default. The matching rule, if any, counts the packet. A prefix with port
// rules not tried yet stops it with need_ports set: by_addr returns its
// entry, for judge_at.
static __always_inline struct entry *by_addr(int dir, const struct policy *pol, const struct flow *f, __u32 len,
					    struct match *m)
{
	__u8 addr[16];

	remote_addr(dir, f, addr);
	m->rule_id = 0;
	m->action = pol->cfg->default_action[dir];
	m->need_ports = 0;
	__u32 a4;
	// One call site for the IPv4 lookup, so that the verifier walks it once.
	if (addr4(f->family, addr, &a4))
		return match4(dir, pol, a4, len, m);
	return match6(dir, pol, addr, len, m);
}

static __always_inline int load_l4(struct __sk_buff *skb, __u32 off, struct flow *f);

// decide decides for a flow: by address, and by the port rules of the prefix
// that stopped that, with the packet's protocol and ports read only then,
// from skb at l4. Without skb (0) they are known: the socket hooks', or a
// packet's in by_ports's rounds. It returns -1 for a packet whose ports
// cannot be read. decide_in (no skb) and decide_skb are it per direction.
static __always_inline int decide(int dir, struct __sk_buff *skb, __u32 gen, struct flow *f, __u32 l4, __u32 len,
				  struct match *m)
{
	struct policy pol = {.gen = gen & 1};

	if (!f || !m)
		return 0;
	pol.cfg = bpf_map_lookup_elem(&settings, &pol.gen);
	if (!pol.cfg)
		return 0;
	struct entry *at = by_addr(dir, &pol, f, len, m);
	if (!port_rules || !at)
		return 0;
	if (skb && load_l4(skb, l4, f))
		return -1;
	judge(dir, pol.gen, f, at, len, m);
	return 0;
}

PER_DIRECTION(decide_in, decide, (__u32 gen, struct flow *f, __u32 len, struct match *m), 0, gen, f, 0, len, m)

// name_rules is set by userspace before load: whether the policy has name
// rules. Only then do DNS queries go through cgwall's resolver and learned
// addresses decide; a policy without them gets programs without that code.
volatile const __u8 name_rules = 0;

// The resolver's addresses (network order), set with name_rules, and the
// network namespace it listens in: a query from another namespace cannot
// reach it.
volatile const __u32 resolver4 = 0;
volatile const __u32 resolver6[4] = {};
volatile const __u32 resolver4_port = 0;
volatile const __u32 resolver6_port = 0;
volatile const __u64 resolver_netns = 0;

// learned_of returns the entry of an address that DNS answers gave, or 0.
static __always_inline struct learned *learned_of(const __u8 *dst, __u8 family)
{
	__u8 addr[16];
	__u32 a4;

	__builtin_memcpy(addr, dst, 16);
	if (addr4(family, addr, &a4))
		return bpf_map_lookup_elem(&learned4, &a4);
	return bpf_map_lookup_elem(&learned6, addr);
}

// decide_name judges an egress packet that no address rule matched by the
// rules of the name pattern its destination was learned under, if it was:
// a port rule beats a protocol rule beats the pattern's address-only rule
// (policy.DecideLearned). The caller has read the packet's protocol and
// ports where the policy has port rules. It returns 1 for a packet that the
// pattern's port rules would judge but whose ports cannot be read (dropped
// as malformed, as at an address with port rules); else 0, with m set if a
// rule matched. Global, so that the verifier checks it once.
__noinline int decide_name(__u32 gen, struct flow *f, __u32 len, struct match *m)
{
	if (!f || !m)
		return 0;
	struct learned *l = learned_of(f->dst, f->family);
	if (!l)
		return 0;
	if (port_rules && l->r.flags) {
		if (!f->l4_known || f->l4_bad)
			return 1;
		struct port_key k = {.family = FAMILY_NAME, .proto = f->proto, .port = f->dport};
		*(__u32 *)k.addr = l->site;
		m->site_flags = l->r.flags;
		m->site_port_bits = l->r.port_bits;
		if (port_match(DIR_EGRESS, gen & 1, &k, len, m))
			return 0;
	}
	if (l->r.id)
		hit(m, &l->r, len);
	return 0;
}

// same_addr compares two addresses as struct flow keeps them.
static __always_inline int same_addr(const __u8 *a, const __u8 *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1];
}

// same_flow says whether a socket's allowance is for this packet's address,
// protocol and port, in the generation in force.
static __always_inline int same_flow(const struct allowed *a, __u32 gen, const struct flow *f)
{
	return a->gen == gen && a->proto == f->proto && a->port == f->dport && same_addr(a->addr, f->dst);
}

// MAX_SITES bounds the prefixes one decision can try the port rules of: one
// per prefix length, 129 for IPv6.
#define MAX_SITES 129

// A round of by_ports: the decision so far and what it needs, copied, so
// that bpf_loop's callback, checked once, gets them as its context.
struct rounds {
	struct flow f;
	struct match m;
	__u32 gen;
	__u32 len;
};

// round walks the lengths again, which judges the next prefix with port
// rules, if any; it says whether the decision is over.
static __always_inline long round_dir(int dir, __u32 i, struct rounds *r)
{
	if (!r->m.need_ports)
		return 1;
	BY_DIRECTION(decide_in, dir)(r->gen, &r->f, r->len, &r->m);
	return !r->m.need_ports;
}

CALLBACKS_PER_DIRECTION(round, round_dir, struct rounds)

// by_ports finishes a decision that the first prefix with port rules did not
// make (need_ports): the first of the prefixes, longest first, whose port
// rules or address rule matches decides. Most decisions end at the first
// prefix, or the one its entry names: the rounds, which copy the flow and
// the match in and out, are for the rest.
static __always_inline void by_ports(int dir, struct flow *f, __u32 gen, __u32 len, struct match *m)
{
	if (!port_rules || !m->need_ports)
		return;
	struct rounds r = {.f = *f, .m = *m, .gen = gen, .len = len};
	bpf_loop(MAX_SITES - 1, BY_DIRECTION(round, dir), &r, 0);
	*m = r.m;
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

// full_sock returns the full socket that sent or gets a packet, or 0 (none,
// or a request or timewait socket, which keep no socket storage).
static __always_inline struct bpf_sock *full_sock(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;

	return sk ? bpf_sk_fullsock(sk) : 0;
}

// skb_owner copies the recorded owner of the packet's socket, if it has one.
static __always_inline void skb_owner(struct __sk_buff *skb, struct owner *o)
{
	if (!name_processes)
		return;
	struct bpf_sock *sk = full_sock(skb);
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
// else through the helper. The copy is of 32-bit words: through a void
// pointer clang assumes nothing about alignment and copies byte by byte,
// 40 loads and 40 stores for an IPv6 header. Both IP headers are multiples
// of 4 bytes, and the hosts cgwall is built for (amd64, arm64) read
// unaligned words, so the verifier checks no alignment of packet reads
// (BenchmarkEgress/ipv6, warm, medians of 5 runs interleaved with the
// byte copy: a miss at one rule 92 -> 87 ns, a hit 126 -> 112 ns).
static __always_inline int load(struct __sk_buff *skb, void *to, __u32 size)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;

	if (data + size <= end) {
		__builtin_memcpy((__u32 *)to, (const __u32 *)data, size);
		return 0;
	}
	return bpf_skb_load_bytes(skb, 0, to, size);
}

// has_ports says whether a protocol's header begins with the two ports that
// rules match: TCP, UDP and SCTP (policy.HasPorts).
static __always_inline int has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

// The IPv6 extension headers that the transport header can follow.
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
#define EXT_HEADERS_MAX 3

// skip_ext6 walks an IPv6 packet's extension headers from off to its
// transport header: it sets *proto, and returns where the transport header
// starts, 0 for a fragment after the first (no ports), or -1 when the chain
// cannot be read or is longer than EXT_HEADERS_MAX: such a packet cannot be
// judged by its protocol, and is dropped as malformed.
static __always_inline int skip_ext6(struct __sk_buff *skb, __u32 off, __u8 *proto)
{
	for (int i = 0; i < EXT_HEADERS_MAX; i++) {
		__u8 h[4];

		switch (*proto) {
		case NEXTHDR_HOP:
		case NEXTHDR_ROUTING:
		case NEXTHDR_DEST:
		case NEXTHDR_AUTH:
			if (bpf_skb_load_bytes(skb, off, h, 2))
				return -1;
			off += *proto == NEXTHDR_AUTH ? (h[1] + 2) * 4 : (h[1] + 1) * 8;
			*proto = h[0];
			break;
		case NEXTHDR_FRAGMENT:
			if (bpf_skb_load_bytes(skb, off, h, 4))
				return -1;
			*proto = h[0];
			if ((h[2] << 8 | h[3]) & 0xfff8)
				return 0;
			off += 8;
			break;
		default:
			return off;
		}
	}
	return -1;
}

// l4_of reads a packet's transport protocol (through IPv6 extension headers,
// from off, for family_proto = family << 8 | the IP header's protocol) and
// ports, from its transport header at off (0 for a fragment after the first,
// which has none). It returns the protocol in bits 32-39, the source port in
// bits 16-31 and the destination port in bits 0-15, or -1 for a packet too
// short for them. Inline: as a global function (checked once) it was
// refused to loaders with only CAP_BPF (EFAULT, cause not found), which is
// why the walk of extension headers is bounded at three.
static __always_inline long l4_of(struct __sk_buff *skb, __u32 off, __u32 family_proto)
{
	__u8 proto = family_proto & 0xff;
	__be16 ports[2];

	if (family_proto >> 8 == 6 && off) {
		int at = skip_ext6(skb, off, &proto);
		if (at < 0)
			return -1;
		off = at;
	}
	long out = (long)proto << 32;
	if (!off || !has_ports(proto))
		return out;
	// In place after a header of its usual length, IPv4's without options
	// or IPv6's without extensions: a constant offset. Else through the
	// helper: a direct read at a variable offset is pointer arithmetic,
	// which loaders without CAP_PERFMON may not do.
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	if (off == 20 && data + 24 <= end)
		__builtin_memcpy(ports, data + 20, sizeof(ports));
	else if (off == 40 && data + 44 <= end)
		__builtin_memcpy(ports, data + 40, sizeof(ports));
	else if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
		return -1;
	return out | (long)bpf_ntohs(ports[0]) << 16 | bpf_ntohs(ports[1]);
}

// load_l4 sets the flow's protocol and ports from the packet (see l4_of),
// once: it returns -1 for a packet too short for them, now or when read
// before. Only a decision at a prefix with port rules, or an event, needs
// them.
static __always_inline int load_l4(struct __sk_buff *skb, __u32 off, struct flow *f)
{
	if (f->l4_known)
		return f->l4_bad ? -1 : 0;
	long l4 = l4_of(skb, off, (__u32)f->family << 8 | f->proto);

	f->l4_known = 1;
	if (l4 < 0) {
		f->l4_bad = 1;
		return -1;
	}
	f->proto = l4 >> 32;
	f->sport = l4 >> 16;
	f->dport = l4;
	return 0;
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

// resolver_addr says whether an address (as struct flow keeps it) is
// cgwall's resolver's, and resolver_port whether a port (host order) is its
// port in that family.
static __always_inline int resolver_addr(__u8 family, const __u8 *addr)
{
	const __u32 *a = (const __u32 *)addr;

	if (family == 4)
		return a[0] == resolver4;
	return a[0] == resolver6[0] && a[1] == resolver6[1] && a[2] == resolver6[2] && a[3] == resolver6[3];
}

static __always_inline int resolver_port(__u8 family, __u16 port)
{
	return bpf_htons(port) == (family == 4 ? resolver4_port : resolver6_port);
}

// note_origin tells the resolver which server a query was for: the socket
// hooks kept it with the client's socket (asked), and the resolver sees the
// packet's source.
static __always_inline void note_origin(struct __sk_buff *skb, const struct flow *f)
{
	struct bpf_sock *sk = full_sock(skb);

	if (!sk)
		return;
	struct origin *o = bpf_sk_storage_get(&asked, sk, 0, 0);
	if (!o)
		return;
	struct origin_key k = {.port = f->sport, .family = f->family, .proto = f->proto};
	__builtin_memcpy(k.addr, f->src, 16);
	struct origin *had = bpf_map_lookup_elem(&origins, &k);
	if (had && same_addr(had->addr, o->addr) && had->port == o->port && had->family == o->family)
		return;
	struct origin v = *o;
	bpf_map_update_elem(&origins, &k, &v, BPF_ANY);
}

// dns_passes says whether a packet is DNS between the cgroup and cgwall's
// resolver, which passes whatever the rules say: the resolver judges the
// query by its name. A query on its way there has its server noted.
static __always_inline int dns_passes(struct __sk_buff *skb, int dir, struct flow *f, __u32 l4)
{
	// The address first: only packets to or from the resolver's address
	// read their ports.
	if (!resolver_addr(f->family, dir == DIR_EGRESS ? f->dst : f->src))
		return 0;
	if (load_l4(skb, l4, f))
		return 0;
	if (f->proto != IPPROTO_UDP && f->proto != IPPROTO_TCP)
		return 0;
	if (!resolver_port(f->family, dir == DIR_EGRESS ? f->dport : f->sport))
		return 0;
	if (dir == DIR_EGRESS)
		note_origin(skb, f);
	return 1;
}

// opened_allowed remembers, with the socket, that a name rule allowed its
// packet to this address and port; and lets a packet that no rule matched
// pass when its socket was so allowed, in the generation in force. An
// address whose TTL ran out so does not cut a connection opened while it was
// allowed, while a rule that matches the packet (which decides before this)
// or a new policy (another generation) still does. by_name says that a name
// rule decided m. It returns -1 for a packet whose ports cannot be read.
static __always_inline int opened_allowed(struct __sk_buff *skb, __u32 gen, __u32 l4, struct flow *f,
					  struct match *m, int by_name)
{
	if (!by_name && m->action == VERDICT_PASS)
		return 0;
	struct bpf_sock *sk = full_sock(skb);
	if (!sk)
		return 0;
	struct allowed *a = bpf_sk_storage_get(&opened, sk, 0, 0);
	if (!by_name && !a)
		return 0;
	if (load_l4(skb, l4, f))
		return -1;
	if (!by_name) {
		if (a && same_flow(a, gen, f)) {
			m->action = VERDICT_PASS;
			m->rule_id = a->rule_id;
		}
		return 0;
	}
	if (m->action != VERDICT_PASS || (a && same_flow(a, gen, f)))
		return 0;
	a = bpf_sk_storage_get(&opened, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (a) {
		__builtin_memcpy(a->addr, f->dst, 16);
		a->rule_id = m->rule_id;
		a->gen = gen;
		a->proto = f->proto;
		a->port = f->dport;
	}
	return 0;
}

// by_names finishes an egress decision that no address rule made: by the
// learned address's name rules, else by whether the socket opened while
// one allowed it. It returns -1 for a packet whose ports cannot be read.
static __always_inline int by_names(struct __sk_buff *skb, __u32 gen, __u32 l4, struct flow *f,
				    struct match *m)
{
	// Read first, where the policy has port rules, so that one lookup of
	// the learned address decides: its pattern's port rules need them.
	if (port_rules)
		load_l4(skb, l4, f);
	if (decide_name(gen, f, skb->len, m))
		return -1;
	return opened_allowed(skb, gen, l4, f, m, m->rule_id != 0);
}

// learning_lost counts what learning could not record (seen_lost).
static __always_inline void learning_lost(void)
{
	__u32 zero = 0;
	__u64 *lost = bpf_map_lookup_elem(&seen_lost, &zero);

	if (lost)
		__sync_fetch_and_add(lost, 1);
}

// seen_key_of is the key of a flow's destination in seen.
static __always_inline void seen_key_of(const struct flow *f, struct seen_key *k)
{
	__builtin_memcpy(k->addr, f->dst, sizeof(k->addr));
	k->family = f->family;
	k->proto = f->proto;
	k->port = f->dport;
}

// seen_put records a destination not seen before; n->owner is filled in
// only then, by the caller's own means.
static __always_inline void seen_put(const struct seen_key *k, struct seen_flow *n)
{
	long err = bpf_map_update_elem(&seen, k, n, BPF_NOEXIST);

	if (err == -EEXIST) {
		// Another CPU recorded it first.
		struct seen_flow *s = bpf_map_lookup_elem(&seen, k);
		if (s)
			__sync_fetch_and_add(&s->packets, n->packets);
	} else if (err) {
		learning_lost();
	}
}

// note_seen records an egress packet's destination in seen. A fragment
// after the first carries no ports and is not recorded: the first one was.
static __always_inline void note_seen(struct __sk_buff *skb, __u32 l4, struct flow *f)
{
	struct seen_key k = {};

	if (!l4 || load_l4(skb, l4, f))
		return;
	seen_key_of(f, &k);
	struct seen_flow *s = bpf_map_lookup_elem(&seen, &k);
	if (s) {
		__sync_fetch_and_add(&s->packets, 1);
		return;
	}
	struct seen_flow n = {.first_ns = bpf_ktime_get_boot_ns(), .packets = 1};
	skb_owner(skb, &n.owner);
	seen_put(&k, &n);
}

// note_connect records the destination of a connect(), which a UDP socket
// may make without ever sending (ping does, to pick its source address):
// the connect hook judges it all the same. It counts no packet.
static __always_inline void note_connect(const struct flow *f)
{
	struct seen_key k = {};

	seen_key_of(f, &k);
	if (bpf_map_lookup_elem(&seen, &k))
		return;
	struct seen_flow n = {.first_ns = bpf_ktime_get_boot_ns()};
	current_owner(&n.owner);
	seen_put(&k, &n);
}

// note_answer copies a DNS answer that arrives from port 53 over UDP to
// answers. One that finds the ring buffer full is counted with seen_lost:
// both are what learning could not record.
static __always_inline void note_answer(struct __sk_buff *skb, __u32 l4, struct flow *f)
{
	if (!l4 || load_l4(skb, l4, f) || f->proto != IPPROTO_UDP || f->sport != 53)
		return;
	__u32 off = l4 + 8; // past the UDP header
	if (skb->len <= off)
		return;
	__u32 len = skb->len - off;
	if (len > DNS_ANSWER_MAX - 1)
		len = DNS_ANSWER_MAX - 1; // a longer one is cut, and fails to parse: no names, not wrong ones
	struct dns_answer *a = bpf_ringbuf_reserve(&answers, sizeof(*a), 0);
	if (!a) {
		learning_lost();
		return;
	}
	a->boot_ns = bpf_ktime_get_boot_ns();
	a->len = len;
	a->pad = 0;
	// len is from 1 to DNS_ANSWER_MAX - 1 already: n is len, written so
	// that the verifier sees it from 1 to DNS_ANSWER_MAX.
	__u32 n = ((len - 1) & (DNS_ANSWER_MAX - 1)) + 1;
	if (bpf_skb_load_bytes(skb, off, a->data, n)) {
		bpf_ringbuf_discard(a, 0);
		return;
	}
	bpf_ringbuf_submit(a, 0);
}

// A packet's first round of decide takes the packet, to read its ports in
// the function whose walk holds the prefix's entry.
PER_DIRECTION(decide_skb, decide, (struct __sk_buff *skb, __u32 gen, struct flow *f, __u32 l4, struct match *m),
	      skb, gen, f, l4, skb->len, m)

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
	if (name_rules && dns_passes(skb, dir, &f, l4)) {
		count(hook, STAT_PASS, skb->len);
		return VERDICT_PASS;
	}
	int bad = BY_DIRECTION(decide_skb, dir)(skb, pol.gen, &f, l4, &m);
	if (!bad)
		by_ports(dir, &f, pol.gen, skb->len, &m);
	if (name_rules && dir == DIR_EGRESS && !bad && !m.rule_id)
		bad = by_names(skb, pol.gen, l4, &f, &m);
	if (bad) {
		m.action = VERDICT_DROP;
		m.rule_id = 0;
		count(hook, STAT_MALFORMED, skb->len);
		return enforce(&pol, hook, &f, &m, skb->len, EVENT_F_MALFORMED);
	}
	if (learn_flows && dir == DIR_EGRESS)
		note_seen(skb, l4, &f);
	if (learn_answers && dir == DIR_INGRESS)
		note_answer(skb, l4, &f);
	// What only the event needs is read only for an event.
	if (logs(pol.cfg, m.action)) {
		load_l4(skb, l4, &f);
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

// is_dns says whether a connect() or sendto() is to a DNS server: UDP or TCP
// to port 53.
static __always_inline int is_dns(struct bpf_sock_addr *ctx)
{
	return ctx->user_port == bpf_htons(53) &&
	       (ctx->protocol == IPPROTO_UDP || ctx->protocol == IPPROTO_TCP);
}

// redirect sends a DNS query to cgwall's resolver instead of the server
// asked, which it keeps with the socket (asked). A process in another network
// namespace than the resolver's cannot reach it: its query fails, as does
// one whose server cannot be kept (fail closed).
static __always_inline int redirect(struct bpf_sock_addr *ctx, int v6)
{
	struct origin o = {.port = 53};

	if (bpf_get_netns_cookie(ctx) != resolver_netns)
		return VERDICT_DROP;
	if (v6) {
		__u32 *a = (__u32 *)o.addr;
		o.family = 6;
		a[0] = ctx->user_ip6[0];
		a[1] = ctx->user_ip6[1];
		a[2] = ctx->user_ip6[2];
		a[3] = ctx->user_ip6[3];
	} else {
		o.family = 4;
		*(__u32 *)o.addr = ctx->user_ip4;
	}
	struct origin *rec = bpf_sk_storage_get(&asked, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!rec)
		return VERDICT_DROP;
	*rec = o;
	if (!v6) {
		ctx->user_ip4 = resolver4;
		ctx->user_port = resolver4_port;
	} else if (is_v4_mapped(o.addr)) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = resolver4;
		ctx->user_port = resolver4_port;
	} else {
		ctx->user_ip6[0] = resolver6[0];
		ctx->user_ip6[1] = resolver6[1];
		ctx->user_ip6[2] = resolver6[2];
		ctx->user_ip6[3] = resolver6[3];
		ctx->user_port = resolver6_port;
	}
	return VERDICT_PASS;
}

// filter_addr judges the destination of a connect() by the egress rules, so
// that a blocked client fails at once with EPERM instead of waiting for
// retransmissions of packets that cgroup_skb would drop. An unconnected
// sendto() is judged once, at egress, whose drop fails it with EPERM too:
// the sendmsg hooks only send DNS to the resolver and note the sender.
static __always_inline int filter_addr(struct bpf_sock_addr *ctx, int hook, int v6)
{
	struct policy pol;
	if (policy_get(&pol))
		return VERDICT_PASS;
	if (name_rules && is_dns(ctx))
		return redirect(ctx, v6);

	struct flow f = {};
	if (hook == HOOK_SENDMSG) {
		if (name_processes && (learn_flows || pol.cfg->log_level != LOG_NONE))
			note_owner(ctx->sk, &f.owner, 0);
		return VERDICT_PASS;
	}
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
	if (has_ports(f.proto))
		f.dport = bpf_ntohs((__u16)ctx->user_port);
	f.l4_known = 1;

	struct match m = {};
	decide_in_egress(pol.gen, &f, 0, &m);
	by_ports(DIR_EGRESS, &f, pol.gen, 0, &m);
	if (name_rules && !m.rule_id)
		decide_name(pol.gen, &f, 0, &m);
	if (name_processes && (learn_flows || pol.cfg->log_level != LOG_NONE))
		note_owner(ctx->sk, &f.owner, logs(pol.cfg, m.action));
	if (learn_flows)
		note_connect(&f);
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

// answer_from makes an answer from the resolver seem to come from the server
// the query was for: stub resolvers (glibc's, musl's) drop an answer from
// another address than the one they asked.
static __always_inline int answer_from(struct bpf_sock_addr *ctx, int v6)
{
	if (!name_rules)
		return 1;
	if (v6) {
		int to6 = ctx->user_ip6[0] == resolver6[0] && ctx->user_ip6[1] == resolver6[1] &&
			  ctx->user_ip6[2] == resolver6[2] && ctx->user_ip6[3] == resolver6[3] &&
			  ctx->user_port == resolver6_port;
		int mapped = ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 &&
			     ctx->user_ip6[2] == bpf_htonl(0x0000ffff) && ctx->user_ip6[3] == resolver4 &&
			     ctx->user_port == resolver4_port;
		if (!to6 && !mapped)
			return 1;
	} else if (ctx->user_ip4 != resolver4 || ctx->user_port != resolver4_port) {
		return 1;
	}
	struct origin *o = bpf_sk_storage_get(&asked, ctx->sk, 0, 0);
	if (!o || o->family != (v6 ? 6 : 4))
		return 1;
	const __u32 *a = (const __u32 *)o->addr;
	if (v6) {
		ctx->user_ip6[0] = a[0];
		ctx->user_ip6[1] = a[1];
		ctx->user_ip6[2] = a[2];
		ctx->user_ip6[3] = a[3];
	} else {
		ctx->user_ip4 = a[0];
	}
	ctx->user_port = bpf_htons(o->port);
	return 1;
}

SEC("cgroup/recvmsg4")
int cgwall_recvmsg4(struct bpf_sock_addr *ctx)
{
	return answer_from(ctx, 0);
}

SEC("cgroup/recvmsg6")
int cgwall_recvmsg6(struct bpf_sock_addr *ctx)
{
	return answer_from(ctx, 1);
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
