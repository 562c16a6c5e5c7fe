// The gRPC options every tp channel and server uses. One place, so the tunnel's throughput tuning and
// the dead-peer detection are the same on every hop (agent, manager, user daemon).
import type { ChannelOptions, ServerOptions } from '@grpc/grpc-js';

/** Largest message tp sends; tunnel DATA messages stay at or below 1 MiB plus framing. */
export const MAX_MESSAGE_BYTES = 8 << 20;

/**
 * HTTP/2 flow-control windows of the tunnel's connections: one stream is one flow, one connection carries
 * every flow of an agent or a workstation.
 * - The stream window bounds what one flow has in flight, so also how long a small message of another flow
 *   waits behind a bulk transfer (head-of-line; at 100 MiB/s 1 MiB is 10 ms) and what one stalled reader
 *   holds. 1 MiB instead of HTTP/2's 64 KiB: 395 -> 480-500 MB/s server-to-client in the probes. A
 *   workstation's streams had 16 MiB while the API server's port-forward took 40 ms per round trip (no
 *   TCP_NODELAY); with 0.5-2 ms round trips 16 MiB only queued a bulk flow ahead of everything else (p99 of
 *   sequential requests beside a download: 160-440 ms on the lab; WORKSTATION_WINDOWS below).
 * - The connection window bounds what all flows of the connection have in flight together (Node's
 *   HTTP/2 returns a connection's window as soon as data arrives, a stream's only when it is read, so a
 *   stalled reader holds its stream window, never the connection's). Equal to the stream window, two bulk
 *   flows would share one window per round trip.
 * grpc-js sets both to 'grpc-node.flow_control_window' and has no option for either alone: a channel is
 * created with the stream window, and the first tunnel stream on each connection widens the connection's
 * (rpc/client-window.ts); the manager widens its receive windows the same way (rpc/server-window.ts).
 */
export interface FlowWindows {
  stream: number;
  connection: number;
}

/** An agent's connection (both directions). */
export const AGENT_WINDOWS: FlowWindows = { stream: 1 << 20, connection: 8 << 20 };

/**
 * A workstation's connections (user daemon, root daemon), across a port-forward or a network. The stream
 * window bounds what a download has queued in the port-forward ahead of every other flow of the
 * workstation: bench/round-trip, the p99 of sequential requests through the VIF beside a download
 * (idle ~3-3.7 ms, same runs, 2026-12-05): 2 MiB 30-32 ms (8.8-10.4x), 1 MiB 17.5-18.7 ms (5.4x),
 * 768 KiB 15-22 ms, 512 KiB 9.1-9.7 ms (2.7x). The download itself: 163, 152, 138, 137 MiB/s (CPU-bound
 * on the lab's two cores, ±10% run to run). A DATA message (up to 1 MiB) larger than the window crosses in
 * parts; HTTP/2 returns the window as the receiver reads.
 */
export const WORKSTATION_WINDOWS: FlowWindows = { stream: 512 << 10, connection: 32 << 20 };

/**
 * What an agent's direct service (agent/direct.ts) takes in from a workstation: a workstation's stream
 * window (the same port-forward, the same head-of-line bound), but an agent's connection window, since the
 * connection carries one pod's flows only and what it holds counts against the agent container's memory.
 */
export const DIRECT_WINDOWS: FlowWindows = {
  stream: WORKSTATION_WINDOWS.stream,
  connection: AGENT_WINDOWS.connection,
};

/**
 * A peer that does not answer an HTTP/2 ping within KEEPALIVE_TIMEOUT_MS is dead; pings go every
 * KEEPALIVE_TIME_MS, calls or not, from both ends (the manager pings its clients and agents too). So a
 * peer that went silent without a FIN (a dropped network, a sleeping laptop) is found within 2.5 s, on
 * either side: the workstation's daemon reconnects, and the manager ends the session and stops sending
 * its intercepts traffic. grpc-js servers do not police the ping rate (no GOAWAY too_many_pings), so the
 * manager accepts its clients' pings at this rate; a Go gRPC server would need an enforcement policy with
 * MinTime below 1 s. A ping is a few dozen bytes each way through the API server's port-forward.
 */
export const KEEPALIVE_TIME_MS = 1_000;
export const KEEPALIVE_TIMEOUT_MS = 1_500;

/** Options of a channel to the traffic manager (agents, user daemon, root daemon). */
export function managerChannelOptions(): ChannelOptions {
  return {
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    'grpc-node.flow_control_window': AGENT_WINDOWS.stream,
    'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
    'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
    'grpc.keepalive_permit_without_calls': 1,
    // Reconnect quickly after the manager restarts; the callers add their own backoff on top.
    'grpc.initial_reconnect_backoff_ms': 250,
    'grpc.max_reconnect_backoff_ms': 2_000,
    // tp has no service config in DNS: no TXT lookup beside every resolution of the manager's name (one
    // more query that can stall while the cluster's DNS is slow).
    'grpc.service_config_disable_resolution': 1,
  };
}

/** Options of a workstation's channel to the traffic manager (user daemon, root daemon). */
export function workstationChannelOptions(): ChannelOptions {
  return { ...managerChannelOptions(), 'grpc-node.flow_control_window': WORKSTATION_WINDOWS.stream };
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
