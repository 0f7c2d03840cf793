// SPDX-License-Identifier: GPL-2.0
/*
 * The program bench.py loads N times, through bpfman and through the C loader alike.
 *
 * Deliberately tiny: the benchmark measures the cost of loading, attaching and pinning, so the
 * program should take the verifier no time, yet own one map so that map creation and pinning are
 * part of every load, as they are for real programs.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tp_bench_hits SEC(".maps");

/* Bare section: the tracepoint comes from the manifest (bpfman) or the command line (loader). */
SEC("tracepoint")
int tp_bench(void *ctx)
{
	__u32 key = 0;
	__u64 *hits = bpf_map_lookup_elem(&tp_bench_hits, &key);

	if (hits)
		(*hits)++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
