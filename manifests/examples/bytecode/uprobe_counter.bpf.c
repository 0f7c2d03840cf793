// SPDX-License-Identifier: GPL-2.0
/*
 * Uprobe counter: counts calls of a user-space function (the example manifest picks libc's
 * malloc, which every process calls, so the counter moves as soon as anything runs).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/*
 * malloc is called from every CPU all the time; per-CPU slots keep the probe from turning into a
 * cache-line fight between CPUs. Sum the CPUs to read it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} uprobe_hits_map SEC(".maps");

/*
 * A bare "uprobe" section: binary, function, offset, return probe and pid all come from the
 * manifest, so the object names no target of its own and libbpf does not try to auto-attach it.
 */
SEC("uprobe")
int uprobe_hits(void *ctx)
{
	__u32 key = 0;
	__u64 *hits = bpf_map_lookup_elem(&uprobe_hits_map, &key);

	if (hits)
		(*hits)++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
