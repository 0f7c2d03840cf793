// SPDX-License-Identifier: GPL-2.0
// TCX test program: counts packets and records its position in the hook's chain.
//
// counters[0] = packets seen; counters[1] = skb->mark on entry. Each program adds one to the mark,
// so with a fresh mark of 0 the first program records 0, the second 1, and so on: reading the
// maps with bpftool proves the order the kernel runs them in.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define TCX_NEXT -1

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

SEC("tc")
int tcx_count(struct __sk_buff *skb)
{
	__u32 packets = 0, position = 1;
	__u64 *value = bpf_map_lookup_elem(&counters, &packets);

	if (value)
		__sync_fetch_and_add(value, 1);
	value = bpf_map_lookup_elem(&counters, &position);
	if (value)
		*value = skb->mark;
	skb->mark += 1;
	return TCX_NEXT;
}

char LICENSE[] SEC("license") = "GPL";
