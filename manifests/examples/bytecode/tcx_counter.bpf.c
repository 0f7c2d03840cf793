// SPDX-License-Identifier: GPL-2.0
/*
 * TCX counter: counts packets and bytes seen by a tcx hook (ingress or egress, as the manifest
 * says) without ever deciding their fate.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/*
 * TCX_NEXT hands the packet to the next program on the tcx hook, or to the kernel's default
 * verdict when this program is last. Older UAPI headers (Linux < 6.6) do not define it.
 */
#ifndef TCX_NEXT
#define TCX_NEXT -1
#endif

struct stats {
	__u64 packets;
	__u64 bytes;
};

/* Per-CPU for the same reason as the XDP example: no atomics on the packet path. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stats);
} tcx_stats_map SEC(".maps");

/*
 * "tc" rather than "tcx/ingress": libbpf 1.1 does not know the tcx section names. The section only
 * picks the program type (SCHED_CLS); bpfman attaches it as a tcx link, and the direction comes
 * from the manifest, so one object serves both directions.
 */
SEC("tc")
int tcx_stats(struct __sk_buff *skb)
{
	__u32 key = 0;
	struct stats *s = bpf_map_lookup_elem(&tcx_stats_map, &key);

	if (s) {
		s->packets++;
		/* skb->len covers the whole packet, paged data included, unlike XDP's linear length. */
		s->bytes += skb->len;
	}
	/* Never a verdict of our own: a counter must not be able to drop traffic by accident. */
	return TCX_NEXT;
}

char LICENSE[] SEC("license") = "GPL";
