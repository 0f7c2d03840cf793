// SPDX-License-Identifier: GPL-2.0
// VM tier: a dispatcher component that records when it runs. Each copy gets its own `tag`
// (global data) and shares the `trace` map (maps_dir): trace[0] counts calls, trace[1..] holds
// the tags in call order, so one frame through the dispatcher leaves the run order behind.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define ENTRIES 32

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, ENTRIES);
	__type(key, __u32);
	__type(value, __u32);
} trace SEC(".maps");

const volatile __u32 tag = 0;

SEC("xdp")
int xdp_order(struct xdp_md *ctx)
{
	__u32 zero = 0, *count, *entry, key;

	count = bpf_map_lookup_elem(&trace, &zero);
	if (!count)
		return XDP_PASS;
	key = *count + 1;
	if (key >= ENTRIES)
		return XDP_PASS;
	entry = bpf_map_lookup_elem(&trace, &key);
	if (entry)
		*entry = tag;
	*count = key;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
