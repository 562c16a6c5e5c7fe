// One port for a gRPC server and for flow connections (tunnel/framed-call.ts), told apart by the first
// bytes: FLOW_MAGIC makes a connection a flow connection, anything else (HTTP/2's preface) goes to the gRPC
// server through grpc-js's connection injector, with the bytes read put back. The agent's direct port and
// the traffic manager's port both listen this way, so neither needs a second port, Service or chart value.
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../logging/logger.js';
import { formatHostPort } from '../netaddr/parse.js';
import { agreesWithFlowMagic, FLOW_MAGIC, FramedCall } from './framed-call.js';
import { movedToReadSwitch } from './read-switch.js';
import { TunnelStream } from './stream.js';

/** How long a new connection may take to send its first bytes. */
const FIRST_BYTES_TIMEOUT_MS = 5_000;

export interface FlowAndGrpcListener {
  port: number;
  /** Takes no new connection; those open go on. */
  stopListening(): void;
  /** Stops listening, ends the gRPC connections and destroys the flow connections. */
  close(): void;
}

export interface FlowAndGrpcOptions {
  server: grpc.Server;
  host: string;
  port: number;
  log: Logger;
  /** A flow connection, its FLOW_MAGIC read (the bytes after it are put back). */
  onFlowConnection(socket: net.Socket, peer: string): void;
  /**
   * A duplicate of a socket's descriptor, undefined when there is none (sys/descriptor.ts duplicate).
   * Given, a flow connection moves to a socket created on the duplicate with a ReadSwitch, so that each
   * flow's call reads large messages straight into their memory (framed-call.ts), as it does on the
   * connections the workstation opens: net takes `onread` only when it creates a socket, and the server
   * created this one.
   */
  duplicate?(socket: net.Socket): number | undefined;
}

export async function listenForFlowsAndGrpc(o: FlowAndGrpcOptions): Promise<FlowAndGrpcListener> {
  const injector = o.server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  const flowSockets = new Set<net.Socket>();
  const listener = net.createServer({ noDelay: true }, (socket) =>
    sniff(socket, {
      grpc: () => injector.injectConnection(socket),
      flow: (rest) => {
        const peer = `${socket.remoteAddress}:${socket.remotePort}`;
        const why = (reason: string) =>
          o.log.debug('a flow connection is read through its stream', { reason });
        const moved = o.duplicate && movedToReadSwitch(socket, o.duplicate, { allowHalfOpen: false, why });
        const flowSocket = moved || socket;
        if (rest.length > 0) flowSocket.unshift(rest);
        flowSockets.add(flowSocket);
        flowSocket.once('close', () => flowSockets.delete(flowSocket));
        if (o.log.enabled('debug')) o.log.debug('a flow connection', { peer });
        o.onFlowConnection(flowSocket, peer);
      },
    }),
  );
  const address = formatHostPort(o.host, o.port);
  await new Promise<void>((resolve, reject) => {
    listener.once('error', (e: NodeJS.ErrnoException) =>
      reject(new Error(`cannot listen on ${address}: ${e.code === 'EADDRINUSE' ? 'in use' : e.message}`)),
    );
    listener.listen(o.port, o.host, () => resolve());
  });
  return {
    port: (listener.address() as net.AddressInfo).port,
    stopListening() {
      listener.close();
    },
    close() {
      listener.close();
      injector.destroy();
      for (const s of flowSockets) s.destroy();
    },
  };
}

/** Tells a new connection's kind by its first bytes, then hands it on paused: gRPC's with the bytes put back, a flow's with those after the magic. */
function sniff(socket: net.Socket, to: { grpc(): void; flow(rest: Buffer): void }): void {
  let first = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), FIRST_BYTES_TIMEOUT_MS);
  const decide = (kind: 'flow' | 'grpc') => {
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('error', onError);
    socket.pause();
    if (kind === 'grpc') {
      socket.unshift(first);
      to.grpc();
      return;
    }
    to.flow(first.subarray(FLOW_MAGIC.length));
  };
  const onData = (chunk: Buffer) => {
    first = Buffer.concat([first, chunk]);
    if (!agreesWithFlowMagic(first)) decide('grpc');
    else if (first.length >= FLOW_MAGIC.length) decide('flow');
  };
  const onError = () => {
    clearTimeout(timer);
    socket.destroy();
  };
  socket.on('data', onData);
  socket.once('error', onError);
}

/**
 * Serves one flow after another on a flow connection: `onFlow` gets each flow's stream (its OPEN not read
 * yet); once a flow ended cleanly on both sides (`done` is told), the next one starts on the same connection.
 */
export function serveFlowConnection(
  socket: net.Socket,
  peer: string,
  onFlow: (stream: TunnelStream) => void,
  done?: (stream: TunnelStream) => void,
): void {
  const call = new FramedCall(socket, peer, { reusable: true });
  const stream = new TunnelStream(call);
  call.once('reusable', () => {
    done?.(stream);
    serveFlowConnection(socket, peer, onFlow, done);
  });
  onFlow(stream);
}
