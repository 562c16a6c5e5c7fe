import type * as grpc from '@grpc/grpc-js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startEchoTunnel } from '../testbed/echo-tunnel.js';
import { sessionOfCall, widenConnectionWindow } from './client-window.js';
import { WORKSTATION_WINDOWS, workstationChannelOptions } from './grpc-options.js';
import { sessionOf } from './server-window.js';

test('a client call widens its connection, not its streams, past the channel option (grpc-js internals still in place)', async () => {
  const { client, calls, close } = await startEchoTunnel({}, workstationChannelOptions());
  try {
    await new Promise<void>((resolve, reject) =>
      client.waitForReady(Date.now() + 5_000, (e) => (e ? reject(e) : resolve())),
    );
    const call = client.tunnel();
    call.on('error', () => {}); // cancelled when the client closes
    const widened = widenConnectionWindow(
      call as grpc.ClientDuplexStream<unknown, unknown>,
      WORKSTATION_WINDOWS.connection,
    );
    const session = sessionOfCall(call as grpc.ClientDuplexStream<unknown, unknown>);
    assert.ok(session, 'grpc-js no longer keeps the session where rpc/client-window.ts looks: update it');
    assert.ok(widened);
    assert.is(session!.state.localWindowSize, WORKSTATION_WINDOWS.connection, 'the connection window');
    // The server sees the channel's stream window unchanged.
    const echoed = new Promise<void>((resolve) => call.once('data', () => resolve()));
    call.write({ code: 0, data: Buffer.from('x'), open: undefined, error: '' });
    await echoed;
    const serverSession = sessionOf(calls[0] as grpc.ServerDuplexStream<unknown, unknown>);
    assert.is(
      serverSession?.remoteSettings.initialWindowSize,
      WORKSTATION_WINDOWS.stream,
      'the stream window',
    );
    call.end();
  } finally {
    close();
  }
});

test.run();
