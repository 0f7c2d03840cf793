// SPDX-License-Identifier: GPL-2.0
// A program the verifier rejects: it reads packet data without a bounds check.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_reject(struct xdp_md *ctx)
{
	return *(int *)(long)ctx->data == 42 ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
