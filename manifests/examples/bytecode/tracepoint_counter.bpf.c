// SPDX-License-Identifier: GPL-2.0
/*
 * Tracepoint counter: counts how often the tracepoint it is attached to fires.
 *
 * The program does not read the tracepoint's arguments, so the same object can be attached to any
 * tracepoint (the manifest's `names` list decides which): one load, and one counter, per name.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/*
 * A single per-CPU counter: busy tracepoints such as syscalls/sys_enter_openat fire on every CPU
 * at once, and per-CPU slots avoid contended atomic increments. Sum the CPUs to read it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tp_hits_map SEC(".maps");

/*
 * A bare "tracepoint" section: the group and name come from the manifest at attach time, not from
 * the object, so the bytecode is not tied to one event.
 */
SEC("tracepoint")
int tp_hits(void *ctx)
{
	__u32 key = 0;
	__u64 *hits = bpf_map_lookup_elem(&tp_hits_map, &key);

	if (hits)
		(*hits)++;
	/* Tracepoint programs' return value is ignored by the kernel; 0 is the convention. */
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
