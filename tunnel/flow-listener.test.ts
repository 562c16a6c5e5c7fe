// listenForFlowsAndGrpc on loopback: a flow connection told from gRPC by its first bytes, moved to a socket
// on a duplicate of its descriptor (the agent's direct port), carries its flows byte for byte, the bytes
// that came with the magic included.
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../command/wait.js';
import { createLogger, setLevel } from '../logging/logger.js';
import { duplicate } from '../sys/descriptor.js';
import { listenForFlowsAndGrpc } from './flow-listener.js';
import { FLOW_MAGIC, FramedCall } from './framed-call.js';
import { msg, type TunnelMessage } from './messages.js';
import { readSwitchOf } from './read-switch.js';
import { framesOf } from './test/frames.js';

setLevel('error');

for (const moved of [true, false]) {
  test(`a flow connection ${moved ? 'moved to a duplicate of its descriptor, read through a ReadSwitch' : 'on the accepted socket (no duplicate)'}: large and small messages both ways, byte for byte, the bytes behind the magic included`, async () => {
    const server = new grpc.Server();
    const accepted: net.Socket[] = [];
    const calls: FramedCall[] = [];
    const got: TunnelMessage[] = [];
    // A call failing before the case ends its connection fails the case.
    let ending = false;
    const failOnError = (call: FramedCall) =>
      call.on('error', (e: Error) => {
        if (!ending) assert.unreachable(e.message);
      });
    const listener = await listenForFlowsAndGrpc({
      server,
      host: '127.0.0.1',
      port: 0,
      log: createLogger('test'),
      duplicate: moved ? duplicate : undefined,
      onFlowConnection: (socket, peer) => {
        accepted.push(socket);
        const call = new FramedCall(socket, peer, { reusable: true });
        failOnError(call);
        call.on('data', (m: TunnelMessage) => got.push(m));
        calls.push(call);
      },
    });
    // The magic and a whole first message in one write: the listener reads both before it decides.
    const socket = net.connect({ host: '127.0.0.1', port: listener.port, noDelay: true });
    await new Promise((r) => socket.once('connect', r));
    const first = crypto.randomBytes(100);
    socket.write(Buffer.concat([FLOW_MAGIC, framesOf([msg.data(first)])]));
    try {
      await waitFor('the flow connection', () => calls.length === 1 || undefined, 5_000, 10);
      const [call] = calls as [FramedCall];
      assert.is(readSwitchOf(accepted[0]!) !== undefined, moved, 'read through a ReadSwitch when moved');
      // The opener's side: a call on the same connection, after the message written above.
      const opener = new FramedCall(socket, 'listener', { reusable: true });
      failOnError(opener);
      const sizes = [1 << 20, 7, 300_000, 65_536, 1 << 20];
      const sent = sizes.map((n) => crypto.randomBytes(n));
      for (const b of sent) opener.write(msg.data(b));
      await waitFor(
        `${sent.length + 1} messages (got ${got.length})`,
        () => got.length === sent.length + 1 || undefined,
        10_000,
        10,
      );
      assert.ok(got[0]!.data.equals(first), 'the message that came with the magic');
      for (const [i, b] of sent.entries())
        assert.ok(got[i + 1]!.data.equals(b), `message ${i + 1} byte for byte`);
      const back = crypto.randomBytes(700_000);
      const answered = new Promise<TunnelMessage>((r) => opener.once('data', r));
      call.write(msg.data(back));
      assert.ok((await answered).data.equals(back), 'the other way, byte for byte');
    } finally {
      ending = true;
      socket.destroy();
      listener.close();
      server.forceShutdown();
    }
  });
}

test.run();
