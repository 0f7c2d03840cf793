// cgroup_skb programs for the cgroup attach point's tests: an egress guard that drops the IPv4
// TCP/UDP packets a cgroup's processes send to one port (their sendto()/connect() fails with
// EPERM) and counts them, and pass-through counters of egress and ingress packets.
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

volatile const __u16 blocked_port = 4242; // host order; a manifest's globaldata may change it

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} packets SEC(".maps");

static __always_inline void count(void *map)
{
	__u32 key = 0;
	__u64 *n = bpf_map_lookup_elem(map, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
}

SEC("cgroup_skb/egress")
int guard_egress(struct __sk_buff *skb)
{
	struct iphdr iph;
	__u16 ports[2];

	count(&packets);
	if (skb->protocol != bpf_htons(0x0800)) // ETH_P_IP
		return 1;
	if (bpf_skb_load_bytes(skb, 0, &iph, sizeof(iph)))
		return 1;
	if (iph.protocol != IPPROTO_TCP && iph.protocol != IPPROTO_UDP)
		return 1;
	if (bpf_skb_load_bytes(skb, iph.ihl * 4, ports, sizeof(ports)))
		return 1;
	if (ports[1] != bpf_htons(blocked_port))
		return 1;
	count(&dropped);
	return 0; // dropped: the sender's sendto()/connect() fails with EPERM
}

SEC("cgroup_skb/egress")
int count_egress(struct __sk_buff *skb)
{
	count(&packets);
	return 1;
}

SEC("cgroup_skb/ingress")
int count_ingress(struct __sk_buff *skb)
{
	count(&packets);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
