// Builders for the tunnel's messages (rpc/manager.proto: TunnelMessage) and the defaults both ends share.
import type * as net from 'node:net';
import { formatHostPort } from '../netaddr/parse.js';
import { type ConnectionID, type StreamInfo, TunnelCode, type TunnelMessage } from '../rpc/gen/manager.js';
import { TUNNEL_VERSION } from '../version/version.js';

export type { ConnectionID, StreamInfo, TunnelMessage };
export { TunnelCode };

/** How long the originator waits for DIAL_OK/DIAL_REJECT when OPEN does not say. */
export const DEFAULT_DIAL_TIMEOUT_MS = 5_000;
/** A flow with no DATA either way for this long is reset (both ends). 0 turns it off. */
export const DEFAULT_IDLE_TIMEOUT_MS = 60 * 60_000;
/** A flow that has sent nothing for this long sends KEEPALIVE, so proxies on the way keep it open. */
export const DEFAULT_KEEPALIVE_INTERVAL_MS = 30_000;
/**
 * Largest DATA payload. Reads from the socket are coalesced up to this size: a tunnel message costs
 * ~20 µs whatever its size, so 64 KiB reads sent one by one would cap the flow well below the link.
 */
export const MAX_DATA_BYTES = 1 << 20;

/**
 * The start of every DIAL_REJECT the manager sends for an intercepted connection when the intercepting
 * workstation cannot take it (its session is dead or unknown, its dial stream is down, it did not answer,
 * the intercept is gone). The agent gives such a connection to the app instead of resetting it; a
 * DIAL_REJECT without it comes from the workstation itself (its local port refused) and resets the client.
 */
export const WORKSTATION_UNAVAILABLE = 'workstation unavailable: ';

/**
 * The reason a stopping manager refuses new flows with (behind WORKSTATION_UNAVAILABLE for an agent's): a
 * workstation's flow that meets it on a flow connection goes as a Tunnel call instead, which the gRPC
 * channel takes to the next manager.
 */
export const MANAGER_SHUTTING_DOWN = 'the traffic manager is shutting down';

/**
 * The reason the manager refuses a flow of a session it does not know (it expired, or the manager
 * restarted and the workstation has not arrived again yet).
 */
export function sessionUnknown(sessionId: string): string {
  return `session ${sessionId || '(none)'} ${SESSION_UNKNOWN}`;
}
const SESSION_UNKNOWN = 'is unknown to the traffic manager (it expired or the manager restarted)';

/**
 * Whether a refusal says the traffic manager cannot take flows now, rather than anything about the
 * destination: it is stopping, or does not know the session yet (it restarted). A workstation's new flow
 * waits for it (daemons/root/tunnel-dialer.ts).
 */
export function isManagerUnavailable(reason: string): boolean {
  return reason.includes(MANAGER_SHUTTING_DOWN) || reason.includes(SESSION_UNKNOWN);
}

/** Whether a DIAL_REJECT reason says the workstation could not take the connection (see above). */
export function isWorkstationUnavailable(reason: string): boolean {
  return reason.startsWith(WORKSTATION_UNAVAILABLE);
}

/**
 * The tunnel version from which an end takes early data: DATA and CLOSE_SEND from the originator before
 * its DIAL_OK, kept until it has dialed. An agent sends its client's first bytes right behind OPEN when
 * the manager's Arrival says at least this version; the manager's relay passes them on at once to a
 * dialer whose OPEN says at least this version, and holds them until DIAL_OK for an older one. A new
 * connection then costs no round trip between DIAL_OK and the request.
 */
export const EARLY_DATA_VERSION = 3;

const EMPTY = Buffer.alloc(0);

function message(code: TunnelCode, fields: Partial<TunnelMessage> = {}): TunnelMessage {
  return { code, data: EMPTY, open: undefined, error: '', ...fields };
}

export const msg = {
  open: (info: StreamInfo) => message(TunnelCode.OPEN, { open: info }),
  data: (data: Buffer) => message(TunnelCode.DATA, { data }),
  dialOk: () => message(TunnelCode.DIAL_OK),
  dialReject: (reason: string) => message(TunnelCode.DIAL_REJECT, { error: reason }),
  closeSend: () => message(TunnelCode.CLOSE_SEND),
  reset: (reason: string) => message(TunnelCode.RESET, { error: reason }),
  keepalive: () => message(TunnelCode.KEEPALIVE),
};

export function streamInfo(
  fields: Partial<StreamInfo> & Pick<StreamInfo, 'connId' | 'sessionId'>,
): StreamInfo {
  return {
    version: TUNNEL_VERSION,
    dialTimeoutMs: DEFAULT_DIAL_TIMEOUT_MS,
    idleTimeoutMs: DEFAULT_IDLE_TIMEOUT_MS,
    interceptId: '',
    relayId: '',
    mount: false,
    mountReadWrite: false,
    credential: '',
    ...fields,
  };
}

/** A name for a code, for logs and RESET reasons; unknown numbers stay visible. */
export function codeName(code: number): string {
  return TunnelCode[code] ?? `code ${code}`;
}

const TCP = 6;

/** The connection id of a TCP connection a listener accepted: the client is the source. */
export function connectionIdOf(socket: net.Socket, dst?: { address: string; port: number }): ConnectionID {
  return {
    protocol: TCP,
    srcIp: stripV4Mapped(socket.remoteAddress ?? ''),
    srcPort: socket.remotePort ?? 0,
    dstIp: stripV4Mapped(dst?.address ?? socket.localAddress ?? ''),
    dstPort: dst?.port ?? socket.localPort ?? 0,
  };
}

/** "tcp 10.0.0.1:5000 -> 10.0.0.2:8080", for logs. */
export function formatConnectionId(id: ConnectionID | undefined): string {
  if (!id) return '(no connection id)';
  const proto = id.protocol === TCP ? 'tcp' : id.protocol === 17 ? 'udp' : `proto ${id.protocol}`;
  return `${proto} ${formatHostPort(id.srcIp, id.srcPort)} -> ${formatHostPort(id.dstIp, id.dstPort)}`;
}

function stripV4Mapped(ip: string): string {
  return ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}
