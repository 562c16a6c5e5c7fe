// The bytes a FramedCall sends, captured: for tests that write a flow connection's frames themselves (in
// pieces, or together with the bytes before them).
import { Duplex } from 'node:stream';
import { FramedCall } from '../framed-call.js';
import type { TunnelMessage } from '../messages.js';

/** The frames a FramedCall writes for `messages` (no WINDOW: a peer not known to take them). */
export function framesOf(messages: TunnelMessage[]): Buffer {
  const chunks: Buffer[] = [];
  const capture = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk);
      done();
    },
  });
  const call = new FramedCall(capture, 'capture', { peerTakesWindows: false });
  for (const m of messages) call.write(m);
  return Buffer.concat(chunks);
}
