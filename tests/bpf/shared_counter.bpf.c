// Two tracepoint programs and an XDP program adding to one counter map: used to prove that
// maps are really shared (application maps, map owners) and that global data reaches the program.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} shared_hits SEC(".maps");

// What each event adds: set per manifest through globaldata, so a test can tell who counted.
volatile const __u64 increment = 1;

static __always_inline void add(void)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&shared_hits, &key);

	if (v)
		__sync_fetch_and_add(v, increment);
}

SEC("tracepoint")
int count_getpid(void *ctx)
{
	add();
	return 0;
}

SEC("tracepoint")
int count_getppid(void *ctx)
{
	add();
	return 0;
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	add();
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
