// SPDX-License-Identifier: GPL-2.0
// Test object for the manifest layer (tests/unit/test_spec_*.py): one program in each kind of
// section bpfman's kinds accept, programs in sections they must refuse, and a subprogram in
// .text that is not an entry point. Never loaded: only its ELF sections and symbols matter.
#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))

char LICENSE[] SEC("license") = "GPL";

static __attribute__((noinline)) int helper(int x)
{
	return x + 1;
}

SEC("xdp") int xdp_stats(struct xdp_md *ctx)
{
	return helper(ctx->ingress_ifindex) ? XDP_PASS : XDP_DROP;
}

SEC("xdp.frags") int xdp_frags(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp/devmap") int xdp_devmap(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("tc") int tc_count(struct __sk_buff *skb)
{
	return 0;
}

SEC("tcx/ingress") int tcx_ingress(struct __sk_buff *skb)
{
	return 0;
}

SEC("classifier") int cls_legacy(struct __sk_buff *skb)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat") int tp_openat(void *ctx)
{
	return 0;
}

SEC("tp/sched/sched_switch") int tp_sched_switch(void *ctx)
{
	return 0;
}

SEC("uprobe") int uprobe_malloc(void *ctx)
{
	return 0;
}

SEC("uretprobe") int uretprobe_malloc(void *ctx)
{
	return 0;
}

SEC("uprobe.multi") int uprobe_multi(void *ctx)
{
	return 0;
}

SEC("kprobe/do_sys_openat2") int kprobe_open(void *ctx)
{
	return 0;
}

SEC("raw_tp/sched_switch") int raw_tp_switch(void *ctx)
{
	return 0;
}
