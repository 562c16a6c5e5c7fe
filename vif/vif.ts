// The virtual network interface: the TUN device, its address and MTU, and the two threads that serve it.
//   packet worker (packet-worker.ts): reads the TUN, the TCP NAT, ICMP echo;
//   main thread: the TCP listener and dials (tcp-listener.ts), the UDP flows (udp-relay.ts).
// Routes are not set here (routes.ts).
import { Worker } from 'node:worker_threads';
import type { Logger } from '../logging/logger.js';
import { type Cidr, cidrAddress, cidrsOverlap, parseCidr } from '../netaddr/parse.js';
import type { FlowDialer } from './flows.js';
import type { IpCommands } from './ip-command.js';
import { parsePacket } from './packet.js';
import type { PacketStats, PacketWorkerInit, ToMain, ToWorker } from './packet-worker-protocol.js';
import type { ExistingRoute } from './routes.js';
import { TcpListener } from './tcp-listener.js';
import { closeFd, dupFd, openTun, TunWriter, Waker } from './tun-device.js';
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
  run: IpCommands;
  log: Logger;
  udpIdleMs?: number;
  /** Rewrite established flows' packets in the kernel when it can (kernel-nat.ts); default true. */
  kernelNat?: boolean;
}

export interface VifStats extends PacketStats {
  tcpConnections: number;
  tcpDialsRejected: number;
  udpFlowsOpen: number;
}

const WORKER_START_TIMEOUT_MS = 10_000;

export class VirtualInterface {
  private packetStats: PacketStats = {
    packetsIn: 0,
    packetsOut: 0,
    writeErrors: 0,
    tcpFlowsOpen: 0,
    tcpResetsSent: 0,
    echoReplies: 0,
    dropped: 0,
    kernelNat: undefined,
    kernelNatOff: undefined,
  };
  private closed = false;
  /** Set when the packet path broke: the status reports it. */
  failure: string | undefined;

  /** Resolves once the packet worker has exited, whenever that was. */
  private readonly workerExited: Promise<void>;

  private constructor(
    readonly name: string,
    private readonly fd: number,
    readonly address4: string,
    readonly address6: string | undefined,
    readonly mtu: number,
    private readonly writer: TunWriter,
    private readonly worker: Worker,
    private readonly waker: Waker,
    private readonly tcp: TcpListener,
    private readonly udp: UdpRelay,
  ) {
    // Registered now, not at close(): a worker that died before (the status reports it) must not leave
    // close() and `tp quit` waiting for an 'exit' that already happened.
    this.workerExited = new Promise((resolve) => worker.once('exit', () => resolve()));
  }

  /** Creates and configures the interface; on any failure nothing is left behind (the TUN goes with its fds). */
  static async create(o: VifOptions): Promise<VirtualInterface> {
    const tun = openTun(o.name);
    let workerFd: number | undefined;
    let tcp: TcpListener | undefined;
    let worker: Worker | undefined;
    let waker: Waker | undefined;
    try {
      const address4 = cidrAddress(o.link4, 1);
      const address6 = o.link6 ? cidrAddress(o.link6, 1) : undefined;
      await o.run.ip(['link', 'set', 'dev', tun.name, 'mtu', String(o.mtu), 'txqueuelen', '1000']);
      await o.run.ip(['-4', 'addr', 'add', `${address4}/${o.link4.prefix}`, 'dev', tun.name]);
      // nodad: duplicate address detection would keep the address unusable for a second or two.
      if (o.link6 && address6)
        await o.run.ip(['-6', 'addr', 'add', `${address6}/${o.link6.prefix}`, 'dev', tun.name, 'nodad']);
      await o.run.ip(['link', 'set', 'dev', tun.name, 'up']);

      // The listener first: the worker needs its ports. Its NAT control goes to the worker once it exists.
      let toWorker: (m: ToWorker) => void = () => {};
      tcp = await TcpListener.start(
        { 4: address4, 6: address6 },
        o.dialer,
        {
          dialed: (key) => toWorker({ t: 'dialed', key }),
          rejected: (key) => toWorker({ t: 'rejected', key }),
          closed: (key) => toWorker({ t: 'closed', key }),
          abandoned: (key) => toWorker({ t: 'abandoned', key }),
        },
        o.log.child('tcp'),
      );
      workerFd = dupFd(tun.fd);
      const wake = new Waker();
      waker = wake;
      const init: PacketWorkerInit = {
        fd: workerFd,
        ifname: tun.name,
        kernelNat: o.kernelNat ?? true,
        wakeFd: wake.fd,
        families: {
          4: { listenerAddress: address4, listenerPort: tcp.ports[4]!, fakeAddresses: fakePeers(o.link4) },
          6:
            o.link6 && address6
              ? { listenerAddress: address6, listenerPort: tcp.ports[6]!, fakeAddresses: fakePeers(o.link6) }
              : undefined,
        },
      };
      const w = new Worker(new URL('./packet-worker.js', import.meta.url), { workerData: init });
      worker = w;
      // The worker owns its fd from here on (it closes it when it stops, or the thread ends).
      workerFd = undefined;
      // The worker's loop sees a message when the waker wakes it (packet-worker.ts).
      toWorker = (m) => {
        w.postMessage(m);
        wake.wake();
      };
      const writer = new TunWriter(tun.fd);
      const udp = new UdpRelay((p) => writer.write(p), o.dialer, o.log.child('udp'), o.udpIdleMs);
      const vif = new VirtualInterface(
        tun.name,
        tun.fd,
        address4,
        address6,
        o.mtu,
        writer,
        w,
        wake,
        tcp,
        udp,
      );
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error('the VIF packet worker did not start')),
          WORKER_START_TIMEOUT_MS,
        );
        w.on('message', (m: ToMain) => {
          if (m.t === 'ready') {
            clearTimeout(timer);
            vif.packetStats.kernelNatOff = m.kernelNatOff;
            if (m.kernelNatOff)
              o.log.info('kernel NAT off: the packet worker rewrites every TCP packet', {
                vif: tun.name,
                reason: m.kernelNatOff,
              });
            else o.log.info('kernel NAT attached to the egress of the VIF', { vif: tun.name });
            resolve();
          } else vif.fromWorker(m, o.log);
        });
        w.once('error', (e) => {
          clearTimeout(timer);
          reject(e);
        });
      });
      w.on('error', (e) => {
        vif.failure = `the VIF's packet worker failed: ${e.message}`;
        o.log.error(vif.failure);
      });
      w.on('exit', (code) => {
        if (vif.closed) return;
        vif.failure ??= `the VIF's packet worker exited (code ${code}): no packet moves; reconnect`;
        o.log.error(vif.failure);
      });
      return vif;
    } catch (e) {
      tcp?.stop();
      if (worker) await worker.terminate();
      waker?.close();
      if (workerFd !== undefined) closeFd(workerFd);
      closeFd(tun.fd);
      throw e;
    }
  }

  private fromWorker(m: ToMain, log: Logger): void {
    switch (m.t) {
      case 'open':
        this.tcp.open(m.flow);
        return;
      case 'udp': {
        const p = Buffer.from(m.packet.buffer, m.packet.byteOffset, m.packet.byteLength);
        const info = parsePacket(p);
        if (info) this.udp.handle(p, info);
        return;
      }
      case 'stats':
        this.packetStats = m.stats;
        return;
      case 'error':
        this.failure = m.message;
        log.error(m.message, { vif: this.name });
        return;
      case 'ready':
        return;
    }
  }

  stats(): VifStats {
    return {
      ...this.packetStats,
      packetsOut: this.packetStats.packetsOut + this.writer.packets,
      writeErrors: this.packetStats.writeErrors + this.writer.errors,
      tcpConnections: this.tcp.openConnections,
      tcpDialsRejected: this.tcp.dialsRejected,
      udpFlowsOpen: this.udp.openFlows,
    };
  }

  /** Resets every flow and removes the interface (with its addresses and routes). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.tcp.stop();
    this.udp.stop();
    this.writer.stop();
    closeFd(this.fd);
    this.worker.postMessage({ t: 'stop' } satisfies ToWorker);
    this.waker.wake();
    const timer = setTimeout(() => void this.worker.terminate(), 2_000);
    await this.workerExited;
    clearTimeout(timer);
    this.waker.close();
  }
}

/** Every address of the link subnet except the network address, the VIF's own (first) and the last. */
function fakePeers(link: Cidr): string[] {
  const size = 2 ** ((link.family === 4 ? 32 : 128) - link.prefix);
  const out: string[] = [];
  for (let i = 2; i < Math.min(size - 1, 256); i++) out.push(cidrAddress(link, i));
  return out;
}
