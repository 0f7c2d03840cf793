// SPDX-License-Identifier: GPL-2.0
/*
 * bpfman's XDP dispatcher, speaking libxdp's multi-program protocol, dispatcher layout version 2
 * (xdp-tools 1.3; see docs/dispatchers.md). Written for bpfman from the protocol description.
 *
 * What the protocol fixes, so that libxdp (xdp-loader) recognises and extends it:
 *  - the main program is called xdp_dispatcher and uses exactly one map: .rodata, holding only
 *    the config struct below (libxdp checks its size, key size 4, one entry, read-only for
 *    programs, and magic/version in its first two bytes);
 *  - slots are the global functions prog0 ... prog9, int (struct xdp_md *), each a stub that
 *    returns 31 (the "continue" bit every slot's chain actions include) until a component
 *    program replaces it through freplace;
 *  - slot i runs only if i < num_progs_enabled; after it the chain goes on only if the bit of
 *    its return value is set in chain_call_actions[i]; past the last slot the verdict is pass.
 * bpfman fills the config before load; the kernel then prunes the slots not enabled.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define SLOTS 10
#define CONTINUE 31 /* bit 31 of chain_call_actions: "the slot is empty, go on" */

struct xdp_dispatcher_config {
	__u8 magic;		/* 236 ('X' + 'D' + 'P') */
	__u8 dispatcher_version; /* 2 */
	__u8 num_progs_enabled;
	__u8 is_xdp_frags;
	__u32 chain_call_actions[SLOTS];
	__u32 run_prios[SLOTS];
	__u32 program_flags[SLOTS];
};

/* const: in .rodata, frozen at load (the verifier sees the values and removes unused slots);
 * volatile: clang must not fold the all-zero initial values into the code. */
static volatile const struct xdp_dispatcher_config conf = {};

/* A slot: replaced by a component program. volatile keeps clang from inlining the constant;
 * the adjust_tail(0) no-op marks the slot as one that may change packet data, so newer kernels
 * accept components that do. */
#define SLOT(n)                                                                \
	__attribute__((noinline)) int prog##n(struct xdp_md *ctx)              \
	{                                                                      \
		volatile int verdict = CONTINUE;                               \
		if (!ctx)                                                      \
			return XDP_ABORTED;                                    \
		bpf_xdp_adjust_tail(ctx, 0);                                   \
		return verdict;                                                \
	}

SLOT(0)
SLOT(1)
SLOT(2)
SLOT(3)
SLOT(4)
SLOT(5)
SLOT(6)
SLOT(7)
SLOT(8)
SLOT(9)

#define RUN(n)                                                                 \
	if (enabled < (n) + 1)                                                 \
		return XDP_PASS;                                               \
	verdict = prog##n(ctx);                                                \
	if (!((1U << verdict) & conf.chain_call_actions[n]))                   \
		return verdict;

SEC("xdp")
int xdp_dispatcher(struct xdp_md *ctx)
{
	__u8 enabled = conf.num_progs_enabled;
	int verdict;

	RUN(0)
	RUN(1)
	RUN(2)
	RUN(3)
	RUN(4)
	RUN(5)
	RUN(6)
	RUN(7)
	RUN(8)
	RUN(9)
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

/* The version as BTF metadata too (libxdp reads it when the magic byte is missing). */
__uint(dispatcher_version, 2) SEC("xdp_metadata");
