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

// A policy's settings; one per generation.
struct config {
	__u8 default_action[DIR_MAX]; // enum verdict per direction
	__u8 audit;
	__u8 log_level; // enum log_level
	__u8 deny_raw;  // refuse raw and packet sockets
	__u8 pad[3];
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

struct lpm_key4 {
	__u32 prefixlen;
	__u32 addr; // network order
};

struct lpm_key6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct addr6 {
	__u8 addr[16];
};

// One decision, as streamed to userspace.
struct event {
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
};

// Force bpf2go to emit Go types for these.
const struct event *unused_event __attribute__((unused));
const struct rule *unused_rule __attribute__((unused));
const struct config *unused_config __attribute__((unused));
const struct state *unused_state __attribute__((unused));
const struct counter *unused_counter __attribute__((unused));
const struct lpm_key4 *unused_lpm_key4 __attribute__((unused));
const struct lpm_key6 *unused_lpm_key6 __attribute__((unused));
const struct addr6 *unused_addr6 __attribute__((unused));
const enum verdict *unused_verdict __attribute__((unused));
const enum direction *unused_direction __attribute__((unused));
const enum hook *unused_hook __attribute__((unused));
const enum log_level *unused_log_level __attribute__((unused));
const enum event_flag *unused_event_flag __attribute__((unused));
const enum stat *unused_stat __attribute__((unused));

// Rule maps. Host rules (/32, /128) live in hash maps, consulted first: a host
// match is always the longest prefix, and a hash lookup costs the same at any
// size. Shorter prefixes live in LPM tries. Each is an inner map of a
// two-generation outer map (see struct state). Userspace sizes the hash maps for
// the policy it loads; LPM tries allocate per entry, so their limit costs nothing.
struct host4_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct rule);
};

struct prefix4_map {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 24);
	__type(key, struct lpm_key4);
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
	__type(key, struct lpm_key6);
	__type(value, struct rule);
};

#define GENERATIONS(name, inner)                                                           \
	struct {                                                                           \
		__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);                                  \
		__uint(max_entries, 2);                                                    \
		__type(key, __u32);                                                        \
		__array(values, struct inner);                                             \
	} name SEC(".maps");

GENERATIONS(egress_host4, host4_map)
GENERATIONS(egress_prefix4, prefix4_map)
GENERATIONS(egress_host6, host6_map)
GENERATIONS(egress_prefix6, prefix6_map)
GENERATIONS(ingress_host4, host4_map)
GENERATIONS(ingress_prefix4, prefix4_map)
GENERATIONS(ingress_host6, host6_map)
GENERATIONS(ingress_prefix6, prefix6_map)

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

static __always_inline void *inner(void *outer, __u32 gen)
{
	return bpf_map_lookup_elem(outer, &gen);
}

static __always_inline struct rule *lookup4(void *host, void *prefix, __u32 addr)
{
	struct rule *r = host ? bpf_map_lookup_elem(host, &addr) : 0;

	if (r || !prefix)
		return r;
	struct lpm_key4 key = {.prefixlen = 32, .addr = addr};
	return bpf_map_lookup_elem(prefix, &key);
}

static __always_inline struct rule *lookup6(void *host, void *prefix, const __u8 *addr)
{
	struct rule *r = host ? bpf_map_lookup_elem(host, addr) : 0;

	if (r || !prefix)
		return r;
	struct lpm_key6 key = {.prefixlen = 128};
	__builtin_memcpy(key.addr, addr, 16);
	return bpf_map_lookup_elem(prefix, &key);
}

// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are judged by the IPv4 rules.
static __always_inline int is_v4_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;
	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

static __always_inline struct rule *match4(int dir, __u32 gen, __u32 addr)
{
	if (dir == DIR_EGRESS)
		return lookup4(inner(&egress_host4, gen), inner(&egress_prefix4, gen), addr);
	return lookup4(inner(&ingress_host4, gen), inner(&ingress_prefix4, gen), addr);
}

// match finds the rule with the longest prefix that contains the remote
// address: the destination on egress, the source on ingress.
static __always_inline struct rule *match(int dir, __u32 gen, const struct flow *f)
{
	const __u8 *addr = dir == DIR_EGRESS ? f->dst : f->src;

	if (f->family == 4)
		return match4(dir, gen, *(__u32 *)addr);
	if (is_v4_mapped(addr))
		return match4(dir, gen, *(__u32 *)&addr[12]);
	if (dir == DIR_EGRESS)
		return lookup6(inner(&egress_host6, gen), inner(&egress_prefix6, gen), addr);
	return lookup6(inner(&ingress_host6, gen), inner(&ingress_prefix6, gen), addr);
}

// decide is the decision rule: the most specific matching prefix decides; no
// match means the direction's default. It returns the verdict and sets *rule to
// the deciding rule, or NULL for the default.
static __always_inline __u8 decide(int dir, const struct flow *f, const struct policy *pol,
				   struct rule **rule)
{
	struct rule *r = match(dir, pol->gen, f);

	*rule = r;
	return r ? r->action : pol->cfg->default_action[dir];
}

// event_for reserves an event when the log level asks for this decision. Never
// wait for userspace: a full ring buffer loses the event, and counts it.
static __always_inline struct event *event_for(const struct config *cfg, int hook, __u8 action,
					       __u32 len)
{
	if (cfg->log_level == LOG_NONE || (cfg->log_level == LOG_DROP && action == VERDICT_PASS))
		return 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(hook, STAT_EVENTS_LOST, len);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->action = action;
	e->hook = hook;
	e->len = len;
	e->flags = cfg->audit ? EVENT_F_AUDIT : 0;
	return e;
}

static __always_inline void emit(const struct config *cfg, int hook, const struct flow *f,
				 __u8 action, __u32 rule_id, __u32 len, __u8 flags)
{
	struct event *e = event_for(cfg, hook, action, len);

	if (!e)
		return;
	__builtin_memcpy(e->src, f->src, sizeof(e->src));
	__builtin_memcpy(e->dst, f->dst, sizeof(e->dst));
	e->rule_id = rule_id;
	e->sport = f->sport;
	e->dport = f->dport;
	e->family = f->family;
	e->proto = f->proto;
	e->flags |= flags;
	bpf_ringbuf_submit(e, 0);
}

// enforce counts and logs a decision and turns it into the program's return
// value: in audit mode everything passes.
static __always_inline int enforce(const struct policy *pol, int hook, const struct flow *f,
				   __u8 action, struct rule *rule, __u32 len, __u8 flags)
{
	const struct config *cfg = pol->cfg;
	__u32 rule_id = 0;

	if (rule) {
		rule_id = rule->id;
		__sync_fetch_and_add(&rule->packets, 1);
		__sync_fetch_and_add(&rule->bytes, len);
	}
	emit(cfg, hook, f, action, rule_id, len, flags);
	if (action == VERDICT_PASS) {
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

static __always_inline void load_ports(struct __sk_buff *skb, __u32 off, struct flow *f)
{
	__be16 ports[2];

	if (f->proto != IPPROTO_TCP && f->proto != IPPROTO_UDP)
		return;
	// Ports only feed the log; a packet too short for them is judged all the same.
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
		return;
	f->sport = bpf_ntohs(ports[0]);
	f->dport = bpf_ntohs(ports[1]);
}

// parse reads the addresses of an skb that starts at its IP header.
// It returns 0 for IP, 1 for non-IP and -1 for a malformed IP header.
static __always_inline int parse(struct __sk_buff *skb, struct flow *f)
{
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl < 5 ||
		    ip.ihl * 4 > skb->len)
			return -1;
		f->family = 4;
		f->proto = ip.protocol;
		*(__u32 *)f->src = ip.saddr;
		*(__u32 *)f->dst = ip.daddr;
		if (!(ip.frag_off & bpf_htons(0x1fff)))
			load_ports(skb, ip.ihl * 4, f);
		return 0;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)) || ip6.version != 6)
			return -1;
		f->family = 6;
		f->proto = ip6.nexthdr;
		__builtin_memcpy(f->src, &ip6.saddr, 16);
		__builtin_memcpy(f->dst, &ip6.daddr, 16);
		load_ports(skb, sizeof(ip6), f);
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
	int ret = parse(skb, &f);
	if (ret > 0)
		return VERDICT_PASS;
	if (ret < 0) {
		count(hook, STAT_MALFORMED, skb->len);
		return enforce(&pol, hook, &f, VERDICT_DROP, 0, skb->len, EVENT_F_MALFORMED);
	}
	struct rule *rule;
	__u8 action = decide(dir, &f, &pol, &rule);
	return enforce(&pol, hook, &f, action, rule, skb->len, 0);
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

	struct rule *rule;
	__u8 action = decide(DIR_EGRESS, &f, &pol, &rule);
	return enforce(&pol, hook, &f, action, rule, 0, 0);
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
