// What the VIF needs from whatever carries its flows into the cluster (the root daemon implements it with
// the manager's Tunnel RPC). Kept as an interface so the VIF does not know about gRPC.
import type * as net from 'node:net';

/** The same fields as rpc ConnectionID: protocol 6 (TCP) or 17 (UDP), the client and the destination. */
export interface FlowId {
  protocol: number;
  srcIp: string;
  srcPort: number;
  dstIp: string;
  dstPort: number;
}

/** The far side could not reach the destination (refused, unreachable, timed out). */
export class DialRejectedError extends Error {
  override name = 'DialRejectedError';
}

/** A TCP flow whose destination has answered: bytes move once the local connection is attached. */
export interface TcpDial {
  /** Starts moving bytes between the accepted local connection and the far side. */
  attach(socket: net.Socket): void;
  /** The local connection never came (the client gave up): closes the far side. */
  abandon(reason: string): void;
}

/** A UDP flow: each send is one datagram to the destination; each received datagram comes back. */
export interface UdpFlow {
  send(datagram: Buffer): void;
  /** Datagrams from the destination. */
  onDatagram: ((datagram: Buffer) => void) | undefined;
  /** The far side ended the flow. */
  onClose: ((reason: string) => void) | undefined;
  close(): void;
}

export interface FlowDialer {
  /** Resolves when the destination accepted the connection; rejects with DialRejectedError when not. */
  dialTcp(id: FlowId): Promise<TcpDial>;
  dialUdp(id: FlowId): Promise<UdpFlow>;
  /**
   * The socket to serve a connection the listener accepted for a dialed flow on, before anything reads it
   * (the listener accepts paused): `socket` itself, or a socket the dialer created on a duplicate of its
   * descriptor and closed `socket` for (to read it its own way: the root daemon reads it straight into the
   * flow's messages). Without it, `socket`.
   */
  adopt?(socket: net.Socket): net.Socket;
}
