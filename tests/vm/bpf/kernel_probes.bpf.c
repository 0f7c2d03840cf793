// SPDX-License-Identifier: GPL-2.0
// Kernel-function test programs for the VM tier: kprobe, kretprobe, fentry and fexit programs
// that count the calls of the function they are attached to in counters[0].
//
// The sections name no function: bpfman attaches each program where its manifest says. The
// fentry/fexit programs read no argument (BPF_PROG with none), so the verifier accepts them on
// any function whatever its prototype (which differs between kernels: __x64_sys_getpid takes
// the registers, __do_sys_getpid nothing).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(void)
{
	__u32 slot = 0;
	__u64 *value = bpf_map_lookup_elem(&counters, &slot);

	if (value)
		__sync_fetch_and_add(value, 1);
}

SEC("kprobe")
int kprobe_count(void *ctx)
{
	count();
	return 0;
}

SEC("kretprobe")
int kretprobe_count(void *ctx)
{
	count();
	return 0;
}

SEC("fentry")
int BPF_PROG(fentry_count)
{
	count();
	return 0;
}

SEC("fexit")
int BPF_PROG(fexit_count)
{
	count();
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
