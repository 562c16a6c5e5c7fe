// A tp-manager stand-in on loopback whose Tunnel echoes every message object it receives (as the
// manager's relay sends on what it got), and a client for it: for the tests of rpc/'s framing and windows.
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

export async function startEchoTunnel(
  serverOptions: grpc.ServerOptions,
  channelOptions: grpc.ChannelOptions,
): Promise<EchoTunnel> {
  const server = new grpc.Server(serverOptions);
  const calls: TunnelCall[] = [];
  server.addService(ManagerServiceDefinition, {
    tunnel: (call: TunnelCall) => {
      calls.push(call);
      call.on('data', (m: TunnelMessage) => call.write(m));
      call.on('end', () => call.end());
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  const client = new ManagerClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), channelOptions);
  return {
    client,
    calls,
    close() {
      client.close();
      server.forceShutdown();
    },
  };
}
