// The gRPC options every tp channel and server uses. One place, so the tunnel's throughput tuning and
// the dead-peer detection are the same on every hop (agent, manager, user daemon).
import type { ChannelOptions, ServerOptions } from '@grpc/grpc-js';

/** Largest message tp sends; tunnel DATA messages stay at or below 1 MiB plus framing. */
export const MAX_MESSAGE_BYTES = 8 << 20;

/**
 * HTTP/2 flow-control window of a client channel. The probes measured 395 -> 480-500 MB/s for
 * server-to-client tunnel traffic with 1 MiB instead of the 64 KiB default.
 */
export const FLOW_CONTROL_WINDOW_BYTES = 1 << 20;

/** A peer that does not answer an HTTP/2 ping within KEEPALIVE_TIMEOUT_MS after KEEPALIVE_TIME_MS is dead. */
export const KEEPALIVE_TIME_MS = 10_000;
export const KEEPALIVE_TIMEOUT_MS = 5_000;

/** Options of a channel to the traffic manager (agents, user daemon, root daemon). */
export function managerChannelOptions(): ChannelOptions {
  return {
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW_BYTES,
    'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
    'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
    'grpc.keepalive_permit_without_calls': 1,
    // Reconnect quickly after the manager restarts; the callers add their own backoff on top.
    'grpc.initial_reconnect_backoff_ms': 250,
    'grpc.max_reconnect_backoff_ms': 2_000,
  };
}

/**
 * HTTP/2 window of the workstation's channels to the manager (user daemon, root daemon). A workstation
 * reaches the manager across a network (a port-forward through the Kubernetes API server, a remote
 * cluster), and a flow from the manager to the workstation moves at most one window per round trip.
 * Measured on the lab (VIF -> port-forward -> manager -> pod, 100 MiB downloads, interleaved): 1 MiB
 * 11-19 MB/s, 8 MiB 22-39 MB/s, 16 MiB 40-111 MB/s. The receiver buffers at most this much per connection.
 * The manager widens its receive window of a workstation's connections to the same size (uploads), the first
 * time a tunnel stream of a client session arrives on it (manager/tunnel-router.ts).
 */
export const WORKSTATION_FLOW_CONTROL_WINDOW_BYTES = 16 << 20;

/** Options of a workstation's channel to the traffic manager (user daemon, root daemon). */
export function workstationChannelOptions(): ChannelOptions {
  return {
    ...managerChannelOptions(),
    'grpc-node.flow_control_window': WORKSTATION_FLOW_CONTROL_WINDOW_BYTES,
  };
}

/** Options of the manager's server. */
export function managerServerOptions(): ServerOptions {
  return {
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
    'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
  };
}

/** Options of a local channel on a unix socket (CLI to user daemon): small messages, no keepalive needed. */
export function localChannelOptions(): ChannelOptions {
  return {
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    // The CLI makes a few calls and exits: fail at once when the daemon is not there, no reconnect loop.
    'grpc.initial_reconnect_backoff_ms': 100,
    'grpc.max_reconnect_backoff_ms': 500,
  };
}
