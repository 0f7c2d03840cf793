// SPDX-License-Identifier: GPL-2.0
// Kernel-function test programs for the VM tier: kprobe, kretprobe, fentry and fexit programs
// that count the calls of the function they are attached to in counters[0]. The fexit program
// also records the function's return value in counters[1] (for getpid(2): the caller's pid).
//
// The sections name no function: bpfman attaches each program where its manifest says.
// BPF_PROG gives fentry/fexit programs their arguments from the BTF-typed context; the types
// are declared here (no vmlinux.h) and only a pointer and a long are needed.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
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

// For a syscall's entry function (e.g. __x64_sys_getpid(const struct pt_regs *regs)) the first
// argument is a pointer and the return value a long.
SEC("fexit")
int BPF_PROG(fexit_count, void *regs, long ret)
{
	__u32 slot = 1;
	__u64 *value;

	count();
	value = bpf_map_lookup_elem(&counters, &slot);
	if (value)
		*value = ret;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
