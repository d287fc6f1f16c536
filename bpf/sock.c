//go:build ignore

/* Socket load balancing: a connect or sendmsg to a service frontend is
 * rewritten to a backend before any packet exists, and recvmsg/getpeername
 * show the frontend again, so the application never sees the backend.
 */
#include "lb.h"

#include <linux/errno.h>

#define SYS_REJECT 0
#define SYS_PROCEED 1

#define SOCK4_REVNAT_MAX 131072

struct sock4_revnat_key {
	__u64 cookie;	/* socket cookie */
	__be32 address; /* backend address the socket was sent to */
	__be16 port;	/* backend port */
	__u16 pad;
};

struct sock4_revnat_val {
	__be32 address; /* frontend address the application used */
	__be16 port;	/* frontend port */
	__u8 proto;
	__u8 pad;
};

/* Reverse NAT of UDP, for recvmsg and getpeername: an unconnected socket
 * may send to several frontends and receives from each backend, so the
 * key is the socket and the backend. TCP sockets use sock4_peers. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sock4_revnat_key);
	__type(value, struct sock4_revnat_val);
	__uint(max_entries, SOCK4_REVNAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock4_revnat SEC(".maps");

/* Reverse NAT of TCP, for getpeername. A TCP socket connects once, so one
 * entry per socket is enough, and it is found without a hash: slot
 * cookie % SOCK4_PEERS_MAX of an array. Socket cookies are handed out in
 * sequence, so a slot is taken again only after as many newer translated
 * sockets as the array has slots, as the LRU map would evict it; the
 * cookie in the entry tells a socket's own entry from a newer one's.
 *
 * Measured with bpf_stats (BenchmarkSockCost), this is what makes a
 * translated TCP connect cheap: an insert into a large hash map (or a
 * socket storage allocation) lands on memory no recent connect touched and
 * costs several hundred nanoseconds; a write into consecutive array slots
 * costs tens. */
#define SOCK4_PEERS_MAX 131072 /* a power of two */

struct sock4_peer {
	__u64 cookie;		/* socket cookie of the socket; 0: none */
	__be32 backend_address; /* where connect sent the socket */
	__be32 address;		/* the frontend the application connected to */
	__be16 backend_port;
	__be16 port;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sock4_peer);
	__uint(max_entries, SOCK4_PEERS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock4_peers SEC(".maps");

/* user_port holds the port in network order in its low 16 bits; the kernel
 * only accepts 4-byte writes to it. */
static __always_inline __be16 ctx_dst_port(const struct bpf_sock_addr *ctx)
{
	return (__be16)ctx->user_port;
}

static __always_inline void ctx_set_port(struct bpf_sock_addr *ctx, __be16 port)
{
	ctx->user_port = (__u32)port;
}

static __always_inline int sock_proto_enabled(__u32 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

static __always_inline struct sock4_peer *sock4_peer_slot(__u64 cookie)
{
	__u32 slot = cookie & (SOCK4_PEERS_MAX - 1);

	return bpf_map_lookup_elem(&sock4_peers, &slot);
}

/**
 * sock4_update_revnat - remember the frontend a socket was sent to
 *
 * TCP writes the socket's slot of sock4_peers. UDP writes the reverse-NAT
 * map only when the entry is missing or names another frontend: a socket
 * that sends datagram after datagram to one service costs a lookup each,
 * not an LRU insert each.
 */
static __always_inline void sock4_update_revnat(struct bpf_sock_addr *ctx, const struct lb4_backend *be,
						__be32 orig_addr, __be16 orig_port, __u8 proto)
{
	struct sock4_revnat_key key = {};
	struct sock4_revnat_val val = {}, *old;
	struct sock4_peer *peer;
	__u64 cookie;

	if (proto == IPPROTO_TCP) {
		cookie = bpf_get_socket_cookie(ctx);
		peer = sock4_peer_slot(cookie);
		if (!peer)
			return;
		/* The cookie last: the slot's previous owner, had it been
		 * reading, sees another cookie and leaves its peer as is. */
		peer->backend_address = be->address;
		peer->backend_port = be->port;
		peer->address = orig_addr;
		peer->port = orig_port;
		peer->cookie = cookie;
		return;
	}
	key.cookie = bpf_get_socket_cookie(ctx);
	key.address = be->address;
	key.port = be->port;
	old = bpf_map_lookup_elem(&sock4_revnat, &key);
	if (old && old->address == orig_addr && old->port == orig_port && old->proto == proto)
		return;
	val.address = orig_addr;
	val.port = orig_port;
	val.proto = proto;
	bpf_map_update_elem(&sock4_revnat, &key, &val, BPF_ANY);
}

/**
 * __sock4_xlate_fwd - point a socket at a backend instead of a frontend
 * @ctx: the connect or sendmsg context
 *
 * Returns: 0 when the socket may proceed (translated or no service), or a
 * negative errno the system call fails with.
 */
static __always_inline int __sock4_xlate_fwd(struct bpf_sock_addr *ctx)
{
	__be32 orig_addr = ctx->user_ip4;
	__be16 orig_port = ctx_dst_port(ctx);
	__u8 proto = ctx->protocol;
	struct lb4_key key = {
		.address = orig_addr,
		.dport = orig_port,
		.proto = proto,
	};
	struct lb4_affinity_key akey = {};
	struct lb4_service *svc;
	struct lb4_backend *be;
	__u32 timeout, backend_id = 0;
	__u16 count;

	if (!sock_proto_enabled(proto))
		return 0;
	svc = lb4_lookup_service(&key);
	if (!svc)
		return 0;
	count = svc->count;
	timeout = svc->affinity_timeout;
	/* A service without serving backends refuses at once, as kube-proxy's
	 * REJECT does, instead of letting the client wait on a frontend
	 * address nobody answers. */
	if (count == 0)
		return -ECONNREFUSED;

	if (timeout) {
		akey.client = bpf_get_netns_cookie(ctx);
		akey.svc_id = svc->svc_id;
		akey.by_netns = 1;
		backend_id = lb4_affinity_backend_id(&akey, timeout, 0);
	}
	if (!backend_id)
		backend_id = lb4_select_backend_id(&key, count);
	be = bpf_map_lookup_elem(&lb4_backends, &backend_id);
	if (!be) {
		/* The agent writes slots before the count that exposes them and
		 * backends before the slots that name them, and removes them in
		 * the other order; but this call may have read the count, a slot
		 * or an affinity a moment before the agent removed what it
		 * named. Read the entry again and choose once more among what
		 * the service holds now. */
		svc = bpf_map_lookup_elem(&lb4_services, &key);
		if (!svc)
			return 0; /* the service went away meanwhile */
		count = svc->count;
		if (count == 0)
			return -ECONNREFUSED;
		backend_id = lb4_select_backend_id(&key, count);
		be = bpf_map_lookup_elem(&lb4_backends, &backend_id);
	}
	/* A second miss is a bug in the agent: fail the call rather than
	 * send to the frontend address. */
	if (!be)
		return -EHOSTUNREACH;
	if (timeout)
		lb4_affinity_update(&akey, backend_id);
	lb4_count_connection(backend_id);

	sock4_update_revnat(ctx, be, orig_addr, orig_port, proto);
	ctx->user_ip4 = be->address;
	ctx_set_port(ctx, be->port);
	return 0;
}

/**
 * __sock4_xlate_rev - show the frontend instead of the backend
 * @ctx: the recvmsg or getpeername context, holding the peer address
 *
 * An entry whose frontend is gone is dropped and the peer is left as is.
 */
static __always_inline void __sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct sock4_revnat_key key = {};
	struct sock4_revnat_val *val;
	struct sock4_peer *peer;
	struct lb4_key fkey = {};
	__u64 cookie = bpf_get_socket_cookie(ctx);

	if (ctx->protocol == IPPROTO_TCP) {
		peer = sock4_peer_slot(cookie);
		if (!peer || peer->cookie != cookie || peer->backend_address != ctx->user_ip4 ||
		    peer->backend_port != ctx_dst_port(ctx))
			return;
		fkey.address = peer->address;
		fkey.dport = peer->port;
		fkey.proto = IPPROTO_TCP;
		/* As for UDP: a frontend that is gone is no longer shown. */
		if (!lb4_lookup_service(&fkey)) {
			peer->cookie = 0;
			return;
		}
		ctx->user_ip4 = peer->address;
		ctx_set_port(ctx, peer->port);
		return;
	}
	key.cookie = cookie;
	key.address = ctx->user_ip4;
	key.port = ctx_dst_port(ctx);
	val = bpf_map_lookup_elem(&sock4_revnat, &key);
	if (!val)
		return;
	fkey.address = val->address;
	fkey.dport = val->port;
	fkey.proto = val->proto;
	if (!lb4_lookup_service(&fkey)) {
		bpf_map_delete_elem(&sock4_revnat, &key);
		return;
	}
	ctx->user_ip4 = val->address;
	ctx_set_port(ctx, val->port);
}

SEC("cgroup/connect4")
int sock4_connect(struct bpf_sock_addr *ctx)
{
	int err = __sock4_xlate_fwd(ctx);

	if (err) {
		bpf_set_retval(err);
		return SYS_REJECT;
	}
	return SYS_PROCEED;
}

SEC("cgroup/sendmsg4")
int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	int err = __sock4_xlate_fwd(ctx);

	if (err) {
		bpf_set_retval(err);
		return SYS_REJECT;
	}
	return SYS_PROCEED;
}

SEC("cgroup/recvmsg4")
int sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	__sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}

SEC("cgroup/getpeername4")
int sock4_getpeername(struct bpf_sock_addr *ctx)
{
	__sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}

char __license[] SEC("license") = "Dual MIT/GPL";
