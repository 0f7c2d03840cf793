// SPDX-License-Identifier: GPL-2.0
// bpfman's TC dispatcher: one cls_bpf (direct-action) program that runs up to ten component
// programs in order. Each component is a BPF_PROG_TYPE_EXT (freplace) program attached to one of
// the slot functions prog0..prog9; a slot with nothing attached returns TC_DISPATCHER_RETURN.
//
// Return-value encoding (see docs/dispatchers-tc.md): a component's return value v continues
// the chain iff bit (v + 1) of chain_call_actions[slot] is set. v is a TC action
// (TC_ACT_UNSPEC = -1 -> bit 0, TC_ACT_OK = 0 -> bit 1, ... TC_ACT_TRAP = 8 -> bit 9) or
// TC_DISPATCHER_RETURN = 30 -> bit 31. Any other value stops the chain: the dispatcher returns
// it, except TC_DISPATCHER_RETURN, which it returns as TC_ACT_OK. When every enabled slot
// continued, the verdict is TC_ACT_OK.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define MAX_DISPATCHER_ACTIONS 10
#define TC_DISPATCHER_RETURN 30
#define TC_DISPATCHER_MAGIC 0xbf
#define TC_DISPATCHER_VERSION 1

struct tc_dispatcher_config {
	__u8 magic;
	__u8 dispatcher_version;
	__u8 num_progs_enabled;
	__u8 reserved;
	__u32 chain_call_actions[MAX_DISPATCHER_ACTIONS];
	__u32 run_prios[MAX_DISPATCHER_ACTIONS];
};

// Written by the loader before load (.rodata: the verifier treats it as constant, so disabled
// slots are dead code).
static volatile const struct tc_dispatcher_config CONFIG = {};

#define SLOT(n)                                                                  \
	__attribute__((noinline)) int prog##n(struct __sk_buff *skb)             \
	{                                                                        \
		volatile int ret = TC_DISPATCHER_RETURN;                         \
		if (!skb)                                                        \
			return TC_ACT_SHOT;                                      \
		return ret;                                                      \
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

static __always_inline int proceeds(int ret, __u32 mask)
{
	__u32 bit = (__u32)(ret + 1);

	return bit < 32 && (mask & (1U << bit));
}

#define RUN(n)                                                                   \
	if (num_progs_enabled <= n)                                              \
		return TC_ACT_OK;                                                \
	ret = prog##n(skb);                                                      \
	if (!proceeds(ret, CONFIG.chain_call_actions[n]))                        \
		return ret == TC_DISPATCHER_RETURN ? TC_ACT_OK : ret;

SEC("tc")
int tc_dispatcher(struct __sk_buff *skb)
{
	__u8 num_progs_enabled = CONFIG.num_progs_enabled;
	int ret;

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
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
