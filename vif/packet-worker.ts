// The VIF's packet loop, in a worker thread: it reads the TUN (epoll on its own event loop), runs the TCP
// NAT and answers ICMP echo; UDP goes to the main thread, which holds the UDP flows. Keeping packets off
// the main thread means a busy tunnel stream (decoding 1 MiB messages) does not delay the ACKs of every
// TCP flow, and the kernel work each TUN write carries runs on a second core.
import { parentPort, workerData } from 'node:worker_threads';
import { ipToBytes } from '../netaddr/parse.js';
import { PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, parsePacket } from './packet.js';
import { isEchoRequest, toEchoReply } from './packet-rewrite.js';
import type { PacketStats, PacketWorkerInit, ToMain, ToWorker } from './packet-worker-protocol.js';
import { TcpNat } from './tcp-nat.js';
import { TunReader, TunWriter } from './tun-device.js';

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
const nat = new TcpNat(
  { 4: family(init.families[4]), 6: family(init.families[6]) },
  (p) => writer.write(p),
  (flow) => post({ t: 'open', flow }),
);
let echoReplies = 0;
let dropped = 0;

const reader = new TunReader(
  init.fd,
  (p) => {
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
  },
  (e) => post({ t: 'error', message: `reading the TUN device failed: ${e.message}` }),
);

function stats(): PacketStats {
  return {
    packetsIn: reader.packets,
    packetsOut: writer.packets,
    writeErrors: writer.errors,
    tcpFlowsOpen: nat.openFlows,
    tcpResetsSent: nat.stats.resetsSent,
    echoReplies,
    dropped: dropped + nat.stats.dropped,
  };
}

const statsTimer = setInterval(() => post({ t: 'stats', stats: stats() }), STATS_INTERVAL_MS);
const sweepTimer = setInterval(() => nat.sweep(), SWEEP_INTERVAL_MS);

port.on('message', (m: ToWorker) => {
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
      clearInterval(statsTimer);
      clearInterval(sweepTimer);
      writer.stop();
      reader.close(); // closes the worker's fd
      port.close();
      return;
  }
});

post({ t: 'ready' });
