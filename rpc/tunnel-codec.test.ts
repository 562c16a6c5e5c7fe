import * as crypto from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TunnelCode, TunnelMessage } from './gen/manager.js';
import { deserializeTunnelMessage, encodedDataMessage, serializeTunnelMessage } from './tunnel-codec.js';

const base = (fields: Partial<TunnelMessage>): TunnelMessage => ({
  code: TunnelCode.TUNNEL_UNSPECIFIED,
  data: Buffer.alloc(0),
  open: undefined,
  error: '',
  ...fields,
});

const samples: TunnelMessage[] = [
  base({ code: TunnelCode.DATA, data: Buffer.from('hello') }),
  base({ code: TunnelCode.DATA, data: crypto.randomBytes(1 << 20) }),
  base({ code: TunnelCode.DATA, data: crypto.randomBytes(200) }),
  base({ data: Buffer.from('code zero') }),
  base({ code: TunnelCode.CLOSE_SEND }),
  base({ code: TunnelCode.RESET, error: 'connection reset: ünïcode' }),
  base({ code: TunnelCode.KEEPALIVE }),
  base({
    code: TunnelCode.OPEN,
    open: {
      version: 2,
      connId: { protocol: 6, srcIp: '10.0.0.1', srcPort: 40000, dstIp: '10.0.0.2', dstPort: 8080 },
      sessionId: 'a-1',
      dialTimeoutMs: 5000,
      idleTimeoutMs: 0,
      mount: true,
      mountReadWrite: true,
      interceptId: 'c-1:echo',
      relayId: '',
    },
  }),
  base({ code: 99 as TunnelCode, data: Buffer.from('unknown code') }),
];

test('the same bytes as the generated encoder', () => {
  for (const m of samples) {
    const generated = Buffer.from(TunnelMessage.encode(m).finish());
    assert.ok(serializeTunnelMessage(m).equals(generated), `code ${m.code}, ${m.data.length} data bytes`);
  }
});

test('decodes what the generated encoder wrote, and round-trips', () => {
  for (const m of samples) {
    const bytes = Buffer.from(TunnelMessage.encode(m).finish());
    const viaFast = deserializeTunnelMessage(bytes);
    assert.equal(viaFast, TunnelMessage.decode(bytes));
    assert.equal(deserializeTunnelMessage(serializeTunnelMessage(m)), TunnelMessage.decode(bytes));
  }
});

test('DATA is decoded without a copy', () => {
  const bytes = serializeTunnelMessage(base({ code: TunnelCode.DATA, data: Buffer.alloc(4096, 7) }));
  const m = deserializeTunnelMessage(bytes);
  assert.is(m.data.buffer, bytes.buffer);
});

test('a decoded DATA message forwarded unchanged reuses its bytes; a changed one is encoded anew', () => {
  const bytes = serializeTunnelMessage(base({ code: TunnelCode.DATA, data: Buffer.alloc(4096, 7) }));
  const m = deserializeTunnelMessage(bytes);
  assert.is(serializeTunnelMessage(m), bytes);
  const changed = { ...m, code: TunnelCode.KEEPALIVE };
  assert.is.not(serializeTunnelMessage(changed), bytes);
  m.data = Buffer.from('other');
  assert.ok(serializeTunnelMessage(m).equals(Buffer.from(TunnelMessage.encode(m).finish())));
});

test('a DATA message built from chunks encodes like the generated codec', () => {
  const chunks = [crypto.randomBytes(100), crypto.randomBytes(70_000), crypto.randomBytes(3)];
  const m = encodedDataMessage(chunks, 70_103);
  assert.ok(m.data.equals(Buffer.concat(chunks)));
  assert.ok(serializeTunnelMessage(m).equals(Buffer.from(TunnelMessage.encode(m).finish())));
});

test('unknown fields are skipped', () => {
  // Field 15 (varint) before DATA: a newer peer's addition.
  const extra = Buffer.concat([
    Buffer.from([15 << 3, 1]),
    serializeTunnelMessage(base({ code: TunnelCode.DATA, data: Buffer.from('x') })),
  ]);
  assert.is(deserializeTunnelMessage(extra).data.toString(), 'x');
});

test.run();
