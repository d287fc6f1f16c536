/* The replies of the tc programs (tc.c) to a packet for a service without
 * serving backends, built in place of the packet: a TCP RST for a segment,
 * an ICMP port unreachable for a datagram, rate limited as the kernel
 * limits its own ICMP errors.
 *
 *   lb4_icmp_rate  per CPU: the token bucket of ICMP errors
 *
 * After Katran's handle_icmp.h.
 */
#pragma once

#include "lb.h"
#include "pkt4.h"

#include <linux/pkt_cls.h>

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
