// SPDX-License-Identifier: GPL-2.0
// VM tier: BPF_PROG_TYPE_EXT replacing freplace_target's bpfman_verdict(): drop instead of pass
// (the host kernel refuses freplace with EPERM).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("freplace/bpfman_verdict")
int drop_verdict(struct xdp_md *ctx)
{
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
