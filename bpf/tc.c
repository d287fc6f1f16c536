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
 * The program is here; the headers hold its parts: pkt4.h parses packets
 * and keeps checksums right, ct4.h is conntrack, reject4.h builds the
 * refusals, lb.h has the service maps shared with sock.c.
 *
 * Everything else is left alone: under tcx the programs return
 * TC_ACT_UNSPEC for traffic that is not theirs, because TC_ACT_OK would end
 * the chain for programs attached after them.
 */
#include "lb.h"
#include "pkt4.h"
#include "ct4.h"
#include "reject4.h"

#include <linux/pkt_cls.h>

/* Runtime settings, written by the agent before the programs load. */
volatile const __u32 ext_ifindex = 0; /* the interface replies and SNATed flows leave on */
volatile const __be32 snat_addr = 0;  /* the node address remote backends see as source */

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
