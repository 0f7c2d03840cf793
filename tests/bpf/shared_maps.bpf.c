// SPDX-License-Identifier: GPL-2.0
// Shared maps test programs. tp_writer counts getpid(2) calls (any process) in `shared`;
// tp_reader copies that count into its own `seen` (.bss, never shared) on every getppid(2).
// Two attachments loaded with the same maps directory share `shared`: the reader sees what the
// writer wrote.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} shared SEC(".maps");

__u64 seen;

SEC("tracepoint/syscalls/sys_enter_getpid")
int tp_writer(void *ctx)
{
	__u32 slot = 0;
	__u64 *value = bpf_map_lookup_elem(&shared, &slot);

	if (value)
		__sync_fetch_and_add(value, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int tp_reader(void *ctx)
{
	__u32 slot = 0;
	__u64 *value = bpf_map_lookup_elem(&shared, &slot);

	if (value)
		seen = *value;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
