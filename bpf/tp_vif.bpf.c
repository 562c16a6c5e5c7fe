// SPDX-License-Identifier: GPL-2.0
// tp_vif: the kernel's half of the VIF's TCP system stack (vif/tcp-nat.ts, vif/kernel-nat.ts).
//
// Attached to the TUN's egress (tcx), it runs for every packet the workstation routes into the VIF. The
// packet worker rewrites each TCP packet of a flow so the kernel delivers it to the root daemon's listener
// from a fake peer, and the listener's replies back to the client: two passes through the TUN and the
// worker per packet. Once the worker has handed a flow's SYN to the listener it puts the flow's two
// rewrites in tp_vif_nat; from then on this program rewrites the flow's packets in place and sends them
// straight back in at the TUN's ingress, as if the worker had read and written them. The worker still gets
// every packet without a rewrite here (new flows, UDP, ICMP, anything unparsed) and every SYN, FIN and RST,
// so it sees each flow begin and end as before and stays the only one that decides.
//
// Maps (the root daemon owns them; nothing is pinned: closing its link detaches the program):
//   tp_vif_nat    key = a packet's addresses and ports as it leaves the stack, value = what they become
//   tp_vif_stats  per-CPU counters of the packets and bytes rewritten here
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

// Two entries per flow; a flow that finds the map full stays with the packet worker.
#define TP_VIF_MAX_ENTRIES 16384

// Keep the layouts in step with vif/kernel-nat.ts (KEY_BYTES, VALUE_BYTES, natKey, natValue).
struct tp_vif_key {
  __u8 src[16]; // IPv4: the first 4 bytes, the rest zero
  __u8 dst[16];
  __be16 sport;
  __be16 dport;
  __u8 family; // 4 or 6
  __u8 pad[3];
};

struct tp_vif_rewrite {
  __u8 addrs[32]; // IPv4: new source then new destination in the first 8 bytes; IPv6: 16 + 16
  __be16 ports[2];
};

struct tp_vif_stats {
  __u64 packets;
  __u64 bytes;
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, TP_VIF_MAX_ENTRIES);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct tp_vif_key);
  __type(value, struct tp_vif_rewrite);
} tp_vif_nat SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct tp_vif_stats);
} tp_vif_stats SEC(".maps");

#define TCP_FLAGS_OFF 13
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04

// Rewrites the addresses (alen bytes each, contiguous at addr_off) and the ports (at l4_off) as r says,
// with the checksums updated by difference, then hands the packet to the TUN's ingress.
static __always_inline int rewrite(struct __sk_buff *skb, const struct tp_vif_rewrite *r, __u32 addr_off,
                                   __u32 alen, __u32 l4_off, int ipv4) {
  __u8 old_addrs[32] = {};
  __be16 old_ports[2];
  if (bpf_skb_load_bytes(skb, addr_off, old_addrs, alen == 4 ? 8 : 32) < 0) return TC_ACT_OK;
  if (bpf_skb_load_bytes(skb, l4_off, old_ports, 4) < 0) return TC_ACT_OK;

  __s64 addr_diff = bpf_csum_diff((__be32 *)old_addrs, alen * 2, (__be32 *)r->addrs, alen * 2, 0);
  __s64 port_diff = bpf_csum_diff((__be32 *)old_ports, 4, (__be32 *)r->ports, 4, 0);
  if (addr_diff < 0 || port_diff < 0) return TC_ACT_OK;

  __u32 csum_off = l4_off + offsetof(struct tcphdr, check);
  if (ipv4 && bpf_l3_csum_replace(skb, offsetof(struct iphdr, check), 0, addr_diff, 0) < 0)
    return TC_ACT_SHOT;
  if (bpf_l4_csum_replace(skb, csum_off, 0, addr_diff, BPF_F_PSEUDO_HDR) < 0) return TC_ACT_SHOT;
  if (bpf_l4_csum_replace(skb, csum_off, 0, port_diff, 0) < 0) return TC_ACT_SHOT;
  if (bpf_skb_store_bytes(skb, addr_off, r->addrs, alen == 4 ? 8 : 32, 0) < 0) return TC_ACT_SHOT;
  if (bpf_skb_store_bytes(skb, l4_off, r->ports, 4, 0) < 0) return TC_ACT_SHOT;

  __u32 zero = 0;
  struct tp_vif_stats *stats = bpf_map_lookup_elem(&tp_vif_stats, &zero);
  if (stats) {
    stats->packets++;
    stats->bytes += skb->len;
  }
  return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

static __always_inline int fast_flags(struct tcphdr *tcp) {
  __u8 flags = ((__u8 *)tcp)[TCP_FLAGS_OFF];
  return !(flags & (TCP_SYN | TCP_FIN | TCP_RST));
}

// Completes the key with the segment's ports and the family; rewrites the packet when its flow is in the
// map, else leaves it to the TUN (and the packet worker).
static __always_inline int steer(struct __sk_buff *skb, struct tp_vif_key *key, struct tcphdr *tcp, __u32 alen,
                                 __u32 l3_bytes) {
  key->sport = tcp->source;
  key->dport = tcp->dest;
  key->family = alen == 4 ? 4 : 6;
  struct tp_vif_rewrite *r = bpf_map_lookup_elem(&tp_vif_nat, key);
  if (!r) return TC_ACT_OK;
  if (alen == 4) return rewrite(skb, r, offsetof(struct iphdr, saddr), 4, l3_bytes, 1);
  return rewrite(skb, r, offsetof(struct ipv6hdr, saddr), 16, l3_bytes, 0);
}

static __always_inline int egress_v4(struct __sk_buff *skb) {
  void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
  struct iphdr *ip = data;
  if ((void *)(ip + 1) > end) return TC_ACT_OK;
  if (ip->ihl != 5 || ip->protocol != IPPROTO_TCP || (ip->frag_off & bpf_htons(0x3fff))) return TC_ACT_OK;
  struct tcphdr *tcp = (void *)(ip + 1);
  if ((void *)(tcp + 1) > end || !fast_flags(tcp)) return TC_ACT_OK;

  struct tp_vif_key key = {};
  __builtin_memcpy(key.src, &ip->saddr, 4);
  __builtin_memcpy(key.dst, &ip->daddr, 4);
  return steer(skb, &key, tcp, 4, sizeof(struct iphdr));
}

static __always_inline int egress_v6(struct __sk_buff *skb) {
  void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
  struct ipv6hdr *ip = data;
  if ((void *)(ip + 1) > end) return TC_ACT_OK;
  if (ip->nexthdr != IPPROTO_TCP) return TC_ACT_OK; // extension headers: the worker's
  struct tcphdr *tcp = (void *)(ip + 1);
  if ((void *)(tcp + 1) > end || !fast_flags(tcp)) return TC_ACT_OK;

  struct tp_vif_key key = {};
  __builtin_memcpy(key.src, &ip->saddr, 16);
  __builtin_memcpy(key.dst, &ip->daddr, 16);
  return steer(skb, &key, tcp, 16, sizeof(struct ipv6hdr));
}

SEC("tc")
int tp_vif_egress(struct __sk_buff *skb) {
  // A TUN has no link-layer header: the packet starts with its IP header.
  if (skb->protocol == bpf_htons(ETH_P_IP)) return egress_v4(skb);
  if (skb->protocol == bpf_htons(ETH_P_IPV6)) return egress_v6(skb);
  return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
