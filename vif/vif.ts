// The virtual network interface: the TUN device, its address and MTU, and the packet dispatch to the TCP
// system stack, the UDP relay and the ICMP echo responder. Routes are not set here (routes.ts).

import type { Logger } from '../logging/logger.js';
import { type Cidr, cidrAddress, cidrsOverlap, ipToBytes, parseCidr } from '../netaddr/parse.js';
import type { FlowDialer } from './flows.js';
import type { CommandRunner } from './ip-command.js';
import { PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, parsePacket } from './packet.js';
import { isEchoRequest, toEchoReply } from './packet-rewrite.js';
import type { ExistingRoute } from './routes.js';
import { TcpSystemStack } from './tcp-stack.js';
import { TunDevice } from './tun-device.js';
import { UdpRelay } from './udp-relay.js';

/**
 * The TUN's MTU. Each packet costs the same JS work whatever its size, so a large MTU is most of the
 * throughput: measured 145 MB/s at 1500, 380 at 9000, 600 at 65000.
 */
export const DEFAULT_MTU = 65_000;
export const DEFAULT_VIF_NAME = 'tp0';

/**
 * Where the VIF's own small subnet may go: its first address is the VIF's (the listener and the DNS
 * server bind there), the others are the fake peers of the TCP stack. The first candidate that overlaps
 * nothing in the namespace and no cluster subnet wins.
 */
export const LINK_SUBNET_CANDIDATES_V4 = [
  '198.18.0.0/28',
  '198.19.255.0/28',
  '100.127.255.240/28',
  '10.255.255.0/28',
];
export const LINK_SUBNET_CANDIDATES_V6 = ['fd74:7000::/124', 'fd74:7001::/124'];

export function chooseLinkSubnet(
  candidates: string[],
  existing: ExistingRoute[],
  avoid: Cidr[],
  vifName: string,
): Cidr | undefined {
  for (const text of candidates) {
    const c = parseCidr(text);
    if (existing.some((r) => r.dev !== vifName && r.dst.prefix > 1 && cidrsOverlap(r.dst, c))) continue;
    if (avoid.some((a) => cidrsOverlap(a, c))) continue;
    return c;
  }
  return undefined;
}

export interface VifOptions {
  name: string;
  mtu: number;
  link4: Cidr;
  link6: Cidr | undefined;
  dialer: FlowDialer;
  run: CommandRunner;
  log: Logger;
  udpIdleMs?: number;
}

export interface VifStats {
  packetsIn: number;
  packetsOut: number;
  writeErrors: number;
  tcpFlowsOpen: number;
  tcpFlowsRejected: number;
  udpFlowsOpen: number;
  echoReplies: number;
  dropped: number;
}

export class VirtualInterface {
  private echoReplies = 0;
  private dropped = 0;

  private constructor(
    private readonly device: TunDevice,
    readonly address4: string,
    readonly address6: string | undefined,
    private readonly tcp: TcpSystemStack,
    private readonly udp: UdpRelay,
    readonly mtu: number,
  ) {}

  get name(): string {
    return this.device.name;
  }

  /** Creates and configures the interface; on any failure nothing is left behind (the TUN goes with its fd). */
  static async create(o: VifOptions): Promise<VirtualInterface> {
    const device = TunDevice.open(o.name);
    let tcp: TcpSystemStack | undefined;
    try {
      const address4 = cidrAddress(o.link4, 1);
      const address6 = o.link6 ? cidrAddress(o.link6, 1) : undefined;
      await o.run.ip(['link', 'set', 'dev', device.name, 'mtu', String(o.mtu), 'txqueuelen', '1000']);
      await o.run.ip(['-4', 'addr', 'add', `${address4}/${o.link4.prefix}`, 'dev', device.name]);
      // nodad: duplicate address detection would keep the address unusable for a second or two.
      if (o.link6 && address6)
        await o.run.ip(['-6', 'addr', 'add', `${address6}/${o.link6.prefix}`, 'dev', device.name, 'nodad']);
      await o.run.ip(['link', 'set', 'dev', device.name, 'up']);
      const write = (p: Buffer) => device.write(p);
      tcp = await TcpSystemStack.start(
        {
          4: { address: address4, fakeAddresses: fakePeers(o.link4) },
          6: o.link6 && address6 ? { address: address6, fakeAddresses: fakePeers(o.link6) } : undefined,
        },
        write,
        o.dialer,
        o.log.child('tcp'),
        ipToBytes,
      );
      const udp = new UdpRelay(write, o.dialer, o.log.child('udp'), o.udpIdleMs);
      const vif = new VirtualInterface(device, address4, address6, tcp, udp, o.mtu);
      device.onPacket((p) => vif.onPacket(p));
      device.onError = (e) =>
        o.log.error('reading the TUN device failed', { vif: device.name, error: e.message });
      return vif;
    } catch (e) {
      tcp?.stop();
      device.close();
      throw e;
    }
  }

  private onPacket(p: Buffer): void {
    const info = parsePacket(p);
    if (!info) {
      this.dropped++;
      return;
    }
    switch (info.protocol) {
      case PROTO_TCP:
        this.tcp.handle(p, info);
        return;
      case PROTO_UDP:
        this.udp.handle(p, info);
        return;
      case PROTO_ICMP:
      case PROTO_ICMPV6:
        // Echo is answered here: the tunnel carries TCP and UDP only, so "the address is routed to the
        // cluster" is the most a ping can tell. Other ICMP (router solicitations, MLD) is dropped.
        if (isEchoRequest(p, info)) {
          toEchoReply(p, info);
          this.echoReplies++;
          this.device.write(p, info.length);
          return;
        }
        this.dropped++;
        return;
      default:
        this.dropped++;
    }
  }

  stats(): VifStats {
    return {
      packetsIn: this.device.stats.packetsIn,
      packetsOut: this.device.stats.packetsOut,
      writeErrors: this.device.stats.writeErrors,
      tcpFlowsOpen: this.tcp.openFlows,
      tcpFlowsRejected: this.tcp.stats.flowsRejected,
      udpFlowsOpen: this.udp.openFlows,
      echoReplies: this.echoReplies,
      dropped: this.dropped + this.tcp.stats.dropped + this.udp.stats.dropped,
    };
  }

  /** Resets every flow and removes the interface (with its addresses and routes). */
  close(): void {
    this.tcp.stop();
    this.udp.stop();
    this.device.close();
  }
}

/** Every address of the link subnet except the network address, the VIF's own (first) and the last. */
function fakePeers(link: Cidr): string[] {
  const size = 2 ** ((link.family === 4 ? 32 : 128) - link.prefix);
  const out: string[] = [];
  for (let i = 2; i < Math.min(size - 1, 256); i++) out.push(cidrAddress(link, i));
  return out;
}
