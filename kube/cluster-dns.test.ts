// Cluster DNS for workstations, against a real UDP DNS server on loopback playing the cluster's
// resolver: addresses with their TTL, NXDOMAIN, and other types relayed in wire format.
import * as dgram from 'node:dgram';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ClusterResolver, encodeQuery } from './cluster-dns.js';

/** Reads the question name and type of a query. */
function question(msg: Buffer): { name: string; qtype: number; end: number } {
  const labels: string[] = [];
  let i = 12;
  while (msg[i]! !== 0) {
    const len = msg[i]!;
    labels.push(msg.subarray(i + 1, i + 1 + len).toString());
    i += len + 1;
  }
  return { name: labels.join('.'), qtype: msg.readUInt16BE(i + 1), end: i + 5 };
}

/** An answer for the lab's echo Service (A, TTL 30) and a TXT record; NXDOMAIN for anything else. */
function answer(query: Buffer): Buffer {
  const q = question(query);
  const header = Buffer.from(query.subarray(0, 12));
  header.writeUInt16BE(0x8180, 2); // QR RD RA
  const known = q.name === 'echo.default.svc.cluster.local';
  if (!known) {
    header.writeUInt16BE(0x8183, 2); // NXDOMAIN
    header.writeUInt16BE(0, 6);
    return Buffer.concat([header, query.subarray(12, q.end)]);
  }
  header.writeUInt16BE(1, 6); // ANCOUNT
  const rr = Buffer.alloc(12);
  rr.writeUInt16BE(0xc00c, 0); // pointer to the question name
  rr.writeUInt16BE(q.qtype, 2);
  rr.writeUInt16BE(1, 4);
  rr.writeUInt32BE(30, 6);
  const rdata = q.qtype === 1 ? Buffer.from([10, 96, 0, 42]) : Buffer.from('\x05hello');
  rr.writeUInt16BE(rdata.length, 10);
  if (q.qtype === 28) {
    header.writeUInt16BE(0, 6);
    return Buffer.concat([header, query.subarray(12, q.end)]);
  }
  return Buffer.concat([header, query.subarray(12, q.end), rr, rdata]);
}

const server = dgram.createSocket('udp4');
const seen: string[] = [];
server.on('message', (msg, rinfo) => {
  seen.push(question(msg).name);
  server.send(answer(msg), rinfo.port, rinfo.address);
});
await new Promise<void>((r) => server.bind(0, '127.0.0.1', () => r()));
const resolver = new ClusterResolver([`127.0.0.1:${server.address().port}`], 1000);

test.after(() => {
  server.close();
});

test('A records come back as addresses with the TTL the cluster gave', async () => {
  const a = await resolver.lookup('echo.default.svc.cluster.local.', 1);
  assert.equal(a, { rcode: 0, ips: ['10.96.0.42'], ttlSeconds: 30, raw: Buffer.alloc(0) });
});

test('a name the cluster does not know is NXDOMAIN; a name without that type is NOERROR, empty', async () => {
  const missing = await resolver.lookup('nope.default.svc.cluster.local.', 1);
  assert.is(missing.rcode, 3);
  assert.equal(missing.ips, []);
  const noAaaa = await resolver.lookup('echo.default.svc.cluster.local.', 28);
  assert.is(noAaaa.rcode, 0);
  assert.equal(noAaaa.ips, []);
});

test('other types are relayed in wire format', async () => {
  const txt = await resolver.lookup('echo.default.svc.cluster.local.', 16);
  assert.is(txt.rcode, 0);
  assert.ok(txt.raw.includes(Buffer.from('\x05hello')));
  assert.is(txt.raw.readUInt16BE(6), 1, 'one answer record');
});

test('an unreachable resolver is SERVFAIL, not a hang', async () => {
  const dead = new ClusterResolver(['127.0.0.1:9'], 300);
  assert.is((await dead.lookup('echo.default.svc.cluster.local.', 16)).rcode, 2);
  assert.is((await dead.lookup('echo.default.svc.cluster.local.', 1)).rcode, 2);
});

test('query encoding: labels, type, class IN, recursion desired', () => {
  const q = encodeQuery(0x1234, 'a.bc.', 28);
  assert.equal([...q], [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 97, 2, 98, 99, 0, 0, 28, 0, 1]);
});

test.run();
