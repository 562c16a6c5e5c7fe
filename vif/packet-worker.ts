// The VIF's packet loop, in a worker thread: it reads the TUN, runs the TCP NAT and answers ICMP echo; UDP
// goes to the main thread, which holds the UDP flows. Keeping packets off the main thread means a busy
// tunnel stream does not delay the ACKs of every TCP flow, and the kernel work each TUN write carries runs
// on a second core. The loop is system calls through koffi (tun-device.ts TunLoop) and holds this thread
// until it stops: the main thread's messages are drained with receiveMessageOnPort when its Waker wakes
// the loop, and the timers below are the loop's ticks, not the event loop's. When the kernel NAT attaches
// (kernel-nat.ts), an established flow's packets other than its FIN and RST no longer come here: the
// loop then sees each flow's SYNs, FINs and RSTs, UDP, ICMP, and whatever the kernel did not rewrite.
import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { ipToBytes } from '../netaddr/parse.js';
import { KernelNat } from './kernel-nat.js';
import { PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, parsePacket } from './packet.js';
import { isEchoRequest, toEchoReply } from './packet-rewrite.js';
import type { PacketStats, PacketWorkerInit, ToMain, ToWorker } from './packet-worker-protocol.js';
import { TcpNat } from './tcp-nat.js';
import { closeFd, TunLoop, TunWriter } from './tun-device.js';

const STATS_INTERVAL_MS = 2_000;
const SWEEP_INTERVAL_MS = 5_000;

const init = workerData as PacketWorkerInit;
const port = parentPort!;
const post = (m: ToMain) => port.postMessage(m);

const writer = new TunWriter(init.fd);
const family = (f: PacketWorkerInit['families'][4]) =>
  f && {
    listenerAddress: ipToBytes(f.listenerAddress),
    listenerPort: f.listenerPort,
    fakeAddresses: f.fakeAddresses.map(ipToBytes),
  };
let kernel: KernelNat | undefined;
let kernelNatOff: string | undefined;
if (!init.kernelNat) kernelNatOff = 'turned off (the root daemon runs with --kernel-nat off)';
else {
  try {
    kernel = KernelNat.attach(init.ifname);
  } catch (e) {
    kernelNatOff = (e as Error).message;
  }
}
const nat = new TcpNat(
  { 4: family(init.families[4]), 6: family(init.families[6]) },
  (p) => writer.write(p),
  (flow) => post({ t: 'open', flow }),
  Date.now,
  kernel,
);
let echoReplies = 0;
let dropped = 0;

function packet(p: Buffer): void {
  const info = parsePacket(p);
  if (!info) {
    dropped++;
    return;
  }
  switch (info.protocol) {
    case PROTO_TCP:
      nat.handle(p, info);
      return;
    case PROTO_UDP:
      post({ t: 'udp', packet: new Uint8Array(p.subarray(0, info.length)) });
      return;
    case PROTO_ICMP:
    case PROTO_ICMPV6:
      // Echo is answered here: the tunnel carries TCP and UDP only, so "the address is routed to the
      // cluster" is the most a ping can tell. Other ICMP (router solicitations, MLD) is dropped.
      if (isEchoRequest(p, info)) {
        toEchoReply(p, info);
        echoReplies++;
        writer.write(p, info.length);
        return;
      }
      dropped++;
      return;
    default:
      dropped++;
  }
}

function stats(): PacketStats {
  return {
    packetsIn: reader.packets,
    packetsOut: writer.packets,
    writeErrors: writer.errors,
    tcpFlowsOpen: nat.openFlows,
    tcpResetsSent: nat.stats.resetsSent,
    echoReplies,
    dropped: dropped + nat.stats.dropped,
    kernelNat: kernel?.refresh(),
    kernelNatOff,
  };
}

let nextStats = Date.now() + STATS_INTERVAL_MS;
let nextSweep = Date.now() + SWEEP_INTERVAL_MS;

function tick(): void {
  const now = Date.now();
  if (now >= nextStats) {
    nextStats = now + STATS_INTERVAL_MS;
    post({ t: 'stats', stats: stats() });
  }
  if (now >= nextSweep) {
    nextSweep = now + SWEEP_INTERVAL_MS;
    nat.sweep();
  }
}

function message(m: ToWorker): void {
  switch (m.t) {
    case 'dialed':
      nat.dialed(m.key);
      return;
    case 'rejected':
      nat.rejected(m.key);
      return;
    case 'closed':
      nat.closed(m.key);
      return;
    case 'abandoned':
      nat.abandoned(m.key);
      return;
    case 'stop':
      writer.stop();
      reader.stop();
      return;
  }
}

const reader = new TunLoop(init.fd, init.wakeFd, {
  packet,
  wake: () => {
    for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port))
      message(m.message as ToWorker);
  },
  tick,
  error: (e) => post({ t: 'error', message: e.message }),
});
post({ t: 'ready', kernelNatOff });
reader.run();
kernel?.close();
closeFd(init.fd);
port.close();
