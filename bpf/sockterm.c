//go:build ignore

/* Terminating UDP sockets connected to removed backends. Socket LB rewrote
 * their connect() to a backend; when that backend goes, the socket would
 * keep sending into the void (the stale-UDP bug of kube-proxy and
 * Cilium). An iterator over a network namespace's UDP sockets destroys
 * those whose peer the agent listed in sock4_term; the application sees
 * ECONNABORTED and connects again, through the service.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2

/* Just the kernel fields the iterator reads; CO-RE finds them in the
 * running kernel's BTF, so no vmlinux.h is needed. */
struct sock_common {
	unsigned short skc_family;
	__be32 skc_daddr;
	__be16 skc_dport;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
} __attribute__((preserve_access_index));

struct udp_sock;

struct bpf_iter_meta;

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
} __attribute__((preserve_access_index));

extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

struct sock4_term_key {
	__be32 address; /* peer address of sockets to destroy */
	__be16 port;	/* peer port */
	__u16 pad;
};

/* Filled by the agent for one run of the iterator, then emptied. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sock4_term_key);
	__type(value, __u8);
	__uint(max_entries, 4096);
} sock4_term SEC(".maps");

SEC("iter/udp")
int sock4_terminate_udp(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;
	struct sock4_term_key key = {};

	if (!sk || sk->__sk_common.skc_family != AF_INET)
		return 0;
	key.address = sk->__sk_common.skc_daddr;
	key.port = sk->__sk_common.skc_dport;
	if (bpf_map_lookup_elem(&sock4_term, &key))
		bpf_sock_destroy((struct sock_common *)sk);
	return 0;
}

char __license[] SEC("license") = "Dual MIT/GPL";
