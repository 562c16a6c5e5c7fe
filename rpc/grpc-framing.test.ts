// Framed sends over real gRPC on loopback: DATA messages built with their frame (the client's sends) and
// received messages sent on unchanged (the server echoes each message object it got, as the manager's relay
// does) arrive byte for byte, and grpc-js sent those frames as they were.
import * as crypto from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startEchoTunnel } from '../testbed/echo-tunnel.js';
import { TunnelCode, type TunnelMessage } from './gen/manager.js';
import { adoptFrame, framedBuffer, framedSends, frameOf } from './grpc-framing.js';
import { managerChannelOptions, managerServerOptions } from './grpc-options.js';
import { encodedDataMessage } from './tunnel-codec.js';

test('grpc-js is patched on both sides (fails when a grpc-js upgrade moved its internals)', () => {
  assert.ok(framedSends.client, 'the client identity handler (compression-filter.js) was not found');
  assert.ok(framedSends.server, 'BaseServerInterceptingCall.serializeMessage was not found');
});

test('framedBuffer: the header in front, in the same memory', () => {
  const m = framedBuffer(10);
  const frame = frameOf(m)!;
  assert.is(frame.buffer, m.buffer);
  assert.is(frame.length, 15);
  assert.is(frame[0], 0);
  assert.is(frame.readUInt32BE(1), 10);
  assert.is(frame.byteOffset + 5, m.byteOffset);
});

test('adoptFrame: only a view preceded by its own header, and only large messages', () => {
  const frame = Buffer.alloc(5 + 8192, 1);
  frame[0] = 0;
  frame.writeUInt32BE(8192, 1);
  const m = frame.subarray(5);
  assert.ok(adoptFrame(m));
  assert.ok(frameOf(m)!.equals(frame));
  const wrongLength = Buffer.alloc(5 + 8192, 1);
  wrongLength.writeUInt32BE(8191, 1);
  wrongLength[0] = 0;
  assert.not.ok(adoptFrame(wrongLength.subarray(5)));
  assert.not.ok(adoptFrame(Buffer.alloc(8192)), 'no room in front');
  const small = Buffer.alloc(5 + 100);
  small.writeUInt32BE(100, 1);
  assert.not.ok(adoptFrame(small.subarray(5)), 'small messages may share pooled memory');
});

test('framed and plain messages arrive byte for byte both ways, and the frames were sent as built', async () => {
  // The server echoes every received message object unchanged (a relay's send of what it received).
  const { client, close } = await startEchoTunnel(managerServerOptions(), managerChannelOptions());
  try {
    const payloads = [1, 100, 4090, 4096, 70_000, 1 << 20].map((n) => crypto.randomBytes(n));
    const sent: TunnelMessage[] = [];
    for (const p of payloads) {
      // Built with its frame (a flow's socket reads), and a plain one (grpc-js frames it itself).
      sent.push(encodedDataMessage([p.subarray(0, 1), p.subarray(1)], p.length));
      sent.push({ code: TunnelCode.DATA, data: p, open: undefined, error: '' });
    }
    sent.push({ code: TunnelCode.RESET, data: Buffer.alloc(0), open: undefined, error: 'why' });
    const before = framedSends.sent;
    const call = client.tunnel();
    const received: TunnelMessage[] = [];
    const ended = new Promise<void>((resolve, reject) => {
      call.on('data', (m: TunnelMessage) => received.push(m));
      call.on('end', resolve);
      call.on('error', reject);
    });
    for (const m of sent) call.write(m);
    call.end();
    await ended;
    assert.is(received.length, sent.length);
    for (let i = 0; i < sent.length; i++) {
      assert.is(received[i]!.code, sent[i]!.code);
      assert.is(received[i]!.error, sent[i]!.error);
      assert.ok(received[i]!.data.equals(sent[i]!.data), `message ${i}: ${sent[i]!.data.length} bytes`);
    }
    // Client: the 6 framed ones. Server: the echoes of the 3 framed and 3 plain messages of >= 4 KiB.
    assert.is(framedSends.sent - before, 6 + 6);
  } finally {
    close();
  }
});

test.run();
