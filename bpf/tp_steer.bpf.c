// SPDX-License-Identifier: GPL-2.0
// tp_steer: the sk_lookup program of tp's eBPF capture mechanism.
//
// Attached to a pod's network namespace, it runs when the kernel looks up the listening socket for a new
// inbound TCP connection. For a captured port whose listener the agent has put in tp_listeners (that is,
// while an intercept of that port is active), it assigns the connection to that listener: no NAT, so the
// accepted socket keeps the app's port as its local port. In every other case it returns SK_PASS without
// assigning, and the kernel's normal lookup hands the connection to the app: zero extra hop, and when the
// agent's socket closes (the agent exits or crashes) the kernel drops it from tp_listeners, so traffic
// falls through to the app (fail-open).
//
// Maps (the loader pins them under /sys/fs/bpf/tp/<netns-inode>/, the agent opens tp_listeners there):
//   tp_ports      captured ports (set by tp-init): key = port in host byte order, value = 1
//   tp_listeners  SOCKHASH: key = captured port, value = the agent's listening socket for it
//   tp_stats      per-port counters: key = captured port, value = struct tp_port_stats
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
// Keep in step with MAX_CAPTURED_PORTS in bpf/steering-keys.ts.
#define TP_MAX_PORTS 64

// Keep the field order in step with STATS_FIELDS in bpf/steering-keys.ts.
struct tp_port_stats {
  __u64 steered;       // assigned to the agent's listener
  __u64 no_listener;   // captured port, no listener registered: passed to the app
  __u64 local;         // loopback or the pod's own address as source: never steered (agent passthrough)
  __u64 assign_failed; // bpf_sk_assign refused the listener (e.g. an IPv4-only socket for IPv6): passed
};

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, TP_MAX_PORTS);
  __type(key, __u16);
  __type(value, __u8);
} tp_ports SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, TP_MAX_PORTS);
  __type(key, __u16);
  __type(value, __u64);
} tp_listeners SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, TP_MAX_PORTS);
  __type(key, __u16);
  __type(value, struct tp_port_stats);
} tp_stats SEC(".maps");

static __always_inline int is_local_v4(struct bpf_sk_lookup *ctx) {
  // 127.0.0.0/8: the agent's passthrough dial and the pod's own localhost calls.
  if ((bpf_ntohl(ctx->local_ip4) >> 24) == 127) return 1;
  // A connection from the pod to its own address (source == destination) never left the pod.
  return ctx->remote_ip4 == ctx->local_ip4;
}

static __always_inline int is_local_v6(struct bpf_sk_lookup *ctx) {
  __u32 l0 = ctx->local_ip6[0], l1 = ctx->local_ip6[1], l2 = ctx->local_ip6[2], l3 = ctx->local_ip6[3];
  if (l0 == 0 && l1 == 0 && l2 == 0 && l3 == bpf_htonl(1)) return 1; // ::1
  return l0 == ctx->remote_ip6[0] && l1 == ctx->remote_ip6[1] && l2 == ctx->remote_ip6[2] &&
         l3 == ctx->remote_ip6[3];
}

SEC("sk_lookup")
int tp_steer(struct bpf_sk_lookup *ctx) {
  if (ctx->protocol != IPPROTO_TCP) return SK_PASS;
  __u16 port = (__u16)ctx->local_port; // host byte order
  if (!bpf_map_lookup_elem(&tp_ports, &port)) return SK_PASS;
  struct tp_port_stats *stats = bpf_map_lookup_elem(&tp_stats, &port);

  int local = 0;
  if (ctx->family == AF_INET) local = is_local_v4(ctx);
  else if (ctx->family == AF_INET6) local = is_local_v6(ctx);
  if (local) {
    if (stats) __sync_fetch_and_add(&stats->local, 1);
    return SK_PASS;
  }

  struct bpf_sock *sk = bpf_map_lookup_elem(&tp_listeners, &port);
  if (!sk) {
    if (stats) __sync_fetch_and_add(&stats->no_listener, 1);
    return SK_PASS;
  }
  long err = bpf_sk_assign(ctx, sk, 0);
  bpf_sk_release(sk);
  if (stats) __sync_fetch_and_add(err ? &stats->assign_failed : &stats->steered, 1);
  // On error the connection is not dropped: the normal lookup gives it to the app.
  return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
