// A tp-manager stand-in on loopback whose Tunnel echoes every message object it receives (as the
// manager's relay sends on what it got), and a client for it: for the tests of rpc/'s framing and windows;
// startTunnelServer for a server with another Tunnel handler (manager/tunnel-router.test.ts, the UDP flows'
// and the root daemon's tunnel dialer tests).
import * as grpc from '@grpc/grpc-js';
import type { TunnelMessage } from '../rpc/gen/manager.js';
import { ManagerClient, ManagerServiceDefinition } from '../rpc/manager-service.js';

export type TunnelCall = grpc.ServerDuplexStream<TunnelMessage, TunnelMessage>;

export interface EchoTunnel {
  client: ManagerClient;
  /** Every Tunnel call the server has taken, in order. */
  calls: TunnelCall[];
  /** Closes the client and shuts the server down. */
  close(): void;
}

export interface TunnelServer {
  client: ManagerClient;
  /** Closes the client and shuts the server down. */
  close(): void;
}

/**
 * A gRPC server on 127.0.0.1 whose Tunnel calls go to `tunnel` (the manager's service definition, with
 * its zero-copy codec), and a client of it.
 */
export async function startTunnelServer(
  tunnel: (call: TunnelCall) => void,
  serverOptions: grpc.ServerOptions,
  channelOptions: grpc.ChannelOptions,
): Promise<TunnelServer> {
  const server = new grpc.Server(serverOptions);
  server.addService(ManagerServiceDefinition, { tunnel });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  const client = new ManagerClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), channelOptions);
  return {
    client,
    close() {
      client.close();
      server.forceShutdown();
    },
  };
}

export async function startEchoTunnel(
  serverOptions: grpc.ServerOptions,
  channelOptions: grpc.ChannelOptions,
): Promise<EchoTunnel> {
  const calls: TunnelCall[] = [];
  const server = await startTunnelServer(
    (call) => {
      calls.push(call);
      call.on('data', (m: TunnelMessage) => call.write(m));
      call.on('end', () => call.end());
    },
    serverOptions,
    channelOptions,
  );
  return { ...server, calls };
}
