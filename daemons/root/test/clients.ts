// Test fixture: client programs run in the workstation namespace (what a user's program would do).
//   concurrent N HOST PORT BYTES  N connections at once, each downloads BYTES and checks them
//   udp HOST PORT TEXT            one datagram out, its echo back
//   refused HOST PORT             connect() must fail with ECONNREFUSED
//   held HOST PORT                a GET on a keep-alive connection, and at SIGUSR2 another on the same one
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
} else if (mode === 'held') {
  const [host, port] = [rest[0]!, Number(rest[1])];
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const sockets = new Set<net.Socket>();
  const get = () =>
    new Promise<string>((resolve, reject) => {
      const req = http.get({ host, port, path: '/', agent, timeout: 20_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve(body));
      });
      req.on('socket', (s) => sockets.add(s));
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error('timeout')));
    });
  // The agent's idle socket does not keep the process alive.
  const alive = setInterval(() => {}, 1_000);
  process.once('SIGUSR2', () => {
    void get()
      .then(
        (second) => out({ second, sockets: sockets.size }),
        (e: Error) => out({ error: e.message, sockets: sockets.size }),
      )
      .finally(() => {
        clearInterval(alive);
        agent.destroy();
      });
  });
  out({ first: await get() });
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
