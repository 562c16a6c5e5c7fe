import * as grpc from '@grpc/grpc-js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { TunnelMessage } from './gen/manager.js';
import { AGENT_WINDOWS, managerChannelOptions, WORKSTATION_WINDOWS } from './grpc-options.js';
import { ManagerClient, ManagerServiceDefinition } from './manager-service.js';
import { sessionOf, widenReceiveWindow } from './server-window.js';

test('the manager can widen the HTTP/2 receive window of a server call (grpc-js internals still in place)', async () => {
  const server = new grpc.Server();
  const seen = new Promise<{ found: boolean; widened: boolean; window: number | undefined }>((resolve) => {
    server.addService(ManagerServiceDefinition, {
      tunnel: (call: grpc.ServerDuplexStream<TunnelMessage, TunnelMessage>) => {
        const c = call as grpc.ServerDuplexStream<unknown, unknown>;
        const found = sessionOf(c) !== undefined;
        // Widened for every tunnel call, then further for a workstation's (never narrowed again).
        const widened =
          widenReceiveWindow(c, AGENT_WINDOWS) &&
          widenReceiveWindow(c, WORKSTATION_WINDOWS) &&
          widenReceiveWindow(c, AGENT_WINDOWS);
        resolve({ found, widened, window: sessionOf(c)?.state.localWindowSize });
        call.end();
      },
    });
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  const client = new ManagerClient(
    `127.0.0.1:${port}`,
    grpc.credentials.createInsecure(),
    managerChannelOptions(),
  );
  try {
    const call = client.tunnel();
    call.on('data', () => {});
    call.on('error', () => {});
    const r = await seen;
    assert.ok(r.found, 'grpc-js no longer exposes call.call.stream.session: update rpc/server-window.ts');
    assert.ok(r.widened);
    assert.is(r.window, WORKSTATION_WINDOWS.connection, 'the connection window');
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test.run();
