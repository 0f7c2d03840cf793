// A kprobe counter: on hosts without kprobes the plan must refuse it, naming the feature.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} kprobe_hits_map SEC(".maps");

SEC("kprobe")
int kprobe_hits(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&kprobe_hits_map, &key);

	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
