// The messages between the VIF (main thread) and its packet worker.
import type { KernelNatStats } from './kernel-nat.js';
import type { OpenedFlow } from './tcp-nat.js';

export interface PacketWorkerFamily {
  listenerAddress: string;
  listenerPort: number;
  fakeAddresses: string[];
}

export interface PacketWorkerInit {
  /** The worker's own duplicate of the TUN fd; the worker closes it. */
  fd: number;
  /** The TUN's name: the kernel NAT attaches to its egress. */
  ifname: string;
  /** Try the kernel NAT (kernel-nat.ts); false: the worker rewrites every packet. */
  kernelNat: boolean;
  /** The eventfd the main thread writes after each message (tun-device.ts Waker); the main thread closes it. */
  wakeFd: number;
  families: { 4?: PacketWorkerFamily; 6?: PacketWorkerFamily };
}

export interface PacketStats {
  packetsIn: number;
  packetsOut: number;
  writeErrors: number;
  tcpFlowsOpen: number;
  tcpResetsSent: number;
  echoReplies: number;
  dropped: number;
  /** The kernel NAT's counters while it is attached. */
  kernelNat: KernelNatStats | undefined;
  /** Why the kernel NAT is not attached (the worker rewrites every packet then). */
  kernelNatOff: string | undefined;
}

export type ToMain =
  /** kernelNatOff: why the kernel NAT is not attached; undefined when it is. */
  | { t: 'ready'; kernelNatOff: string | undefined }
  /** A client's SYN for a new flow: dial it. */
  | { t: 'open'; flow: OpenedFlow }
  /** A UDP packet from a client (UDP flows are relayed on the main thread). */
  | { t: 'udp'; packet: Uint8Array }
  | { t: 'stats'; stats: PacketStats }
  | { t: 'error'; message: string };

export type ToWorker = { t: 'dialed' | 'rejected' | 'closed' | 'abandoned'; key: string } | { t: 'stop' };
