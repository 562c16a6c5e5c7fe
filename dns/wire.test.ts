import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  addressRecord,
  buildQuery,
  buildResponse,
  DnsFormatError,
  decodeMessage,
  encodeMessage,
  encodeName,
  flags,
  RCODE,
  recordAddress,
  recordName,
  TYPE,
  truncated,
  udpPayloadLimit,
} from './wire.js';

test('a query round-trips', () => {
  const q = decodeMessage(buildQuery(0x1234, 'echo.default.svc.cluster.local.', TYPE.AAAA));
  assert.is(q.id, 0x1234);
  assert.ok(flags.recursionDesired(q.flags));
  assert.not.ok(flags.isResponse(q.flags));
  assert.equal(q.questions, [{ name: 'echo.default.svc.cluster.local.', type: TYPE.AAAA, class: 1 }]);
});

test('a response keeps id, question and RD, and carries A/AAAA records', () => {
  const q = decodeMessage(buildQuery(7, 'echo.', TYPE.A));
  const r = decodeMessage(
    encodeMessage(
      buildResponse(
        q,
        RCODE.NOERROR,
        [addressRecord('echo.', '10.96.0.10', 5), addressRecord('echo.', 'fd00::a', 5)],
        {
          authoritative: true,
        },
      ),
    ),
  );
  assert.ok(flags.isResponse(r.flags));
  assert.ok(flags.recursionDesired(r.flags));
  assert.is(flags.rcode(r.flags), RCODE.NOERROR);
  assert.equal(r.answers.map(recordAddress), ['10.96.0.10', 'fd00::a']);
  assert.equal(
    r.answers.map((a) => [a.type, a.ttl]),
    [
      [TYPE.A, 5],
      [TYPE.AAAA, 5],
    ],
  );
});

test('compressed names are expanded, also inside CNAME and SRV data', () => {
  // A hand-made answer: echo.default.svc.cluster.local CNAME -> pointer; an SRV with a pointer target.
  const header = Buffer.from([0, 1, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0]);
  const qname = encodeName('echo.default.svc.cluster.local.'); // at offset 12
  const question = Buffer.concat([qname, Buffer.from([0, 5, 0, 1])]);
  const ptrToQname = Buffer.from([0xc0, 12]);
  // CNAME rdata: "web" + pointer to "default.svc.cluster.local" (offset 12 + 5)
  const cnameData = Buffer.concat([Buffer.from([3, 0x77, 0x65, 0x62]), Buffer.from([0xc0, 17])]);
  const cname = Buffer.concat([
    ptrToQname,
    Buffer.from([0, 5, 0, 1, 0, 0, 0, 30, 0, cnameData.length]),
    cnameData,
  ]);
  const srvData = Buffer.concat([Buffer.from([0, 1, 0, 2, 0x1f, 0x90]), ptrToQname]);
  const srv = Buffer.concat([
    ptrToQname,
    Buffer.from([0, 33, 0, 1, 0, 0, 0, 30, 0, srvData.length]),
    srvData,
  ]);
  const m = decodeMessage(Buffer.concat([header, question, cname, srv]));
  assert.is(m.answers[0]!.name, 'echo.default.svc.cluster.local.');
  assert.is(recordName(m.answers[0]!), 'web.default.svc.cluster.local.');
  assert.is(m.answers[1]!.data.readUInt16BE(4), 8080);
  assert.is(
    recordName({ ...m.answers[1]!, data: m.answers[1]!.data.subarray(6) }),
    'echo.default.svc.cluster.local.',
  );
  // Re-encoding (no compression) and decoding again gives the same message.
  assert.equal(decodeMessage(encodeMessage(m)), m);
});

test('malformed messages are rejected, never looped on', () => {
  assert.throws(
    () => decodeMessage(Buffer.alloc(5)),
    (e: unknown) => e instanceof DnsFormatError,
  );
  const loop = Buffer.concat([
    Buffer.from([0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
    Buffer.from([0xc0, 12, 0, 1, 0, 1]),
  ]);
  assert.throws(() => decodeMessage(loop), /compression loop/);
  const short = buildQuery(1, 'a.b.', TYPE.A).subarray(0, 16);
  assert.throws(() => decodeMessage(short), /past the end|truncated/);
  assert.throws(() => encodeName(`${'a'.repeat(64)}.com.`), /longer than 63/);
  assert.throws(() => encodeName('a..b.'), /empty label/);
});

test('odd label bytes are escaped and come back', () => {
  const name = 'we\\.ird\\032name.example.';
  const q = decodeMessage(buildQuery(1, name, TYPE.A));
  assert.is(q.questions[0]!.name, name);
  assert.equal([...encodeName(name).subarray(0, 8)], [11, 0x77, 0x65, 0x2e, 0x69, 0x72, 0x64, 0x20]);
});

test('UDP size limits and truncation', () => {
  const q = decodeMessage(buildQuery(1, 'x.', TYPE.A));
  assert.is(udpPayloadLimit(q), 512);
  const withOpt = {
    ...q,
    additionals: [{ name: '.', type: TYPE.OPT, class: 1232, ttl: 0, data: Buffer.alloc(0) }],
  };
  assert.is(udpPayloadLimit(decodeMessage(encodeMessage(withOpt))), 1232);
  const t = truncated(buildResponse(q, 0, [addressRecord('x.', '10.0.0.1', 1)]));
  assert.ok(flags.truncated(t.flags));
  assert.equal(t.answers, []);
});

test.run();
