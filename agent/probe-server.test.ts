// The agent's probe server with real sockets on loopback: for each rewritten probe it performs the
// original against a real app — HTTP (success, failure, too slow, redirects, headers, HTTPS with a
// self-signed certificate), TCP (listening or not), gRPC health (SERVING, NOT_SERVING, an unknown
// service, no health service) — and answers 200 or 503 with the reason; its own readiness; 404 otherwise.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { setLevel } from '../logging/logger.js';
import type { AppProbe } from '../probes/spec.js';
import { freePort } from '../testbed/loopback.js';
import { ConnectionCounters } from './connection-counters.js';
import {
  decodeHealthCheckRequest,
  decodeHealthCheckResponse,
  encodeHealthCheckRequest,
  encodeHealthCheckResponse,
  HEALTH_CHECK_METHOD,
} from './grpc-health.js';
import { ProbeServer } from './probe-server.js';

setLevel('error');

/** The pod IP the kubelet would have probed: the app sees it in Host, the agent dials loopback. */
const POD_IP = '10.88.0.10';

interface Seen {
  path: string;
  host: string;
  userAgent: string;
  accept: string;
  probeHeader: string;
}

/** An HTTP(S) app whose paths answer as their names say, recording every request it gets. */
function app(port: () => number) {
  const seen: Seen[] = [];
  const handler: http.RequestListener = (req, res) => {
    const url = req.url ?? '';
    seen.push({
      path: url,
      host: req.headers.host ?? '',
      userAgent: req.headers['user-agent'] ?? '',
      accept: req.headers.accept ?? '',
      probeHeader: String(req.headers['x-probe'] ?? ''),
    });
    if (url === '/ok') return res.end('fine');
    if (url === '/fail') {
      res.statusCode = 500;
      return res.end('broken');
    }
    if (url === '/slow') return void setTimeout(() => res.end('late'), 3_000);
    if (url === '/big') return res.end(Buffer.alloc(1 << 20, 'x'));
    const redirects: Record<string, string> = {
      '/redirect-same': '/ok',
      '/redirect-pod-ip': `http://${POD_IP}:${port()}/fail`,
      '/redirect-other': 'http://login.example/',
      '/loop': '/loop',
    };
    const to = redirects[url];
    if (to) {
      res.writeHead(302, { location: to });
      return res.end();
    }
    res.statusCode = 404;
    res.end();
  };
  return { seen, handler };
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as net.AddressInfo).port;
}

/** A self-signed certificate, made with openssl for this run. */
function selfSigned(): { key: Buffer; cert: Buffer } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-probe-tls-'));
  try {
    execFileSync(
      'openssl',
      [
        ...['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'],
        ...['-keyout', 'key.pem', '-out', 'cert.pem', '-days', '1', '-subj', '/CN=app.invalid'],
      ],
      { cwd: dir, stdio: 'pipe' },
    );
    return {
      key: fs.readFileSync(path.join(dir, 'key.pem')),
      cert: fs.readFileSync(path.join(dir, 'cert.pem')),
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A gRPC health server: `statuses` maps a service name to its status; others are NOT_FOUND. */
async function healthServer(statuses: Map<string, number>, userAgents: string[]) {
  const server = new grpc.Server();
  server.addService(
    {
      Check: {
        path: HEALTH_CHECK_METHOD,
        requestStream: false,
        responseStream: false,
        requestSerialize: (r: { service: string }) => encodeHealthCheckRequest(r.service),
        // An object, not the bare string: grpc-js takes a falsy message ('') for no message at all.
        requestDeserialize: (b: Buffer) => ({ service: decodeHealthCheckRequest(b) }),
        responseSerialize: encodeHealthCheckResponse,
        responseDeserialize: decodeHealthCheckResponse,
      },
    },
    {
      Check: (
        call: grpc.ServerUnaryCall<{ service: string }, number>,
        callback: grpc.sendUnaryData<number>,
      ) => {
        userAgents.push(String(call.metadata.get('user-agent')[0] ?? ''));
        const status = statuses.get(call.request.service);
        if (status === undefined) callback({ code: grpc.status.NOT_FOUND, details: 'unknown service' });
        else callback(null, status);
      },
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return { server, port };
}

/** GET on the probe port, as the kubelet does. */
function probe(
  port: number,
  urlPath: string,
  userAgent = 'kube-probe/1.30',
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(
        { host: '127.0.0.1', port, path: urlPath, agent: false, headers: { 'user-agent': userAgent } },
        (res) => {
          let body = '';
          res.on('data', (d) => {
            body += d;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: body.trim() }));
        },
      )
      .on('error', reject);
  });
}

const httpApp = app(() => httpPort);
const httpServer = http.createServer(httpApp.handler);
let httpPort = 0;
const httpsApp = app(() => httpsPort);
const httpsServer = https.createServer(selfSigned(), httpsApp.handler);
let httpsPort = 0;
const tcpServer = net.createServer((s) => s.destroy());
let tcpPort = 0;
let deadPort = 0;
const statuses = new Map([
  ['', 1],
  ['orders', 2],
  ['starting', 0],
]);
const grpcUserAgents: string[] = [];
let health: Awaited<ReturnType<typeof healthServer>>;
let bare: Awaited<ReturnType<typeof healthServer>>;
let server: ProbeServer;
let probePort = 0;
let listening = false;
let counters: ConnectionCounters;

const http1 = (container: string, p: string, extra: Partial<AppProbe> = {}): AppProbe => ({
  container,
  kind: 'readiness',
  timeoutSeconds: 1,
  httpGet: { port: httpPort, scheme: 'HTTP', path: p, httpHeaders: [] },
  ...extra,
});

test.before(async () => {
  httpPort = await listen(httpServer);
  httpsPort = await listen(httpsServer);
  tcpPort = await listen(tcpServer);
  deadPort = await freePort();
  health = await healthServer(statuses, grpcUserAgents);
  bare = await healthServer(new Map(), []);
  bare.server.unregister(HEALTH_CHECK_METHOD);
  const probes: AppProbe[] = [
    http1('ok', '/ok'),
    http1('fail', '/fail'),
    http1('slow', '/slow'),
    http1('big', '/big'),
    http1('redirect-same', '/redirect-same'),
    http1('redirect-pod-ip', '/redirect-pod-ip'),
    http1('redirect-other', '/redirect-other'),
    http1('loop', '/loop'),
    {
      container: 'headers',
      kind: 'liveness',
      timeoutSeconds: 1,
      httpGet: {
        port: httpPort,
        scheme: 'HTTP',
        path: '/ok',
        httpHeaders: [
          { name: 'x-probe', value: 'from-the-pod-spec' },
          { name: 'Host', value: 'echo.example' },
        ],
      },
    },
    {
      container: 'tls',
      kind: 'startup',
      timeoutSeconds: 1,
      httpGet: { port: httpsPort, scheme: 'HTTPS', path: '/ok', httpHeaders: [] },
    },
    {
      container: 'tls-fail',
      kind: 'readiness',
      timeoutSeconds: 1,
      httpGet: { port: httpsPort, scheme: 'HTTPS', path: '/fail', httpHeaders: [] },
    },
    { container: 'tcp', kind: 'liveness', timeoutSeconds: 1, tcpSocket: { port: tcpPort } },
    { container: 'tcp-dead', kind: 'liveness', timeoutSeconds: 1, tcpSocket: { port: deadPort } },
    { container: 'grpc', kind: 'readiness', timeoutSeconds: 1, grpc: { port: health.port, service: '' } },
    {
      container: 'grpc-not-serving',
      kind: 'readiness',
      timeoutSeconds: 1,
      grpc: { port: health.port, service: 'orders' },
    },
    {
      container: 'grpc-unknown',
      kind: 'readiness',
      timeoutSeconds: 1,
      grpc: { port: health.port, service: 'nobody' },
    },
    {
      container: 'grpc-starting',
      kind: 'readiness',
      timeoutSeconds: 1,
      grpc: { port: health.port, service: 'starting' },
    },
    { container: 'grpc-bare', kind: 'readiness', timeoutSeconds: 1, grpc: { port: bare.port, service: '' } },
    { container: 'grpc-dead', kind: 'readiness', timeoutSeconds: 1, grpc: { port: deadPort, service: '' } },
  ];
  counters = new ConnectionCounters(
    [httpPort],
    probes.map((p) => `${p.container}/${p.kind}`),
  );
  probePort = await freePort();
  server = new ProbeServer({
    port: probePort,
    listenAddress: '127.0.0.1',
    podIp: POD_IP,
    probes,
    counters,
    listening: () => listening,
  });
  await server.listen();
});

test.after(() => {
  server.close();
  httpServer.close();
  httpServer.closeAllConnections();
  httpsServer.close();
  httpsServer.closeAllConnections();
  tcpServer.close();
  health.server.forceShutdown();
  bare.server.forceShutdown();
});

test('httpGet: 200 when the app answers 2xx, 503 with the status otherwise', async () => {
  assert.equal(await probe(probePort, '/tp-probe/ok/readiness'), {
    status: 200,
    body: `ok/readiness: GET http://${POD_IP}:${httpPort}/ok: status 200`,
  });
  assert.equal(await probe(probePort, '/tp-probe/fail/readiness'), {
    status: 503,
    body: `fail/readiness: GET http://${POD_IP}:${httpPort}/fail: status 500`,
  });
  assert.is((await probe(probePort, '/tp-probe/big/readiness')).status, 200, 'a large body is cut short');
});

test('httpGet: an app slower than timeoutSeconds gets a 503 with the reason before the kubelet gives up', async () => {
  const started = Date.now();
  const r = await probe(probePort, '/tp-probe/slow/readiness');
  const took = Date.now() - started;
  assert.is(r.status, 503);
  assert.match(r.body, /no answer within 800 ms \(the probe's timeoutSeconds is 1\)/);
  assert.ok(took >= 750 && took < 1_000, `answered after ${took} ms`);
});

test('httpGet: redirects on the same host are followed, to another host they are a success', async () => {
  const before = httpApp.seen.length;
  assert.equal(await probe(probePort, '/tp-probe/redirect-same/readiness'), {
    status: 200,
    body: `redirect-same/readiness: GET http://${POD_IP}:${httpPort}/ok: status 200`,
  });
  // An absolute redirect to the pod's own IP goes to the app on loopback too.
  const podIp = await probe(probePort, '/tp-probe/redirect-pod-ip/readiness');
  assert.is(podIp.status, 503);
  assert.match(podIp.body, new RegExp(`GET http://${POD_IP}:${httpPort}/fail: status 500`));
  const other = await probe(probePort, '/tp-probe/redirect-other/readiness');
  assert.is(other.status, 200);
  assert.match(other.body, /status 302 \(a redirect the kubelet does not follow\)/);
  assert.equal(
    httpApp.seen.slice(before).map((s) => s.path),
    ['/redirect-same', '/ok', '/redirect-pod-ip', '/fail', '/redirect-other'],
  );
  const loopFrom = httpApp.seen.length;
  const loop = await probe(probePort, '/tp-probe/loop/readiness');
  assert.is(loop.status, 503);
  assert.match(loop.body, /stopped after 10 redirects/);
  assert.is(httpApp.seen.length - loopFrom, 10, 'ten requests, as the kubelet makes');
});

test("httpGet: the app sees the kubelet's headers, the probe's own ones, and the pod's address as Host", async () => {
  await probe(probePort, '/tp-probe/ok/readiness', 'kube-probe/1.31');
  assert.equal(httpApp.seen.at(-1), {
    path: '/ok',
    host: `${POD_IP}:${httpPort}`,
    userAgent: 'kube-probe/1.31',
    accept: '*/*',
    probeHeader: '',
  });
  assert.is((await probe(probePort, '/tp-probe/headers/liveness')).status, 200);
  assert.equal(httpApp.seen.at(-1), {
    path: '/ok',
    host: 'echo.example',
    userAgent: 'kube-probe/1.30',
    accept: '*/*',
    probeHeader: 'from-the-pod-spec',
  });
});

test('httpGet over HTTPS: a self-signed certificate is not verified, as the kubelet does', async () => {
  assert.equal(await probe(probePort, '/tp-probe/tls/startup'), {
    status: 200,
    body: `tls/startup: GET https://${POD_IP}:${httpsPort}/ok: status 200`,
  });
  assert.is((await probe(probePort, '/tp-probe/tls-fail/readiness')).status, 503);
  assert.is(httpsApp.seen.at(-1)!.host, `${POD_IP}:${httpsPort}`);
});

test('tcpSocket: 200 while the app listens, 503 when nothing does', async () => {
  assert.equal(await probe(probePort, '/tp-probe/tcp/liveness'), {
    status: 200,
    body: `tcp/liveness: tcp 127.0.0.1:${tcpPort}: connected`,
  });
  assert.equal(await probe(probePort, '/tp-probe/tcp-dead/liveness'), {
    status: 503,
    body: `tcp-dead/liveness: tcp 127.0.0.1:${deadPort}: connection refused by 127.0.0.1:${deadPort}`,
  });
});

test('grpc: SERVING only is a success', async () => {
  assert.equal(await probe(probePort, '/tp-probe/grpc/readiness'), {
    status: 200,
    body: `grpc/readiness: grpc 127.0.0.1:${health.port} service "": SERVING`,
  });
  assert.match(grpcUserAgents.at(-1)!, /^kube-probe\/1\.30 /);
  const notServing = await probe(probePort, '/tp-probe/grpc-not-serving/readiness');
  assert.is(notServing.status, 503);
  assert.match(notServing.body, /service "orders": NOT_SERVING$/);
  const starting = await probe(probePort, '/tp-probe/grpc-starting/readiness');
  assert.is(starting.status, 503);
  assert.match(starting.body, /service "starting": UNKNOWN$/);
  const unknown = await probe(probePort, '/tp-probe/grpc-unknown/readiness');
  assert.is(unknown.status, 503);
  assert.match(unknown.body, /service "nobody": health check failed: NOT_FOUND: unknown service$/);
  const bareAnswer = await probe(probePort, '/tp-probe/grpc-bare/readiness');
  assert.is(bareAnswer.status, 503);
  assert.match(bareAnswer.body, /does not implement the gRPC health protocol/);
  const dead = await probe(probePort, '/tp-probe/grpc-dead/readiness');
  assert.is(dead.status, 503);
  assert.match(dead.body, /health check failed: UNAVAILABLE/);
});

test("the agent's own readiness follows its listeners; anything else is 404", async () => {
  listening = false;
  assert.equal(await probe(probePort, '/tp-probe/agent'), {
    status: 503,
    body: 'tp-agent: its listeners are not up',
  });
  listening = true;
  assert.equal(await probe(probePort, '/tp-probe/agent'), { status: 200, body: 'tp-agent: listening' });
  assert.is((await probe(probePort, '/')).status, 404);
  assert.is((await probe(probePort, '/tp-probe/ok/liveness')).status, 404, 'not a rewritten probe');
  assert.match(
    (await probe(probePort, '/tp-probe/nobody/readiness')).body,
    /no rewritten probe nobody\/readiness/,
  );
});

test('every probe performed is counted, per container and kind, failures apart', async () => {
  const before = { ...counters.probe('fail/readiness') };
  await probe(probePort, '/tp-probe/ok/readiness');
  await probe(probePort, '/tp-probe/fail/readiness');
  assert.equal(counters.probe('fail/readiness'), {
    performed: before.performed + 1,
    failed: before.failed + 1,
  });
  assert.match(
    counters.format(),
    /probes: ok\/readiness \d+ \(0 failed\), fail\/readiness \d+ \(\d+ failed\)/,
  );
  assert.equal(counters.snapshot().get(httpPort), {
    passedThrough: 0,
    intercepted: 0,
    fellBack: 0,
    direct: 0,
    dialFailures: 0,
  });
});

test.run();
