//go:build ignore

/* NodePort and LoadBalancer traffic that arrives from outside the node on
 * its external interface: ingress translates client -> frontend into
 * client -> backend (and the source to the node's address when the backend
 * is on another node), remembers the flow in lb4_ct, and both directions
 * translate the replies back.
 *
 * A frontend whose service has no serving backend refuses as a closed port
 * does: a TCP segment is answered with a RST, a UDP datagram with an ICMP
 * port unreachable, both built in place of the packet and sent back out of
 * the interface it came in on.
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

/* From linux/icmp.h, which pulls in libc headers through linux/if.h. */
#define ICMP_DEST_UNREACH 3
#define ICMP_PORT_UNREACH 3

struct icmp4_hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 unused; /* 0 for port unreachable */
};

/* ICMP errors are rate limited as the kernel limits its own
 * (net.ipv4.icmp_msgs_per_sec and icmp_msgs_burst), here per CPU, so that
 * a flood towards an empty service is not reflected at full rate. */
#define ICMP4_PER_SEC 1000
#define ICMP4_BURST 50

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

struct icmp4_bucket {
	__u64 stamp;  /* bpf_ktime_get_ns() of the last refill */
	__u32 tokens; /* ICMP errors this CPU may still send */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct icmp4_bucket);
	__uint(max_entries, 1);
} lb4_icmp_rate SEC(".maps");

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

static __always_inline __u16 csum_fold(__s64 sum)
{
	__u64 s = (__u64)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* ip4_is_unicast reports whether addr may receive a reply: never 0, a
 * loopback, multicast or broadcast address (RFC 1122 3.2.2). */
static __always_inline int ip4_is_unicast(__be32 addr)
{
	__u32 first = bpf_ntohl(addr) >> 24;

	return addr != 0 && first != 127 && first < 224;
}

/* ip4_reply_hdr fills the IPv4 header of a reply to in: addresses swapped,
 * no options, checksum computed. */
static __always_inline void ip4_reply_hdr(struct iphdr *out, const struct iphdr *in, __u8 proto, __u16 len,
					  __u8 tos)
{
	out->version = 4;
	out->ihl = 5;
	out->tos = tos;
	out->tot_len = bpf_htons(len);
	out->id = 0;
	out->frag_off = 0;
	out->ttl = IPDEFTTL;
	out->protocol = proto;
	out->check = 0;
	out->saddr = in->daddr;
	out->daddr = in->saddr;
	out->check = csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)out, sizeof(*out), 0));
}

/* eth_swap_addrs turns the Ethernet header around, so that the frame goes
 * back to where it came from. */
static __always_inline int eth_swap_addrs(struct __sk_buff *skb)
{
	struct ethhdr eth;
	__u8 mac[ETH_ALEN];

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) < 0)
		return -1;
	__builtin_memcpy(mac, eth.h_dest, ETH_ALEN);
	__builtin_memcpy(eth.h_dest, eth.h_source, ETH_ALEN);
	__builtin_memcpy(eth.h_source, mac, ETH_ALEN);
	return bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0);
}

/* icmp4_rate_allow takes a token from this CPU's bucket. */
static __always_inline int icmp4_rate_allow(void)
{
	struct icmp4_bucket *b;
	__u32 zero = 0;
	__u64 now, add;

	b = bpf_map_lookup_elem(&lb4_icmp_rate, &zero);
	if (!b)
		return 0;
	now = bpf_ktime_get_ns();
	add = (now - b->stamp) / (NSEC_PER_SEC / ICMP4_PER_SEC);
	if (add) {
		b->tokens = add >= ICMP4_BURST - b->tokens ? ICMP4_BURST : b->tokens + add;
		b->stamp = now;
	}
	if (b->tokens == 0)
		return 0;
	b->tokens--;
	return 1;
}

struct ip4_pseudo_hdr {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len; /* L4 header and payload */
};

/**
 * tc4_reply_rst - turn a TCP segment into the RST a closed port answers
 * @ip: the segment's IPv4 header, without options
 *
 * Sequence numbers follow RFC 793 (3.4, "Reset Generation"): a segment
 * with ACK gets a RST whose sequence number is that ACK; one without gets
 * sequence number 0 and acknowledges everything it carried, which for a
 * SYN is its sequence number plus one. A RST is never answered.
 *
 * The TCP checksum is written as two checksum updates on a zero field: the
 * pseudo header with BPF_F_PSEUDO_HDR, the header without. A packet the
 * kernel has marked for checksum offload (CHECKSUM_PARTIAL: it came from a
 * local socket through a veth) then carries the pseudo header sum that
 * offload expects and is completed by whoever transmits it; any other
 * carries the full checksum.
 *
 * Returns: TC_ACT_REDIRECT with the reply on its way, or TC_ACT_SHOT.
 */
static __always_inline int tc4_reply_rst(struct __sk_buff *skb, const struct iphdr *ip)
{
	const __u32 l4_off = ETH_HLEN + sizeof(struct iphdr);
	const __u32 csum_off = l4_off + offsetof(struct tcphdr, check);
	struct {
		struct iphdr ip;
		struct tcphdr tcp;
	} reply = {};
	struct ip4_pseudo_hdr ph = {};
	struct tcphdr th;
	__u32 seglen, hdrs;
	__s64 sum;

	if (bpf_skb_load_bytes(skb, l4_off, &th, sizeof(th)) < 0)
		return TC_ACT_SHOT;
	if (th.rst)
		return TC_ACT_SHOT;
	hdrs = sizeof(struct iphdr) + th.doff * 4;
	if (th.doff < 5 || bpf_ntohs(ip->tot_len) < hdrs)
		return TC_ACT_SHOT;
	seglen = bpf_ntohs(ip->tot_len) - hdrs + th.syn + th.fin;

	reply.tcp.source = th.dest;
	reply.tcp.dest = th.source;
	reply.tcp.doff = sizeof(struct tcphdr) / 4;
	reply.tcp.rst = 1;
	if (th.ack) {
		reply.tcp.seq = th.ack_seq;
	} else {
		reply.tcp.ack = 1;
		reply.tcp.ack_seq = bpf_htonl(bpf_ntohl(th.seq) + seglen);
	}
	ip4_reply_hdr(&reply.ip, ip, IPPROTO_TCP, sizeof(reply), 0);

	/* Options and payload go: the reply is the two headers alone. */
	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(reply), 0) < 0)
		return TC_ACT_SHOT;
	if (eth_swap_addrs(skb) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &reply, sizeof(reply), 0) < 0)
		return TC_ACT_SHOT;

	ph.saddr = reply.ip.saddr;
	ph.daddr = reply.ip.daddr;
	ph.proto = IPPROTO_TCP;
	ph.len = bpf_htons(sizeof(struct tcphdr));
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	if (bpf_l4_csum_replace(skb, csum_off, 0, sum, BPF_F_PSEUDO_HDR) < 0)
		return TC_ACT_SHOT;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&reply.tcp, sizeof(reply.tcp), 0);
	if (bpf_l4_csum_replace(skb, csum_off, 0, sum, 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

/**
 * tc4_reply_port_unreach - turn a UDP datagram into an ICMP port unreachable
 * @ip: the datagram's IPv4 header, without options
 *
 * The error quotes the datagram's IP header and the first 8 bytes after it
 * (its UDP header), which is what the sender's kernel needs to find the
 * socket (RFC 792). A connected UDP socket then fails with ECONNREFUSED.
 *
 * The full ICMP checksum is written whatever the packet's checksum state.
 * A datagram marked CHECKSUM_PARTIAL stays so, with the UDP checksum's
 * offsets, which now fall on the zero "unused" field; completing that
 * checksum over a message that already sums right writes zero there, so
 * the error comes out intact either way.
 *
 * Returns: TC_ACT_REDIRECT with the reply on its way, or TC_ACT_SHOT.
 */
static __always_inline int tc4_reply_port_unreach(struct __sk_buff *skb, const struct iphdr *ip)
{
	struct {
		struct iphdr ip;
		struct icmp4_hdr icmp;
		__u8 quote[sizeof(struct iphdr) + 8];
	} reply = {};
	__s64 sum;

	if (!icmp4_rate_allow())
		return TC_ACT_SHOT;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, reply.quote, sizeof(reply.quote)) < 0)
		return TC_ACT_SHOT;
	ip4_reply_hdr(&reply.ip, ip, IPPROTO_ICMP, sizeof(reply), IPTOS_PREC_INTERNETCONTROL);
	reply.icmp.type = ICMP_DEST_UNREACH;
	reply.icmp.code = ICMP_PORT_UNREACH;
	/* The ICMP checksum covers its header and the quote, no pseudo header. */
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&reply.icmp, sizeof(reply.icmp) + sizeof(reply.quote), 0);
	reply.icmp.checksum = csum_fold(sum);

	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(reply), 0) < 0)
		return TC_ACT_SHOT;
	if (eth_swap_addrs(skb) < 0)
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &reply, sizeof(reply), 0) < 0)
		return TC_ACT_SHOT;
	return bpf_redirect(skb->ifindex, 0);
}

/**
 * tc4_reject - refuse a packet for a service without serving backends
 *
 * What kube-proxy's REJECT achieves: the client learns at once that nobody
 * answers, instead of retrying into silence. A packet with IP options, or
 * from an address no reply may go to, is dropped: the replies are built
 * for a plain 20-byte header.
 *
 * Returns: a TC verdict.
 */
static __always_inline int tc4_reject(struct __sk_buff *skb, const struct pkt4 *p)
{
	struct iphdr ip;

	if (bpf_skb_load_bytes(skb, p->l3_off, &ip, sizeof(ip)) < 0)
		return TC_ACT_SHOT;
	if (ip.ihl != 5 || !ip4_is_unicast(ip.saddr))
		return TC_ACT_SHOT;
	if (p->tuple.proto == IPPROTO_TCP)
		return tc4_reply_rst(skb, &ip);
	return tc4_reply_port_unreach(skb, &ip);
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

	/* No serving backend anywhere: refuse, as kube-proxy does. Serving
	 * backends, but for Local none on this node: drop, as kube-proxy does;
	 * the load balancer's health check sends clients to nodes that have
	 * one. */
	if (svc->count == 0)
		return tc4_reject(skb, p);
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
	lb4_count_connection(backend_id);
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
