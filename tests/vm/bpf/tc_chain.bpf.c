// SPDX-License-Identifier: GPL-2.0
// VM tier: TC programs run behind bpfman's TC dispatcher. Each records, in its own counters
// map, the position at which it ran (skb->mark counts the programs that ran before it on this
// packet) and returns its configured verdict (`verdict`, global data; 30 = dispatcher_return).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

volatile const int verdict = 30;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4); // [0]: runs, [1 + position]: runs at that position (0..2)
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 key)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &key);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("tc")
int tc_chain(struct __sk_buff *skb)
{
	__u32 position = skb->mark & 0xff;

	count(0);
	if (position < 3)
		count(1 + position);
	skb->mark = position + 1;
	return verdict;
}

char LICENSE[] SEC("license") = "GPL";
