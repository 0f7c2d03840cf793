// SPDX-License-Identifier: GPL-2.0
// Global data test program: counts getpid(2) calls (any process) in steps of `step`, a volatile
// const the loader may set before load; records `tag` (.data) in counters[1] and counts its own
// runs in `calls` (.bss).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u64 step = 1;	// .rodata
volatile __u32 tag = 7;		// .data
__u64 calls;			// .bss

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int tp_step(void *ctx)
{
	__u32 count_slot = 0, tag_slot = 1;
	__u64 *value = bpf_map_lookup_elem(&counters, &count_slot);

	if (value)
		__sync_fetch_and_add(value, step);
	value = bpf_map_lookup_elem(&counters, &tag_slot);
	if (value)
		*value = tag;
	__sync_fetch_and_add(&calls, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
