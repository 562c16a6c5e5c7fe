// The packet half of the TCP "system stack" (it runs in the packet worker). No TCP implementation here:
// the kernel's own does the work.
//
//   client 198.18.0.1:40000 -> 10.96.0.10:80      arrives on the TUN
//   rewritten to  198.18.0.5:1024 -> 198.18.0.1:L   and written back into the TUN: the kernel delivers it
//                                                   to the listener on the VIF's address (tcp-listener.ts),
//                                                   from a fake peer
//   listener 198.18.0.1:L -> 198.18.0.5:1024      leaves through the TUN (the fake peer is on its subnet)
//   rewritten to  10.96.0.10:80 -> 198.18.0.1:40000 and written back: the client sees its server
//
// The NAT table maps each client flow to its fake peer. The client's SYN is held until the far side has
// dialed the destination (events.open -> dialed() or rejected()): a refused or unreachable destination
// becomes a RST to the SYN, so connect() fails with ECONNREFUSED, never an accepted connection that
// resets later.
import { bytesToIp } from '../netaddr/parse.js';
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

/** A new client flow, as the socket side needs it to dial and to recognize the accepted connection. */
export interface OpenedFlow {
  key: string;
  clientIp: string;
  clientPort: number;
  targetIp: string;
  targetPort: number;
  fakeIp: string;
  fakePort: number;
}

export interface TcpNatFamily {
  /** The VIF's own address and the listener's port on it (4- or 16-byte address). */
  listenerAddress: Buffer;
  listenerPort: number;
  /** Addresses of the VIF's subnet that are not local. */
  fakeAddresses: Buffer[];
}

export interface TcpNatStats {
  flowsOpened: number;
  flowsRejected: number;
  resetsSent: number;
  dropped: number;
}

/** One direction of a flow: packets from src:srcPort to dst:dstPort (4- or 16-byte addresses). */
export interface Rewrite {
  src: Uint8Array;
  srcPort: number;
  dst: Uint8Array;
  dstPort: number;
}

/**
 * Something else that rewrites an established flow's packets (kernel-nat.ts: a BPF program on the TUN's
 * egress). The TCP NAT still decides: it adds a flow once its SYN went to the listener and removes it when
 * the flow leaves the table; packets the other side does not rewrite still come here.
 */
export interface FlowOffload {
  /** False when it cannot take the flow (full): the flow's packets keep coming here. */
  add(forward: { from: Rewrite; to: Rewrite }, reverse: { from: Rewrite; to: Rewrite }): boolean;
  remove(forward: Rewrite, reverse: Rewrite): void;
}

interface FlowState {
  /** The client's latest SYN while the destination is dialed; undefined once it went to the listener. */
  syn: Buffer | undefined;
  /** Its packets are rewritten by the FlowOffload. */
  offloaded: boolean;
}

interface Family {
  listenerAddress: Buffer;
  listenerText: string;
  listenerPort: number;
  nat: NatTable<FlowState>;
}

export class TcpNat {
  readonly stats: TcpNatStats = { flowsOpened: 0, flowsRejected: 0, resetsSent: 0, dropped: 0 };
  private readonly families = new Map<4 | 6, Family>();
  /** Flows by key across families, for the socket side's answers. */
  private readonly byKey = new Map<string, { family: Family; entry: NatEntry<FlowState> }>();

  constructor(
    families: { 4?: TcpNatFamily; 6?: TcpNatFamily },
    private readonly write: (packet: Buffer) => boolean,
    private readonly open: (flow: OpenedFlow) => void,
    now: () => number = Date.now,
    private readonly offload?: FlowOffload,
  ) {
    for (const v of [4, 6] as const) {
      const f = families[v];
      if (!f) continue;
      const listenerAddress = f.listenerAddress;
      const listenerPort = f.listenerPort;
      this.families.set(v, {
        listenerAddress,
        listenerText: listenerAddress.toString('latin1'),
        listenerPort,
        nat: new NatTable<FlowState>({
          fakeAddresses: f.fakeAddresses,
          now,
          onRetire: (entry) => {
            if (!entry.value.offloaded) return;
            entry.value.offloaded = false;
            const [forward, reverse] = directions(entry, listenerAddress, listenerPort);
            this.offload?.remove(forward.from, reverse.from);
          },
        }),
      });
    }
  }

  /** Handles one TCP packet read from the TUN. */
  handle(p: Buffer, info: ParsedPacket): void {
    const family = this.families.get(info.version);
    if (!family || info.fragment || info.protocol !== PROTO_TCP) {
      this.stats.dropped++;
      return;
    }
    // From the listener to a fake peer: the reply direction.
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
      if (entry.value.syn) {
        // Still dialing: keep the latest SYN retransmit; the client sends nothing else yet.
        if (isSyn) entry.value.syn = Buffer.from(p);
        return;
      }
      rewriteFlow(p, info, entry.fake, entry.fakePort, family.listenerAddress, family.listenerPort);
      this.write(p);
      return;
    }
    if (isSyn) {
      this.opened(family, p, info, key);
      return;
    }
    // A segment of a flow nobody knows (tp restarted, or it lingered out): tell the client it is gone.
    this.reset(p, info);
  }

  private opened(family: Family, p: Buffer, info: ParsedPacket, key: string): void {
    let entry: NatEntry<FlowState>;
    try {
      entry = family.nat.add(
        key,
        p.subarray(info.srcOffset, info.srcOffset + info.addressLength),
        info.srcPort,
        p.subarray(info.dstOffset, info.dstOffset + info.addressLength),
        info.dstPort,
        { syn: Buffer.from(p), offloaded: false },
      );
    } catch (e) {
      if (!(e instanceof NatExhaustedError)) throw e;
      this.reset(p, info);
      return;
    }
    this.byKey.set(key, { family, entry });
    this.open({
      key,
      clientIp: bytesToIp(entry.client),
      clientPort: entry.clientPort,
      targetIp: bytesToIp(entry.target),
      targetPort: entry.targetPort,
      fakeIp: bytesToIp(entry.fake),
      fakePort: entry.fakePort,
    });
  }

  private find(key: string) {
    const f = this.byKey.get(key);
    if (!f || f.family.nat.get(key) !== f.entry) return undefined;
    return f;
  }

  /** The destination answered: the held SYN goes to the listener. */
  dialed(key: string): void {
    const f = this.find(key);
    const syn = f?.entry.value.syn;
    if (!f || !syn) return;
    f.entry.value.syn = undefined;
    this.stats.flowsOpened++;
    // From here on the flow's other packets may be rewritten elsewhere; its SYN, FIN and RST still come
    // here (kernel-nat.ts), so the flow begins and ends in this table as before.
    if (this.offload) {
      const [forward, reverse] = directions(f.entry, f.family.listenerAddress, f.family.listenerPort);
      f.entry.value.offloaded = this.offload.add(forward, reverse);
    }
    const info = parsePacket(syn)!;
    rewriteFlow(syn, info, f.entry.fake, f.entry.fakePort, f.family.listenerAddress, f.family.listenerPort);
    this.write(syn);
  }

  /** The destination refused (or could not be reached): RST to the client's SYN. */
  rejected(key: string): void {
    const f = this.find(key);
    if (!f) return;
    this.stats.flowsRejected++;
    this.byKey.delete(key);
    // The listener never saw this fake peer: it may be reused at once.
    f.family.nat.remove(f.entry, true);
    const syn = f.entry.value.syn;
    const info = syn && parsePacket(syn);
    if (syn && info) this.reset(syn, info);
  }

  /** The accepted connection closed: the flow lingers for late packets, then goes. */
  closed(key: string): void {
    const f = this.find(key);
    if (f) f.family.nat.close(f.entry);
  }

  /** The client never completed the connection: forget the flow. */
  abandoned(key: string): void {
    const f = this.find(key);
    if (!f) return;
    this.byKey.delete(key);
    f.family.nat.remove(f.entry);
  }

  /** Drops flows that lingered long enough; call every few seconds. */
  sweep(): void {
    for (const family of this.families.values()) {
      for (const entry of family.nat.sweep())
        if (this.byKey.get(entry.key)?.entry === entry) this.byKey.delete(entry.key);
    }
  }

  /** Open flows (lingering ones excluded). */
  get openFlows(): number {
    let n = 0;
    for (const { entry } of this.byKey.values()) if (entry.closedAt === undefined) n++;
    return n;
  }

  private reset(p: Buffer, info: ParsedPacket): void {
    const rst = buildTcpReset(p, info);
    if (!rst) return;
    this.stats.resetsSent++;
    this.write(rst);
  }
}

/** A flow's two rewrites: the client's packets to the listener from the fake peer, the listener's back. */
function directions(
  e: NatEntry<FlowState>,
  listener: Buffer,
  listenerPort: number,
): [{ from: Rewrite; to: Rewrite }, { from: Rewrite; to: Rewrite }] {
  return [
    {
      from: { src: e.client, srcPort: e.clientPort, dst: e.target, dstPort: e.targetPort },
      to: { src: e.fake, srcPort: e.fakePort, dst: listener, dstPort: listenerPort },
    },
    {
      from: { src: listener, srcPort: listenerPort, dst: e.fake, dstPort: e.fakePort },
      to: { src: e.target, srcPort: e.targetPort, dst: e.client, dstPort: e.clientPort },
    },
  ];
}
