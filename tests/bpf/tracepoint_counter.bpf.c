// SPDX-License-Identifier: GPL-2.0
// Tracepoint test program: counts getpid(2) calls (any process).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#ifndef STEP /* tracepoint_counter_v2.bpf.c counts in other steps */
#define STEP 1
#endif

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
		__sync_fetch_and_add(value, STEP);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
