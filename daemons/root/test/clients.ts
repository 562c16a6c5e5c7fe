// Test fixture: client programs run in the workstation namespace (what a user's program would do).
//   concurrent N HOST PORT BYTES  N connections at once, each downloads BYTES and checks them
//   udp HOST PORT TEXT            one datagram out, its echo back
//   refused HOST PORT             connect() must fail with ECONNREFUSED
// Prints one JSON line with the result.
import * as crypto from 'node:crypto';
import * as dgram from 'node:dgram';
import * as http from 'node:http';
import * as net from 'node:net';
import { payloadSha256 } from './payload.js';

const [mode, ...rest] = process.argv.slice(2);
const out = (v: unknown) => process.stdout.write(`${JSON.stringify(v)}\n`);

if (mode === 'concurrent') {
  const [n, host, port, bytes] = [Number(rest[0]), rest[1]!, Number(rest[2]), Number(rest[3])];
  const expected = payloadSha256(bytes);
  const agent = new http.Agent({ keepAlive: false, maxSockets: n });
  const one = () =>
    new Promise<boolean>((resolve) => {
      const req = http.get({ host, port, path: `/bytes?n=${bytes}`, agent, timeout: 60_000 }, (res) => {
        const h = crypto.createHash('sha256');
        res.on('data', (d: Buffer) => h.update(d));
        res.on('end', () => resolve(h.digest('hex') === expected));
        res.on('error', () => resolve(false));
      });
      req.on('error', () => resolve(false));
      req.on('timeout', () => req.destroy());
    });
  const results = await Promise.all(Array.from({ length: n }, one));
  out({ ok: results.filter(Boolean).length, failed: results.filter((r) => !r).length });
} else if (mode === 'udp') {
  const [host, port, text] = [rest[0]!, Number(rest[1]), rest[2]!];
  const s = dgram.createSocket('udp4');
  const timer = setTimeout(() => {
    out({ error: 'no answer within 10 s' });
    process.exit(0);
  }, 10_000);
  s.on('message', (m) => {
    clearTimeout(timer);
    out({ answer: m.toString() });
    s.close();
  });
  s.on('error', (e) => {
    clearTimeout(timer);
    out({ error: e.message });
    s.close();
  });
  s.connect(port, host, () => s.send(text));
} else if (mode === 'refused') {
  const [host, port] = [rest[0]!, Number(rest[1])];
  const started = Date.now();
  const c = net.connect({ host, port });
  const timer = setTimeout(() => {
    out({ error: 'timeout' });
    process.exit(0);
  }, 20_000);
  c.on('connect', () => {
    clearTimeout(timer);
    out({ connected: true });
    c.destroy();
  });
  c.on('error', (e: NodeJS.ErrnoException) => {
    clearTimeout(timer);
    out({ code: e.code, ms: Date.now() - started });
  });
} else {
  process.stderr.write('usage: clients.js concurrent|udp|refused …\n');
  process.exit(2);
}
