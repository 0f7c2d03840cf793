// SPDX-License-Identifier: GPL-2.0
// A "foreign" XDP program that tests attach with `ip link` to provoke conflicts.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_foreign(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
