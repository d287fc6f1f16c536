/* Parsing and checksums of the IPv4 TCP/UDP packets the tc programs
 * (tc.c) see: the tuple of a packet, where its headers sit, and writes to
 * its addresses and ports that keep the IP and L4 checksums right.
 *
 * After Katran's pckt_parsing.h and csum_helpers.h.
 */
#pragma once

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

#define CT_DIR_FWD 0
#define CT_DIR_REV 1

/* ct4_key is a packet's tuple. It is defined here rather than in ct4.h
 * because the parser fills it and conntrack (ct4.h) looks it up as is. */
struct ct4_key {
	__be32 saddr; /* source address as the packet arrives */
	__be32 daddr; /* destination address as the packet arrives */
	__be16 sport; /* source port */
	__be16 dport; /* destination port */
	__u8 proto;   /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 dir;     /* CT_DIR_FWD: client -> frontend; CT_DIR_REV: backend -> client */
	__u8 pad[2];
};

/* pkt4 is what the programs need of a packet: its tuple and where its
 * headers sit. */
struct pkt4 {
	struct ct4_key tuple;
	__u32 l3_off;
	__u32 l4_off;
};

struct ip4_pseudo_hdr {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len; /* L4 header and payload */
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

static __always_inline __u16 csum_fold(__s64 sum)
{
	__u64 s = (__u64)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}
