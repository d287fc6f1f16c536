//go:build ignore

/* NodePort and LoadBalancer traffic that arrives from outside the node on
 * its external interface: ingress translates client -> frontend into
 * client -> backend (and the source to the node's address when the backend
 * is on another node), remembers the flow in lb4_ct, and both directions
 * translate the replies back.
 *
 * Everything else is left alone: under tcx the programs return
 * TC_ACT_UNSPEC for traffic that is not theirs, because TC_ACT_OK would end
 * the chain for programs attached after them.
 */
#include "lb.h"

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>

#define LB4_CT_MAX 131072

/* SNAT ports for flows to remote backends come from above the kernel's
 * default ephemeral range (32768-60999), so they never collide with the
 * node's own sockets. */
#define SNAT_PORT_MIN 61000
#define SNAT_PORT_RANGE (65536 - SNAT_PORT_MIN)
#define SNAT_PORT_TRIES 8

#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

/* Runtime settings, written by the agent before the programs load. */
volatile const __u32 ext_ifindex = 0; /* the interface replies and SNATed flows leave on */
volatile const __be32 snat_addr = 0;  /* the node address remote backends see as source */

#define CT_DIR_FWD 0
#define CT_DIR_REV 1

#define CT_F_REDIRECT (1 << 0) /* leave through ext_ifindex after the rewrite */

struct ct4_key {
	__be32 saddr; /* source address as the packet arrives */
	__be32 daddr; /* destination address as the packet arrives */
	__be16 sport; /* source port */
	__be16 dport; /* destination port */
	__u8 proto;   /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 dir;     /* CT_DIR_FWD: client -> frontend; CT_DIR_REV: backend -> client */
	__u8 pad[2];
};

struct ct4_entry {
	__be32 saddr;	  /* source address the packet leaves with */
	__be32 daddr;	  /* destination address the packet leaves with */
	__be16 sport;	  /* source port it leaves with */
	__be16 dport;	  /* destination port it leaves with */
	__u32 backend_id; /* lb4_backends key: a flow to a removed backend is stale */
	__u8 flags;	  /* CT_F_* */
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct4_key);
	__type(value, struct ct4_entry);
	__uint(max_entries, LB4_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_ct SEC(".maps");

/* pkt4 is what the programs need of a packet: its tuple and where its
 * headers sit. */
struct pkt4 {
	struct ct4_key tuple;
	__u32 l3_off;
	__u32 l4_off;
};

/**
 * pkt4_parse - read the IPv4 TCP/UDP tuple of an Ethernet frame
 *
 * Fragments are not parsed: only the first carries the ports.
 *
 * Returns: 1 when the packet is an unfragmented IPv4 TCP or UDP packet.
 */
static __always_inline int pkt4_parse(struct __sk_buff *skb, struct pkt4 *p)
{
	struct iphdr ip;
	__be16 proto;
	__be16 ports[2];

	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)) < 0)
		return 0;
	if (proto != bpf_htons(ETH_P_IP))
		return 0;
	p->l3_off = ETH_HLEN;
	if (bpf_skb_load_bytes(skb, p->l3_off, &ip, sizeof(ip)) < 0)
		return 0;
	if (ip.version != 4 || ip.ihl < 5)
		return 0;
	if (ip.frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return 0;
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return 0;
	p->l4_off = p->l3_off + ip.ihl * 4;
	if (bpf_skb_load_bytes(skb, p->l4_off, ports, sizeof(ports)) < 0)
		return 0;
	p->tuple.saddr = ip.saddr;
	p->tuple.daddr = ip.daddr;
	p->tuple.sport = ports[0];
	p->tuple.dport = ports[1];
	p->tuple.proto = ip.protocol;
	p->tuple.dir = CT_DIR_FWD;
	return 1;
}

static __always_inline int l4_csum_off(const struct pkt4 *p)
{
	if (p->tuple.proto == IPPROTO_TCP)
		return p->l4_off + offsetof(struct tcphdr, check);
	return p->l4_off + offsetof(struct udphdr, check);
}

static __always_inline int pkt4_set_addr(struct __sk_buff *skb, const struct pkt4 *p, __u32 field_off,
					 __be32 from, __be32 to)
{
	__u64 l4_flags = BPF_F_PSEUDO_HDR | sizeof(to);

	/* A UDP checksum of 0 means none: keep it so, and never produce 0. */
	if (p->tuple.proto == IPPROTO_UDP)
		l4_flags |= BPF_F_MARK_MANGLED_0;
	if (bpf_l4_csum_replace(skb, l4_csum_off(p), from, to, l4_flags) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, p->l3_off + offsetof(struct iphdr, check), from, to, sizeof(to)) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, p->l3_off + field_off, &to, sizeof(to), 0);
}

static __always_inline int pkt4_set_port(struct __sk_buff *skb, const struct pkt4 *p, __u32 field_off,
					 __be16 from, __be16 to)
{
	__u64 l4_flags = sizeof(to);

	if (p->tuple.proto == IPPROTO_UDP)
		l4_flags |= BPF_F_MARK_MANGLED_0;
	if (bpf_l4_csum_replace(skb, l4_csum_off(p), from, to, l4_flags) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, p->l4_off + field_off, &to, sizeof(to), 0);
}

/**
 * pkt4_rewrite - give a packet the tuple of a conntrack entry
 *
 * Only the fields that differ are written; IP and L4 checksums are updated
 * incrementally.
 *
 * Returns: 0 on success, negative when the packet could not be written.
 */
static __always_inline int pkt4_rewrite(struct __sk_buff *skb, const struct pkt4 *p, const struct ct4_entry *to)
{
	/* TCP and UDP both start with source port, destination port. */
	if (to->saddr != p->tuple.saddr &&
	    pkt4_set_addr(skb, p, offsetof(struct iphdr, saddr), p->tuple.saddr, to->saddr) < 0)
		return -1;
	if (to->daddr != p->tuple.daddr &&
	    pkt4_set_addr(skb, p, offsetof(struct iphdr, daddr), p->tuple.daddr, to->daddr) < 0)
		return -1;
	if (to->sport != p->tuple.sport && pkt4_set_port(skb, p, 0, p->tuple.sport, to->sport) < 0)
		return -1;
	if (to->dport != p->tuple.dport && pkt4_set_port(skb, p, 2, p->tuple.dport, to->dport) < 0)
		return -1;
	return 0;
}

static __always_inline int ct4_backend_alive(__u32 backend_id)
{
	return bpf_map_lookup_elem(&lb4_backends, &backend_id) != NULL;
}

/* ct4_apply rewrites a packet of a known flow and sends it on. */
static __always_inline int ct4_apply(struct __sk_buff *skb, const struct pkt4 *p, const struct ct4_entry *ct)
{
	struct ct4_entry to = *ct;

	if (pkt4_rewrite(skb, p, &to) < 0)
		return TC_ACT_SHOT;
	if (to.flags & CT_F_REDIRECT)
		return bpf_redirect_neigh(ext_ifindex, NULL, 0, 0);
	return TC_ACT_OK;
}

/**
 * __tc4_xlate_rev - translate a reply of a flow this node balanced
 *
 * Returns: a TC verdict, or -1 (TC_ACT_UNSPEC) when the packet is no reply.
 */
static __always_inline int __tc4_xlate_rev(struct __sk_buff *skb, struct pkt4 *p)
{
	struct ct4_key key = p->tuple;
	struct ct4_entry *ct;

	key.dir = CT_DIR_REV;
	ct = bpf_map_lookup_elem(&lb4_ct, &key);
	if (!ct)
		return TC_ACT_UNSPEC;
	if (!ct4_backend_alive(ct->backend_id)) {
		bpf_map_delete_elem(&lb4_ct, &key);
		return TC_ACT_UNSPEC;
	}
	return ct4_apply(skb, p, ct);
}

/**
 * ct4_create - record a new flow in both directions
 * @p: the packet as it arrived (client -> frontend)
 * @out: the tuple it leaves with; its sport is chosen here when the flow
 *       is source-NATed
 *
 * The reverse entry is inserted with BPF_NOEXIST, so two flows never share
 * a SNAT port towards the same backend.
 *
 * Returns: 0 on success.
 */
static __always_inline int ct4_create(const struct pkt4 *p, struct ct4_entry *out)
{
	struct ct4_key rkey = {
		.saddr = out->daddr,
		.daddr = out->saddr,
		.sport = out->dport,
		.dport = out->sport,
		.proto = p->tuple.proto,
		.dir = CT_DIR_REV,
	};
	struct ct4_entry rev = {
		.saddr = p->tuple.daddr,
		.daddr = p->tuple.saddr,
		.sport = p->tuple.dport,
		.dport = p->tuple.sport,
		.backend_id = out->backend_id,
		.flags = out->flags,
	};
	int i;

	if (out->flags & CT_F_REDIRECT) {
		/* Keep the client's port when it is free, as most NATs do. */
		for (i = 0; i < SNAT_PORT_TRIES; i++) {
			if (bpf_map_update_elem(&lb4_ct, &rkey, &rev, BPF_NOEXIST) == 0)
				goto fwd;
			rkey.dport = bpf_htons(SNAT_PORT_MIN + bpf_get_prandom_u32() % SNAT_PORT_RANGE);
		}
		return -1;
	}
	if (bpf_map_update_elem(&lb4_ct, &rkey, &rev, BPF_ANY) < 0)
		return -1;
fwd:
	out->sport = rkey.dport;
	return bpf_map_update_elem(&lb4_ct, &p->tuple, out, BPF_ANY);
}

/**
 * __tc4_xlate_fwd - send a packet for a frontend to a backend
 *
 * Returns: a TC verdict; TC_ACT_UNSPEC when the packet is for no external
 * frontend.
 */
static __always_inline int __tc4_xlate_fwd(struct __sk_buff *skb, struct pkt4 *p)
{
	struct lb4_key key = {
		.address = p->tuple.daddr,
		.dport = p->tuple.dport,
		.proto = p->tuple.proto,
	};
	struct lb4_affinity_key akey = {};
	struct ct4_entry out = {};
	struct lb4_service *svc;
	struct lb4_backend *be;
	struct ct4_entry *ct;
	__u32 timeout, backend_id = 0;
	__u16 count;
	int local;

	svc = lb4_lookup_service(&key);
	if (!svc || !lb4_svc_is_external(svc))
		return TC_ACT_UNSPEC;
	local = lb4_svc_is_local(svc);
	count = local ? svc->local_count : svc->count;
	timeout = svc->affinity_timeout;
	akey.client = p->tuple.saddr;
	akey.svc_id = svc->svc_id;

	ct = bpf_map_lookup_elem(&lb4_ct, &p->tuple);
	if (ct) {
		if (ct4_backend_alive(ct->backend_id))
			return ct4_apply(skb, p, ct);
		bpf_map_delete_elem(&lb4_ct, &p->tuple);
	}

	/* No serving backend (or, for Local, none on this node): kube-proxy
	 * drops such traffic for Local and rejects it otherwise; a drop is
	 * what a client outside the node can be sure to get here. */
	if (count == 0)
		return TC_ACT_SHOT;
	if (timeout)
		backend_id = lb4_affinity_backend_id(&akey, timeout, local);
	if (!backend_id)
		backend_id = lb4_select_backend_id(&key, count);
	be = bpf_map_lookup_elem(&lb4_backends, &backend_id);
	if (!be)
		return TC_ACT_SHOT;
	/* While the agent reorders slots, a slot below an old local_count may
	 * briefly hold a remote backend; Local must never use one. */
	if (local && !(be->flags & BE_F_LOCAL))
		return TC_ACT_SHOT;
	if (timeout)
		lb4_affinity_update(&akey, backend_id);

	out.saddr = p->tuple.saddr;
	out.sport = p->tuple.sport;
	out.daddr = be->address;
	out.dport = be->port;
	out.backend_id = backend_id;
	/* A remote backend would answer the client directly, which the client
	 * would drop: source-NAT to this node so the reply comes back here. */
	if (!(be->flags & BE_F_LOCAL) && !local) {
		out.saddr = snat_addr;
		out.flags = CT_F_REDIRECT;
	}
	if (ct4_create(p, &out) < 0)
		return TC_ACT_SHOT;
	return ct4_apply(skb, p, &out);
}

SEC("tc")
int tc4_ingress(struct __sk_buff *skb)
{
	struct pkt4 p = {};
	int ret;

	if (!pkt4_parse(skb, &p))
		return TC_ACT_UNSPEC;
	ret = __tc4_xlate_rev(skb, &p);
	if (ret != TC_ACT_UNSPEC)
		return ret;
	return __tc4_xlate_fwd(skb, &p);
}

/* Replies of local backends leave through the external interface with the
 * backend as source: show the frontend instead. */
SEC("tc")
int tc4_egress(struct __sk_buff *skb)
{
	struct pkt4 p = {};

	if (!pkt4_parse(skb, &p))
		return TC_ACT_UNSPEC;
	return __tc4_xlate_rev(skb, &p);
}

char __license[] SEC("license") = "Dual MIT/GPL";
