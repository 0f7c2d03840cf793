// SPDX-License-Identifier: GPL-2.0
/*
 * XDP packet counter: the smallest useful XDP program, meant to be read, loaded with
 * `bpfman apply` and then inspected through its pinned map.
 *
 * It only observes: every frame is counted and passed on, so attaching it behind (or in front
 * of) other XDP programs on the same interface never changes what the host receives.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* One value for packets and bytes, so a reader gets both from a single lookup. */
struct stats {
	__u64 packets;
	__u64 bytes;
};

/*
 * A per-CPU array instead of a plain array: each CPU updates its own copy without atomics,
 * which keeps the hot path cheap at line rate. Readers add up the per-CPU values
 * (`bpftool map dump` prints them all). The name is the pin name below
 * <bpffs-root>/XdpProgram/<name>/<interface>/maps/, so it is part of the example's interface:
 * keep it at most 15 characters, the kernel's limit for object names.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stats);
} xdp_stats_map SEC(".maps");

SEC("xdp")
int xdp_stats(struct xdp_md *ctx)
{
	__u32 key = 0;
	struct stats *s = bpf_map_lookup_elem(&xdp_stats_map, &key);

	/* The verifier insists on the NULL check even though index 0 of an array always exists. */
	if (s) {
		s->packets++;
		/* The linear frame length; fragments of multi-buffer frames are not counted. */
		s->bytes += (__u64)(ctx->data_end - ctx->data);
	}
	/* XDP_PASS lets bpfman's proceed-on list (pass, dispatcher_return) run the next program. */
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
