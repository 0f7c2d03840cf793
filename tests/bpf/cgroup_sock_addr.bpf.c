// cgroup_sock_addr programs for the cgroup socket hooks' tests: guards that refuse one port to
// the processes of a cgroup, for connect() (IPv4) and for an unconnected UDP sendto() (IPv4),
// counting what they refused; and a pass-through counter.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

volatile const __u16 blocked_port = 4242; // host order; a manifest's globaldata may change it

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} refused SEC(".maps");

static __always_inline int guard(struct bpf_sock_addr *ctx)
{
	__u32 key = 0;
	if (ctx->user_port != bpf_htons(blocked_port))
		return 1;
	__u64 *n = bpf_map_lookup_elem(&refused, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	return 0; // the call fails with EPERM
}

SEC("cgroup/connect4")
int guard_connect4(struct bpf_sock_addr *ctx)
{
	return guard(ctx);
}

SEC("cgroup/sendmsg4")
int guard_sendmsg4(struct bpf_sock_addr *ctx)
{
	return guard(ctx);
}

SEC("cgroup/connect4")
int allow_connect4(struct bpf_sock_addr *ctx)
{
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
