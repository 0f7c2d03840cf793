// Counters shaped like bpfman's upstream examples and bpfman-operator's samples, written here:
// one program per hook type in one object, with the section names upstream's objects use
// (classifier/... for TC and TCX, tracepoint/<function>, kprobe/<function>, uprobe/<function>),
// and the global variables the operator's samples set with globalData.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

volatile const __u8 GLOBAL_u8 = 0;
volatile const __u32 GLOBAL_u32 = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} app_counters_map SEC(".maps");

static __always_inline int bump(__u32 slot)
{
	__u64 *count = bpf_map_lookup_elem(&app_counters_map, &slot);

	if (count)
		__sync_fetch_and_add(count, 1 + GLOBAL_u8 + GLOBAL_u32 - GLOBAL_u8 - GLOBAL_u32);
	return 0;
}

SEC("xdp")
int xdp_stats(struct xdp_md *ctx)
{
	bump(0);
	return XDP_PASS;
}

SEC("classifier/stats")
int stats(struct __sk_buff *skb)
{
	bump(1);
	return 0; /* TC_ACT_OK */
}

SEC("classifier/tcx_stats")
int tcx_stats(struct __sk_buff *skb)
{
	bump(2);
	return -1; /* TCX_NEXT */
}

SEC("tracepoint/tracepoint_kill_recorder")
int tracepoint_kill_recorder(void *ctx)
{
	return bump(3);
}

SEC("kprobe/kprobe_counter")
int kprobe_counter(void *ctx)
{
	return bump(4);
}

SEC("kretprobe/kretprobe_counter")
int kretprobe_counter(void *ctx)
{
	return bump(9);
}

SEC("uprobe/uprobe_counter")
int uprobe_counter(void *ctx)
{
	return bump(5);
}

SEC("uretprobe/uretprobe_counter")
int uretprobe_counter(void *ctx)
{
	return bump(6);
}

SEC("fentry/do_unlinkat")
int fentry_counter(unsigned long long *ctx)
{
	return bump(7);
}

SEC("fexit/do_unlinkat")
int fexit_counter(unsigned long long *ctx)
{
	return bump(8);
}

char _license[] SEC("license") = "Dual BSD/GPL";
