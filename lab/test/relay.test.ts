// The API relay pair, on real sockets: TCP -> unix socket -> TCP carries bytes both ways, passes a
// half-close through, refuses a port in use with the fix in the message, and validates endpoints.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseRelayEndpoint, startRelay, tcpPortInUse } from '../relay.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-lab-relay-test-'));
const servers: net.Server[] = [];
const listen = (server: net.Server) =>
  new Promise<number>((resolve) => {
    servers.push(server);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve((server.address() as net.AddressInfo).port));
  });

test.after(async () => {
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  fs.rmSync(dir, { recursive: true, force: true });
});

test('endpoints: tcp:HOST:PORT and unix:/path; bad ones name the fix', () => {
  assert.equal(parseRelayEndpoint('tcp:127.0.0.1:16443', '--listen'), {
    kind: 'tcp',
    host: '127.0.0.1',
    port: 16443,
  });
  assert.equal(parseRelayEndpoint('unix:/run/x.sock', '--connect'), { kind: 'unix', path: '/run/x.sock' });
  assert.throws(() => parseRelayEndpoint('127.0.0.1:1', '--listen'), /expected tcp:HOST:PORT or unix:\/path/);
  assert.throws(() => parseRelayEndpoint('unix:relative.sock', '--listen'), /absolute/);
  assert.throws(() => parseRelayEndpoint(`unix:/${'x'.repeat(120)}`, '--listen'), /shorter TP_LAB_DIR/);
});

test('bytes and half-close travel through tcp -> unix -> tcp', async () => {
  // The "API server": echoes what it reads, upper-cased, and closes after the client's FIN.
  const upstreamPort = await listen(
    net.createServer({ allowHalfOpen: true }, (s) => {
      const chunks: Buffer[] = [];
      s.on('data', (d) => chunks.push(d));
      s.on('end', () => s.end(Buffer.concat(chunks).toString().toUpperCase()));
    }),
  );
  const sock = path.join(dir, 'api.sock');
  servers.push(
    await startRelay({ kind: 'unix', path: sock }, { kind: 'tcp', host: '127.0.0.1', port: upstreamPort }),
  );
  const front = await startRelay({ kind: 'tcp', host: '127.0.0.1', port: 0 }, { kind: 'unix', path: sock });
  servers.push(front);
  const frontPort = (front.address() as net.AddressInfo).port;

  const payload = 'x'.repeat(256 * 1024);
  const answer = await new Promise<string>((resolve, reject) => {
    const c = net.connect({ host: '127.0.0.1', port: frontPort, allowHalfOpen: true }, () => c.end(payload));
    let got = '';
    c.setEncoding('utf8').on('data', (d: string) => {
      got += d;
    });
    c.on('end', () => resolve(got));
    c.on('error', reject);
  });
  assert.is(answer.length, payload.length);
  assert.is(answer, payload.toUpperCase());
});

test('a port in use is refused with the fix in the message', async () => {
  const port = await listen(net.createServer());
  assert.ok(await tcpPortInUse('127.0.0.1', port));
  try {
    await startRelay({ kind: 'tcp', host: '127.0.0.1', port }, { kind: 'unix', path: path.join(dir, 'x') });
    assert.unreachable('should refuse');
  } catch (err) {
    assert.match((err as Error).message, /already in use.*TP_LAB_API_PORT/);
  }
});

test('a dead upstream closes the client connection instead of hanging it', async () => {
  const front = await startRelay(
    { kind: 'tcp', host: '127.0.0.1', port: 0 },
    { kind: 'unix', path: path.join(dir, 'nobody.sock') },
  );
  servers.push(front);
  const port = (front.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => {
    const c = net.connect({ host: '127.0.0.1', port });
    c.on('close', () => resolve());
    c.on('error', () => {});
  });
});

test.run();
