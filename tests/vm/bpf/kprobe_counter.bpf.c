// SPDX-License-Identifier: GPL-2.0
// VM tier: a kprobe and a kretprobe on getpgid(2) (the host kernel has no kprobes).
#include "probe_counter.h"

SEC("kprobe/__x64_sys_getpgid")
int kprobe_getpgid(void *ctx)
{
	count(0);
	return 0;
}

SEC("kretprobe/__x64_sys_getpgid")
int kretprobe_getpgid(void *ctx)
{
	count(1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
