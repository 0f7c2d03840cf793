// SPDX-License-Identifier: GPL-2.0
// XDP test programs: count every frame in `counters` and pass it on.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline int count(__u32 slot)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &slot);

	if (value)
		__sync_fetch_and_add(value, 1);
	return XDP_PASS;
}

// Counts in slot 0.
SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	return count(0);
}

// A second version of the program (counts in slot 1), used to test replace.
SEC("xdp")
int xdp_count_v2(struct xdp_md *ctx)
{
	return count(1);
}

char LICENSE[] SEC("license") = "GPL";
