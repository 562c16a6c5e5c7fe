import * as http from 'node:http';
import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type ProbeTarget, ProbeTracker, probeTiming, resolvePort, runProbe } from './probes.js';

test('defaults: period 10 s, timeout 1 s, thresholds 1 and 3; liveness needs one success', () => {
  assert.equal(probeTiming({}, 'readiness'), {
    initialDelayMs: 0,
    periodMs: 10_000,
    timeoutMs: 1000,
    successThreshold: 1,
    failureThreshold: 3,
  });
  assert.is(probeTiming({ successThreshold: 3 }, 'liveness').successThreshold, 1);
  assert.is(probeTiming({ successThreshold: 3 }, 'readiness').successThreshold, 3);
});

test('readiness flips after the thresholds, starting unready', () => {
  const t = new ProbeTracker('readiness', { successThreshold: 2, failureThreshold: 2 });
  assert.is(t.passing, false);
  assert.is(t.record(true), undefined);
  assert.is(t.record(true), 'passed');
  assert.is(t.record(false), undefined);
  assert.is(t.record(false), 'failed');
  assert.is(t.record(false), undefined, 'already failed: no new verdict');
});

test('liveness starts alive and fails once after failureThreshold misses; startup fails at the threshold', () => {
  const live = new ProbeTracker('liveness', { successThreshold: 1, failureThreshold: 3 });
  assert.is(live.passing, true);
  assert.is(live.record(false), undefined);
  assert.is(live.record(true), undefined, 'a success resets the count');
  assert.is(live.record(false), undefined);
  assert.is(live.record(false), undefined);
  assert.is(live.record(false), 'failed');
  const startup = new ProbeTracker('startup', { successThreshold: 1, failureThreshold: 2 });
  assert.is(startup.record(false), undefined);
  assert.is(startup.record(false), 'failed');
});

test('named ports resolve from the container ports', () => {
  assert.is(resolvePort('http', [{ name: 'http', containerPort: 8080 }]), 8080);
  assert.is(resolvePort(9090, []), 9090);
  assert.throws(() => resolvePort('metrics', []), /not a named port/);
});

const target = (ip: string, exitCode = 0): ProbeTarget => ({
  podIP: ip,
  sourceIP: undefined,
  ports: [{ name: 'web', containerPort: 0 }],
  userAgent: 'kube-probe/1.34',
  exec: async () => ({ exitCode, output: exitCode ? 'unhealthy\n' : '' }),
});

test('httpGet: 2xx/3xx pass, others fail with the status; the kubelet User-Agent is sent', async () => {
  let agent = '';
  const server = http.createServer((req, res) => {
    agent = req.headers['user-agent'] ?? '';
    res.writeHead(req.url === '/ok' ? 200 : req.url === '/moved' ? 302 : 503);
    res.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const t = target('127.0.0.1');
    assert.equal(await runProbe({ httpGet: { path: '/ok', port } }, t, 1000), { success: true, message: '' });
    assert.is(agent, 'kube-probe/1.34');
    assert.is((await runProbe({ httpGet: { path: '/moved', port } }, t, 1000)).success, true);
    assert.equal(await runProbe({ httpGet: { path: '/bad', port } }, t, 1000), {
      success: false,
      message: 'HTTP probe failed with statuscode: 503',
    });
  } finally {
    server.close();
  }
});

test('tcpSocket: connect passes, refused fails; exec: exit code decides', async () => {
  const server = net.createServer((s) => s.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  server.close();
  const open = net.createServer((s) => s.destroy());
  await new Promise<void>((resolve) => open.listen(0, '127.0.0.1', resolve));
  const openPort = (open.address() as net.AddressInfo).port;
  try {
    assert.is((await runProbe({ tcpSocket: { port: openPort } }, target('127.0.0.1'), 1000)).success, true);
    const refused = await runProbe({ tcpSocket: { port } }, target('127.0.0.1'), 1000);
    assert.is(refused.success, false);
    assert.match(refused.message, /ECONNREFUSED/);
    assert.is((await runProbe({ exec: { command: ['true'] } }, target('127.0.0.1'), 1000)).success, true);
    assert.equal(await runProbe({ exec: { command: ['check'] } }, target('127.0.0.1', 1), 1000), {
      success: false,
      message: 'unhealthy',
    });
  } finally {
    open.close();
  }
});

test.run();
