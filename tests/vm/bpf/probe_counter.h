// SPDX-License-Identifier: GPL-2.0
// Shared by the VM tier's probe programs: per process, how often the probed function was entered
// (slot 0) and left (slot 1). Keyed by tgid so that other processes' calls do not count.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct hits {
	__u64 entered;
	__u64 left;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct hits);
} hits SEC(".maps");

static __always_inline void count(int left)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct hits zero = {}, *h = bpf_map_lookup_elem(&hits, &tgid);

	if (!h) {
		bpf_map_update_elem(&hits, &tgid, &zero, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&hits, &tgid);
		if (!h)
			return;
	}
	if (left)
		__sync_fetch_and_add(&h->left, 1);
	else
		__sync_fetch_and_add(&h->entered, 1);
}
