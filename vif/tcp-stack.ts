// The TCP "system stack": no TCP implementation here, the kernel's own does the work.
//
//   client 198.18.0.1:40000 -> 10.96.0.10:80     arrives on the TUN
//   rewritten to  198.18.0.5:1024 -> 198.18.0.1:L  and written back into the TUN: the kernel delivers it to
//                                                  our listener on the VIF's address, from a fake peer
//   listener 198.18.0.1:L -> 198.18.0.5:1024     leaves through the TUN (the fake peer is on its subnet)
//   rewritten to  10.96.0.10:80 -> 198.18.0.1:40000 and written back: the client sees its server
//
// The NAT table maps each client flow to its fake peer, so the listener learns the original destination.
// The client's SYN is held until the far side has dialed the destination: a refused or unreachable
// destination becomes a RST to the SYN (connect() fails with ECONNREFUSED), never an accepted connection
// that resets later.
import * as net from 'node:net';
import type { Logger } from '../logging/logger.js';
import { bytesToIp } from '../netaddr/parse.js';
import { DialRejectedError, type FlowDialer, type TcpDial } from './flows.js';
import { type NatEntry, NatExhaustedError, NatTable } from './nat-table.js';
import {
  flowKey,
  type ParsedPacket,
  PROTO_TCP,
  parsePacket,
  TCP_ACK,
  TCP_RST,
  TCP_SYN,
  tcpFlags,
} from './packet.js';
import { buildTcpReset } from './packet-build.js';
import { rewriteFlow } from './packet-rewrite.js';

/** How long a dialed flow waits for the kernel to hand its connection to the listener. */
const ACCEPT_TIMEOUT_MS = 10_000;
const SWEEP_INTERVAL_MS = 5_000;

type Phase =
  /** The far side is dialing; the client's SYN is held. */
  | 'dialing'
  /** Dialed; the SYN went to the listener, the accept is pending. */
  | 'connecting'
  /** Accepted and attached. */
  | 'open';

interface TcpFlowState {
  phase: Phase;
  /** The client's latest SYN, while dialing. */
  syn: Buffer | undefined;
  dial: TcpDial | undefined;
  acceptTimer: NodeJS.Timeout | undefined;
  socket: net.Socket | undefined;
}

/** The stack of one address family: its listener, its NAT table. */
interface FamilyStack {
  listenerAddress: Buffer;
  /** listenerAddress as latin1 text, compared against packets without allocating. */
  listenerText: string;
  listenerPort: number;
  server: net.Server;
  nat: NatTable<TcpFlowState>;
}

export interface TcpStackFamily {
  /** The VIF's own address: the listener binds here. */
  address: string;
  /** Addresses of the VIF's subnet that are not local: the fake peers. */
  fakeAddresses: string[];
}

export interface TcpStackStats {
  flowsOpened: number;
  flowsRejected: number;
  resetsSent: number;
  dropped: number;
}

export class TcpSystemStack {
  readonly stats: TcpStackStats = { flowsOpened: 0, flowsRejected: 0, resetsSent: 0, dropped: 0 };
  private readonly families = new Map<4 | 6, FamilyStack>();
  private sweepTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  private constructor(
    private readonly write: (packet: Buffer) => boolean,
    private readonly dialer: FlowDialer,
    private readonly log: Logger,
  ) {}

  static async start(
    families: { 4?: TcpStackFamily; 6?: TcpStackFamily },
    write: (packet: Buffer) => boolean,
    dialer: FlowDialer,
    log: Logger,
    toBytes: (ip: string) => Buffer,
  ): Promise<TcpSystemStack> {
    const stack = new TcpSystemStack(write, dialer, log);
    try {
      for (const family of [4, 6] as const) {
        const f = families[family];
        if (f) stack.families.set(family, await stack.listen(f, toBytes));
      }
    } catch (e) {
      stack.stop();
      throw e;
    }
    stack.sweepTimer = setInterval(() => stack.sweep(), SWEEP_INTERVAL_MS);
    stack.sweepTimer.unref();
    return stack;
  }

  private async listen(f: TcpStackFamily, toBytes: (ip: string) => Buffer): Promise<FamilyStack> {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true });
    server.maxConnections = 65_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: f.address, port: 0, backlog: 4096, ipv6Only: f.address.includes(':') }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = toBytes(f.address);
    const family: FamilyStack = {
      listenerAddress: address,
      listenerText: address.toString('latin1'),
      listenerPort: (server.address() as net.AddressInfo).port,
      server,
      nat: new NatTable<TcpFlowState>({ fakeAddresses: f.fakeAddresses.map(toBytes) }),
    };
    server.on('connection', (socket) => this.onAccepted(family, socket, toBytes));
    server.on('error', (e) => this.log.warn('the VIF listener failed', { error: e.message }));
    return family;
  }

  /** Handles one TCP packet read from the TUN. */
  handle(p: Buffer, info: ParsedPacket): void {
    const family = this.families.get(info.version);
    if (!family || info.fragment || info.protocol !== PROTO_TCP) {
      this.stats.dropped++;
      return;
    }
    // From our listener to a fake peer: the reply direction.
    if (
      info.srcPort === family.listenerPort &&
      p.toString('latin1', info.srcOffset, info.srcOffset + info.addressLength) === family.listenerText
    ) {
      const entry = family.nat.getByFakeText(
        p.toString('latin1', info.dstOffset, info.dstOffset + info.addressLength),
        info.dstPort,
      );
      if (!entry) {
        this.stats.dropped++;
        return;
      }
      rewriteFlow(p, info, entry.target, entry.targetPort, entry.client, entry.clientPort);
      this.write(p);
      return;
    }
    const flags = tcpFlags(p, info);
    const isSyn = (flags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN;
    const key = flowKey(p, info);
    const entry = family.nat.get(key);
    if (entry && !(isSyn && entry.closedAt !== undefined)) {
      if (entry.value.phase === 'dialing') {
        // A retransmitted SYN while the far side dials: keep the latest; everything else waits too.
        if (isSyn) entry.value.syn = Buffer.from(p);
        return;
      }
      rewriteFlow(p, info, entry.fake, entry.fakePort, family.listenerAddress, family.listenerPort);
      this.write(p);
      return;
    }
    if (isSyn) {
      this.open(family, p, info, key);
      return;
    }
    // A segment of a flow we do not know (tp restarted, or it lingered out): tell the client it is gone.
    this.reset(p, info);
  }

  private open(family: FamilyStack, p: Buffer, info: ParsedPacket, key: string): void {
    const client = p.subarray(info.srcOffset, info.srcOffset + info.addressLength);
    const target = p.subarray(info.dstOffset, info.dstOffset + info.addressLength);
    let entry: NatEntry<TcpFlowState>;
    try {
      entry = family.nat.add(key, client, info.srcPort, target, info.dstPort, {
        phase: 'dialing',
        syn: Buffer.from(p),
        dial: undefined,
        acceptTimer: undefined,
        socket: undefined,
      });
    } catch (e) {
      if (!(e instanceof NatExhaustedError)) throw e;
      this.log.warn('refusing a connection', { reason: e.message });
      this.reset(p, info);
      return;
    }
    const id = {
      protocol: PROTO_TCP,
      srcIp: bytesToIp(entry.client),
      srcPort: entry.clientPort,
      dstIp: bytesToIp(entry.target),
      dstPort: entry.targetPort,
    };
    this.dialer.dialTcp(id).then(
      (dial) => this.dialed(family, entry, dial),
      (e: Error) => {
        const state = entry.value;
        this.stats.flowsRejected++;
        if (!(e instanceof DialRejectedError))
          this.log.warn('dial failed', { flow: describe(id), error: e.message });
        else this.log.debug('dial rejected', { flow: describe(id), reason: e.message });
        family.nat.remove(entry, true);
        if (state.syn && !this.stopped) {
          const syn = state.syn;
          state.syn = undefined;
          const sinfo = parsePacket(syn);
          if (sinfo) this.reset(syn, sinfo);
        }
      },
    );
  }

  private dialed(family: FamilyStack, entry: NatEntry<TcpFlowState>, dial: TcpDial): void {
    const state = entry.value;
    if (this.stopped || family.nat.get(entry.key) !== entry || !state.syn) {
      dial.abandon('the client went away while the destination was dialed');
      return;
    }
    this.stats.flowsOpened++;
    state.phase = 'connecting';
    state.dial = dial;
    const syn = state.syn;
    state.syn = undefined;
    state.acceptTimer = setTimeout(() => {
      // The client gave up before the kernel completed the handshake (it answered our SYN-ACK with RST).
      dial.abandon('the client did not complete the connection');
      family.nat.remove(entry);
    }, ACCEPT_TIMEOUT_MS);
    const info = parsePacket(syn)!;
    rewriteFlow(syn, info, entry.fake, entry.fakePort, family.listenerAddress, family.listenerPort);
    this.write(syn);
  }

  private onAccepted(family: FamilyStack, socket: net.Socket, toBytes: (ip: string) => Buffer): void {
    const entry =
      socket.remoteAddress && socket.remotePort
        ? family.nat.getByFake(toBytes(socket.remoteAddress), socket.remotePort)
        : undefined;
    const state = entry?.value;
    if (!entry || !state || state.phase !== 'connecting' || !state.dial) {
      // A local process connected to the listener directly, or a flow that timed out: not ours.
      socket.resetAndDestroy();
      return;
    }
    clearTimeout(state.acceptTimer);
    state.phase = 'open';
    state.socket = socket;
    socket.on('close', () => {
      state.socket = undefined;
      family.nat.close(entry);
    });
    state.dial.attach(socket);
  }

  private reset(p: Buffer, info: ParsedPacket): void {
    const rst = buildTcpReset(p, info);
    if (!rst) return;
    this.stats.resetsSent++;
    this.write(rst);
  }

  private sweep(): void {
    for (const family of this.families.values()) family.nat.sweep();
  }

  /** Open flows (lingering ones excluded), for the status. */
  get openFlows(): number {
    let n = 0;
    for (const family of this.families.values())
      for (const e of family.nat.entries()) if (e.closedAt === undefined) n++;
    return n;
  }

  /** Closes the listeners and resets every flow. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.sweepTimer);
    for (const family of this.families.values()) {
      family.server.close();
      for (const entry of [...family.nat.entries()]) {
        const s = entry.value;
        clearTimeout(s.acceptTimer);
        if (s.socket) s.socket.resetAndDestroy();
        else if (s.phase === 'connecting') s.dial?.abandon('tp is disconnecting');
      }
    }
  }
}

function describe(id: { srcIp: string; srcPort: number; dstIp: string; dstPort: number }): string {
  return `tcp ${id.srcIp}:${id.srcPort} -> ${id.dstIp}:${id.dstPort}`;
}
