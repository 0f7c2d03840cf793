// SPDX-License-Identifier: GPL-2.0
// VM tier: fentry and fexit on getpgid(2) (the host kernel refuses them with EPERM).
#include "probe_counter.h"

SEC("fentry/__x64_sys_getpgid")
int fentry_getpgid(__u64 *ctx)
{
	count(0);
	return 0;
}

SEC("fexit/__x64_sys_getpgid")
int fexit_getpgid(__u64 *ctx)
{
	count(1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
