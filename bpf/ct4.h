/* Conntrack of the tc programs (tc.c): the flows they balanced, in both
 * directions, and what each direction's packets are rewritten to.
 *
 *   lb4_ct   {tuple as it arrives, direction} -> {tuple it leaves with,
 *            backend id, flags}
 *
 * A flow holds its backend's id: once the backend is gone from
 * lb4_backends (ids are never reused), the entry is stale and is dropped
 * on sight.
 */
#pragma once

#include "lb.h"
#include "pkt4.h"

#define LB4_CT_MAX 131072

/* SNAT ports for flows to remote backends come from above the kernel's
 * default ephemeral range (32768-60999), so they never collide with the
 * node's own sockets. */
#define SNAT_PORT_MIN 61000
#define SNAT_PORT_RANGE (65536 - SNAT_PORT_MIN)
#define SNAT_PORT_TRIES 8

#define CT_F_REDIRECT (1 << 0) /* leave through ext_ifindex after the rewrite */

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
