// SPDX-License-Identifier: GPL-2.0
// Test object for the manifest layer (tests/unit/test_spec_*.py): one program in each kind of
// section bpfman's kinds accept, programs in sections they must refuse, and a subprogram in
// .text that is not an entry point, and global variables in each data section (for globaldata).
// Never loaded: only its ELF sections, symbols and BTF matter.
#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))

char LICENSE[] SEC("license") = "GPL";

// Global variables a manifest's globaldata can set: .rodata, .data, .bss and a custom section.
volatile const __u8 GLOBAL_u8 = 0;
volatile const __u32 GLOBAL_u32 = 0;
__u32 sample_rate = 7;
__u64 packets;
__u16 port SEC(".data.config") = 53;

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

SEC("kretprobe/do_sys_openat2") int kretprobe_open(void *ctx)
{
	return 0;
}

SEC("kprobe.multi/do_sys_*") int kprobe_multi(void *ctx)
{
	return 0;
}

SEC("fentry/do_unlinkat") int fentry_unlink(void *ctx)
{
	return 0;
}

SEC("fexit/do_unlinkat") int fexit_unlink(void *ctx)
{
	return 0;
}

SEC("fmod_ret/do_unlinkat") int fmod_ret_unlink(void *ctx)
{
	return 0;
}

SEC("cgroup_skb/egress") int cgroup_egress(struct __sk_buff *skb)
{
	return 1;
}

SEC("cgroup_skb/ingress") int cgroup_ingress(struct __sk_buff *skb)
{
	return 1;
}

SEC("cgroup/connect4") int cgroup_connect4(struct bpf_sock_addr *ctx)
{
	return 1;
}
