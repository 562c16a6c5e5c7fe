// UDP through the VIF: each client flow (client address:port -> cluster address:port) becomes one flow
// to the far side, one message per datagram, closed after it has been idle for a while. Datagrams that
// arrive while the flow is being dialed wait in a short queue; a refused flow answers ICMP port
// unreachable, so a connected UDP socket fails with ECONNREFUSED instead of waiting for a timeout.

import type { Logger } from '../logging/logger.js';
import { bytesToIp } from '../netaddr/parse.js';
import { DialRejectedError, type FlowDialer, type UdpFlow } from './flows.js';
import { flowKey, type ParsedPacket, PROTO_UDP, parsePacket, udpPayload } from './packet.js';
import { buildPortUnreachable, buildUdpPacket } from './packet-build.js';

export const DEFAULT_UDP_IDLE_MS = 60_000;
/** Datagrams held while a flow is dialed; more are dropped (UDP may drop, the sender retries). */
const MAX_QUEUED = 64;
/** A refused destination answers "unreachable" at once for this long before it is dialed again. */
const REJECTED_MEMORY_MS = 2_000;

interface UdpFlowState {
  client: Buffer;
  clientPort: number;
  target: Buffer;
  targetPort: number;
  flow: UdpFlow | undefined;
  queue: Buffer[];
  /** The first datagram, quoted in the ICMP error if the flow is refused. */
  first: Buffer;
  lastActivity: number;
  rejectedAt: number | undefined;
}

export class UdpRelay {
  readonly stats = { flowsOpened: 0, flowsRejected: 0, datagramsOut: 0, datagramsIn: 0, dropped: 0 };
  private readonly flows = new Map<string, UdpFlowState>();
  private readonly sweepTimer: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly write: (packet: Buffer) => boolean,
    private readonly dialer: FlowDialer,
    private readonly log: Logger,
    private readonly idleMs = DEFAULT_UDP_IDLE_MS,
  ) {
    this.sweepTimer = setInterval(() => this.sweep(), Math.min(5_000, idleMs));
    this.sweepTimer.unref();
  }

  get openFlows(): number {
    return this.flows.size;
  }

  handle(p: Buffer, info: ParsedPacket): void {
    if (info.fragment || info.protocol !== PROTO_UDP) {
      this.stats.dropped++;
      return;
    }
    const key = flowKey(p, info);
    const now = Date.now();
    let state = this.flows.get(key);
    if (state?.rejectedAt !== undefined) {
      if (now - state.rejectedAt < REJECTED_MEMORY_MS) {
        this.write(buildPortUnreachable(p, info));
        return;
      }
      this.flows.delete(key);
      state = undefined;
    }
    const payload = Buffer.from(udpPayload(p, info));
    if (state) {
      state.lastActivity = now;
      if (state.flow) {
        this.stats.datagramsOut++;
        state.flow.send(payload);
      } else if (state.queue.length < MAX_QUEUED) state.queue.push(payload);
      else this.stats.dropped++;
      return;
    }
    const created: UdpFlowState = {
      client: Buffer.from(p.subarray(info.srcOffset, info.srcOffset + info.addressLength)),
      clientPort: info.srcPort,
      target: Buffer.from(p.subarray(info.dstOffset, info.dstOffset + info.addressLength)),
      targetPort: info.dstPort,
      flow: undefined,
      queue: [payload],
      first: Buffer.from(p.subarray(0, info.length)),
      lastActivity: now,
      rejectedAt: undefined,
    };
    this.flows.set(key, created);
    const id = {
      protocol: PROTO_UDP,
      srcIp: bytesToIp(created.client),
      srcPort: created.clientPort,
      dstIp: bytesToIp(created.target),
      dstPort: created.targetPort,
    };
    this.dialer.dialUdp(id).then(
      (flow) => this.opened(key, created, flow),
      (e: Error) => {
        this.stats.flowsRejected++;
        if (e instanceof DialRejectedError)
          this.log.debug('udp flow rejected', { to: id.dstIp, reason: e.message });
        else this.log.warn('udp flow failed', { to: id.dstIp, error: e.message });
        if (this.flows.get(key) !== created || this.stopped) return;
        created.rejectedAt = Date.now();
        created.queue = [];
        const info = parsePacket(created.first);
        if (info) this.write(buildPortUnreachable(created.first, info));
      },
    );
  }

  private opened(key: string, state: UdpFlowState, flow: UdpFlow): void {
    if (this.stopped || this.flows.get(key) !== state) {
      flow.close();
      return;
    }
    this.stats.flowsOpened++;
    state.flow = flow;
    flow.onDatagram = (d) => {
      state.lastActivity = Date.now();
      this.stats.datagramsIn++;
      this.write(buildUdpPacket(state.target, state.targetPort, state.client, state.clientPort, d));
    };
    flow.onClose = () => {
      if (this.flows.get(key) === state) this.flows.delete(key);
    };
    for (const d of state.queue) {
      this.stats.datagramsOut++;
      flow.send(d);
    }
    state.queue = [];
  }

  private sweep(): void {
    const now = Date.now();
    for (const [key, state] of this.flows) {
      const idle = now - state.lastActivity;
      if (
        idle >= this.idleMs ||
        (state.rejectedAt !== undefined && now - state.rejectedAt >= REJECTED_MEMORY_MS)
      ) {
        this.flows.delete(key);
        state.flow?.close();
      }
    }
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.sweepTimer);
    for (const state of this.flows.values()) state.flow?.close();
    this.flows.clear();
  }
}
