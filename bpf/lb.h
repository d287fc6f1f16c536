/* Maps, structs and helpers of skep's IPv4 service load balancer, shared by
 * the socket programs (sock.c) and the tc programs (tc.c).
 *
 * Layout after Cilium's lb4 maps:
 *
 *   lb4_services   {frontend addr, port, slot, proto} -> lb4_service
 *                  slot 0 is the service entry (count, local_count, flags,
 *                  affinity timeout); slots 1..count hold backend ids, the
 *                  local serving backends first so that slots
 *                  1..local_count are the local ones.
 *   lb4_backends   backend id -> {addr, port, proto, flags}
 *   lb4_affinity   {client, svc id} -> {backend id, last used}; the client
 *                  is a netns cookie in the socket path, an address in tc.
 *   lb4_nodeips    addresses of this node, where NodePorts answer.
 *   lb4_svc_names  svc id -> the Kubernetes name of the service port; only
 *                  the agent reads it, to report and to resume its state.
 *   lb4_be_conns   backend id -> new connections sent to it, per CPU.
 *
 * Backend ids are allocated by the agent and never reused while the agent
 * runs, so a stale id anywhere (affinity, reverse NAT, conntrack) simply
 * misses in lb4_backends instead of naming somebody else.
 *
 * Every map is pinned by name under the agent's pin directory: the programs
 * of a restarted agent find the same state.
 */
#pragma once

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define LB4_SERVICES_MAX 262144
#define LB4_BACKENDS_MAX 131072
#define LB4_AFFINITY_MAX 65536
#define LB4_NODEIPS_MAX 64

#define NSEC_PER_SEC 1000000000ULL

/* lb4_service.flags, set on the slot 0 entry. */
#define SVC_F_NODEPORT (1 << 0) /* the NodePort wildcard: address 0 answers on every node address */
#define SVC_F_EXTERNAL (1 << 1) /* a LoadBalancer or external IP: answered for traffic from outside too */
#define SVC_F_LOCAL (1 << 2)    /* externalTrafficPolicy Local: outside traffic only to local backends */
#define SVC_F_EXTERNAL_IP (1 << 3) /* with SVC_F_EXTERNAL: from spec.externalIPs, not a LoadBalancer
				    * address; only the agent reads it back */

/* lb4_backend.flags */
#define BE_F_LOCAL (1 << 0)   /* runs on this node */
#define BE_F_SERVING (1 << 1) /* ready and not terminating: may take new connections */

struct lb4_key {
	__be32 address;	    /* frontend address; 0 for the NodePort wildcard */
	__be16 dport;	    /* frontend port */
	__u16 backend_slot; /* 0: the service entry; 1..count: backend slots */
	__u8 proto;	    /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad[3];
};

struct lb4_service {
	__u32 backend_id;	/* slot > 0: the backend in this slot */
	__u32 svc_id;		/* the service port, shared by all of its frontends */
	__u32 affinity_timeout; /* slot 0: ClientIP affinity timeout in seconds; 0 = none */
	__u16 count;		/* slot 0: serving backends, in slots 1..count */
	__u16 local_count;	/* slot 0: local serving backends, in slots 1..local_count */
	__u8 flags;		/* slot 0: SVC_F_* */
	__u8 pad[3];
};

struct lb4_backend {
	__be32 address; /* backend address */
	__be16 port;	/* backend port */
	__u8 proto;	/* IPPROTO_TCP or IPPROTO_UDP */
	__u8 flags;	/* BE_F_* */
	__u32 svc_id;	/* the service port this backend belongs to */
};

struct lb4_affinity_key {
	__u64 client;  /* netns cookie (socket programs) or client IPv4 address (tc) */
	__u32 svc_id;  /* lb4_service.svc_id */
	__u8 by_netns; /* 1: client is a netns cookie */
	__u8 pad[3];
};

struct lb4_affinity_val {
	__u64 last_used;  /* bpf_ktime_get_ns() of the last connection */
	__u32 backend_id; /* lb4_backends key */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, LB4_SERVICES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(max_entries, LB4_BACKENDS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb4_affinity_val);
	__uint(max_entries, LB4_AFFINITY_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, __u8);
	__uint(max_entries, LB4_NODEIPS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_nodeips SEC(".maps");

struct lb4_svc_name {
	char namespace[64]; /* Kubernetes names are at most 63 characters */
	char name[64];
	char port[16]; /* the port's name, at most 15 characters; "" when unnamed */
	__u8 proto;    /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_svc_name);
	__uint(max_entries, LB4_BACKENDS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_svc_names SEC(".maps");

/* New connections per backend: a connect or sendmsg the socket programs
 * pointed at it, or a flow tc created towards it. Per CPU, so that counting
 * never bounces a cache line between CPUs; the agent sums the CPUs when it
 * reads, and deletes a backend's entry when the backend goes. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, LB4_BACKENDS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb4_be_conns SEC(".maps");

static __always_inline int lb4_is_node_addr(__be32 addr)
{
	return bpf_map_lookup_elem(&lb4_nodeips, &addr) != NULL;
}

static __always_inline int lb4_svc_is_nodeport(const struct lb4_service *svc)
{
	return svc->flags & SVC_F_NODEPORT;
}

static __always_inline int lb4_svc_is_external(const struct lb4_service *svc)
{
	return svc->flags & (SVC_F_NODEPORT | SVC_F_EXTERNAL);
}

static __always_inline int lb4_svc_is_local(const struct lb4_service *svc)
{
	return svc->flags & SVC_F_LOCAL;
}

/**
 * lb4_lookup_service - find the service entry (slot 0) of a frontend
 * @key: frontend with backend_slot 0; its address becomes 0 when the
 *       NodePort wildcard matched
 *
 * An exact frontend wins; a node address falls back to the NodePort
 * wildcard entry at address 0.
 *
 * Returns: the service entry, or NULL when the frontend is no service.
 */
static __always_inline struct lb4_service *lb4_lookup_service(struct lb4_key *key)
{
	struct lb4_service *svc;

	/* Address 0 is where the NodePort wildcard lives, never a frontend
	 * anyone addresses. */
	if (key->address == 0)
		return NULL;
	key->backend_slot = 0;
	svc = bpf_map_lookup_elem(&lb4_services, key);
	if (svc)
		return svc;
	if (!lb4_is_node_addr(key->address))
		return NULL;
	key->address = 0;
	svc = bpf_map_lookup_elem(&lb4_services, key);
	if (svc && lb4_svc_is_nodeport(svc))
		return svc;
	return NULL;
}

/**
 * lb4_select_backend_id - pick a backend slot at random
 * @key: the frontend key of the service entry
 * @count: choose among slots 1..count
 *
 * Returns: the backend id, or 0 when the slot is missing.
 */
static __always_inline __u32 lb4_select_backend_id(struct lb4_key *key, __u16 count)
{
	struct lb4_service *slot;
	__u32 id = 0;

	if (count == 0)
		return 0;
	key->backend_slot = (bpf_get_prandom_u32() % count) + 1;
	slot = bpf_map_lookup_elem(&lb4_services, key);
	if (slot)
		id = slot->backend_id;
	key->backend_slot = 0;
	return id;
}

/**
 * lb4_affinity_backend_id - the backend a client is bound to
 * @key: client and service
 * @timeout: the service's affinity timeout in seconds
 * @local_only: only accept a local backend (externalTrafficPolicy Local)
 *
 * An entry that has been idle longer than the timeout, or names a backend
 * that is gone or no longer serving, is dropped.
 *
 * Returns: the backend id, or 0 when the client has no valid affinity.
 */
static __always_inline __u32 lb4_affinity_backend_id(const struct lb4_affinity_key *key,
						     __u32 timeout, int local_only)
{
	struct lb4_affinity_val *val;
	struct lb4_backend *be;
	__u64 now = bpf_ktime_get_ns();
	__u32 id;

	val = bpf_map_lookup_elem(&lb4_affinity, key);
	if (!val)
		return 0;
	id = val->backend_id;
	if (now - val->last_used > (__u64)timeout * NSEC_PER_SEC)
		goto drop;
	be = bpf_map_lookup_elem(&lb4_backends, &id);
	if (!be || !(be->flags & BE_F_SERVING))
		goto drop;
	if (local_only && !(be->flags & BE_F_LOCAL))
		goto drop;
	return id;
drop:
	bpf_map_delete_elem(&lb4_affinity, key);
	return 0;
}

static __always_inline void lb4_affinity_update(const struct lb4_affinity_key *key, __u32 backend_id)
{
	struct lb4_affinity_val val = {
		.last_used = bpf_ktime_get_ns(),
		.backend_id = backend_id,
	};

	bpf_map_update_elem(&lb4_affinity, key, &val, BPF_ANY);
}

/**
 * lb4_count_connection - count one new connection to a backend
 * @backend_id: lb4_backends key
 *
 * The entry is made by the first connection rather than by the agent, so
 * that programming a service costs no extra map writes. The value is this
 * CPU's own, so a plain increment is enough.
 */
static __always_inline void lb4_count_connection(__u32 backend_id)
{
	__u64 one = 1;
	__u64 *n;

	n = bpf_map_lookup_elem(&lb4_be_conns, &backend_id);
	if (n) {
		*n += 1;
		return;
	}
	if (bpf_map_update_elem(&lb4_be_conns, &backend_id, &one, BPF_NOEXIST) == 0)
		return;
	/* Another CPU made the entry between the lookup and the insert. */
	n = bpf_map_lookup_elem(&lb4_be_conns, &backend_id);
	if (n)
		*n += 1;
}
