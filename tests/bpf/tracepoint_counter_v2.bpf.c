// SPDX-License-Identifier: GPL-2.0
// The second release of tracepoint_counter.bpf.c: the same function and map, other code (it
// counts in steps of two), so that the image tests can move a tag to a program whose kernel tag
// (a hash of its instructions, shown by bpftool) differs.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int tp_count(void *ctx)
{
	__u32 slot = 0;
	__u64 *value = bpf_map_lookup_elem(&counters, &slot);

	if (value)
		__sync_fetch_and_add(value, 2);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
