// SPDX-License-Identifier: GPL-2.0
// VM tier: an XDP program whose verdict comes from a global function, the slot that
// freplace_ext.bpf.c replaces (the shape of a dispatcher). Alone it passes every packet.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

__attribute__((noinline)) int bpfman_verdict(struct xdp_md *ctx)
{
	volatile int verdict = XDP_PASS;

	return ctx ? verdict : XDP_ABORTED;
}

SEC("xdp")
int freplace_target(struct xdp_md *ctx)
{
	return bpfman_verdict(ctx);
}

char LICENSE[] SEC("license") = "GPL";
