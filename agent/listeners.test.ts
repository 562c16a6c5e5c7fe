// The agent's listener with real sockets on loopback: passthrough carries the bytes (with backpressure
// both ways), the half-close and resets, a dead app resets the client, and every connection is counted.
// No manager: the session is never started, so there are no intercepts and everything passes through.
// (Kubelet probes do not come here: they are rewritten to the probe server, probe-server.test.ts.)
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { setLevel } from '../logging/logger.js';
import { AgentInfo } from '../rpc/gen/manager.js';
import { freePort } from '../testbed/loopback.js';
import { ConnectionCounters } from './connection-counters.js';
import { PortListener } from './listeners.js';
import { AgentManagerSession } from './manager-session.js';

setLevel('error');

/** An app that answers "<peer> said: <everything it read>" once the client half-closes, then closes. */
async function startApp(host = '127.0.0.1'): Promise<{ port: number; server: net.Server }> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    let got = '';
    s.on('data', (d) => {
      got += d;
    });
    s.on('end', () => s.end(`${s.remoteAddress} said: ${got}`));
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  return { port: (server.address() as net.AddressInfo).port, server };
}

/** Connects, sends `text`, half-closes, and resolves with the whole answer, or 'reset' / 'closed'. */
function exchange(port: number, text: string, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port, allowHalfOpen: true }, () => s.end(text));
    let answer = '';
    s.on('data', (d) => {
      answer += d;
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNRESET' ? 'reset' : e.message));
    s.on('end', () => resolve(answer || 'closed'));
  });
}

async function withListener(
  appPort: number,
  options: { listenAddress?: string },
  run: (agentPort: number, counters: ConnectionCounters) => Promise<void>,
): Promise<void> {
  const agentPort = await freePort();
  const counters = new ConnectionCounters([appPort]);
  // Never run: no manager, so no session and no intercept routes.
  const session = new AgentManagerSession('127.0.0.1:1', AgentInfo.fromPartial({}), [appPort], () => ({}));
  const listener = new PortListener({
    agentPort,
    appPorts: [appPort],
    listenAddress: options.listenAddress ?? '127.0.0.1',
    session,
    steered: false,
    counters,
    workstationDialDeadlineMs: 2_000,
  });
  await listener.listen();
  try {
    await run(agentPort, counters);
  } finally {
    listener.close();
    session.client.close();
  }
}

test('passthrough: the bytes and the half-close reach the app, and the connection is counted', async () => {
  const app = await startApp();
  try {
    await withListener(app.port, {}, async (agentPort, counters) => {
      assert.is(await exchange(agentPort, 'hello'), '127.0.0.1 said: hello');
      assert.is(await exchange(agentPort, 'again'), '127.0.0.1 said: again');
      assert.equal(counters.snapshot().get(app.port), {
        passedThrough: 2,
        intercepted: 0,
        fellBack: 0,
        direct: 0,
        dialFailures: 0,
      });
      assert.is(counters.format(), `app port ${app.port}: 2 passed through, 0 intercepted, 0 dial failures`);
    });
  } finally {
    app.server.close();
  }
});

test('passthrough: backpressure both ways, 16 MiB echoed to a client that reads slowly arrive whole', async () => {
  // The app echoes; the client writes everything at once and reads in pauses, so both directions fill.
  const server = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const appPort = (server.address() as net.AddressInfo).port;
  const sent = crypto.randomBytes(16 * 1024 * 1024);
  try {
    await withListener(appPort, {}, async (agentPort) => {
      const received = await new Promise<Buffer>((resolve, reject) => {
        const chunks: Buffer[] = [];
        const s = net.connect({ host: '127.0.0.1', port: agentPort, allowHalfOpen: true }, () => s.end(sent));
        s.on('data', (d: Buffer) => {
          chunks.push(d);
          s.pause();
          setTimeout(() => s.resume(), chunks.length % 64 === 0 ? 5 : 0);
        });
        s.on('error', reject);
        s.on('end', () => resolve(Buffer.concat(chunks)));
      });
      assert.is(received.length, sent.length);
      assert.ok(received.equals(sent), 'the echoed bytes differ from those sent');
    });
  } finally {
    server.close();
  }
});

test('passthrough: a reset on either side resets the other', async () => {
  const appSide: net.Socket[] = [];
  const appSaw: string[] = [];
  const server = net.createServer((s) => {
    appSide.push(s);
    s.on('error', (e: NodeJS.ErrnoException) => appSaw.push(e.code ?? e.message));
    s.on('close', () => appSaw.push('close'));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const appPort = (server.address() as net.AddressInfo).port;
  const connected = async (agentPort: number) => {
    const client = net.connect({ host: '127.0.0.1', port: agentPort });
    const clientSaw = new Promise<string>((resolve) => {
      client.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      client.on('close', () => resolve('close without error'));
    });
    client.write('x'); // the agent dials the app at accept; this waits until both are connected
    await waitUntil(() => appSide.length > 0);
    return { client, clientSaw, app: appSide.shift()! };
  };
  try {
    await withListener(appPort, {}, async (agentPort) => {
      // The client resets: the app sees a reset too.
      const first = await connected(agentPort);
      first.client.resetAndDestroy();
      await waitUntil(() => appSaw.includes('close'));
      assert.equal(appSaw, ['ECONNRESET', 'close']);
      // The app resets: the client sees a reset.
      const second = await connected(agentPort);
      second.app.resetAndDestroy();
      assert.is(await second.clientSaw, 'ECONNRESET');
    });
  } finally {
    server.close();
  }
});

async function waitUntil(done: () => boolean): Promise<void> {
  for (let i = 0; !done(); i++) {
    if (i > 500) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('the app is down: the client is reset and the dial failure counted', async () => {
  const deadPort = await freePort();
  await withListener(deadPort, {}, async (agentPort, counters) => {
    assert.is(await exchange(agentPort, 'anyone?'), 'reset');
    assert.equal(counters.snapshot().get(deadPort), {
      passedThrough: 1,
      intercepted: 0,
      fellBack: 0,
      direct: 0,
      dialFailures: 1,
    });
  });
});

test('a dual-stack listener dials the app over the connection’s own family', async () => {
  const hasV6 = await freePort('::1').then(
    () => true,
    () => false,
  );
  if (!hasV6) {
    console.log('# no IPv6 loopback here: only IPv4 checked');
  }
  const app4 = await startApp('127.0.0.1');
  // The same port on ::1, so each family reaches its own app.
  const app6 = hasV6 ? net.createServer({ allowHalfOpen: true }) : undefined;
  if (app6) {
    app6.on('connection', (s) => {
      let got = '';
      s.on('data', (d) => {
        got += d;
      });
      s.on('end', () => s.end(`${s.remoteAddress} said over IPv6: ${got}`));
    });
    await new Promise<void>((r, j) => app6.once('error', j).listen(app4.port, '::1', r));
  }
  try {
    await withListener(app4.port, { listenAddress: '' }, async (agentPort) => {
      assert.is(await exchange(agentPort, 'v4'), '127.0.0.1 said: v4');
      if (hasV6) assert.is(await exchange(agentPort, 'v6', '::1'), '::1 said over IPv6: v6');
    });
  } finally {
    app4.server.close();
    app6?.close();
  }
});

test('the counters of several ports, in port order, then the probes in their order', () => {
  const counters = new ConnectionCounters([9090, 8080], ['echo/readiness', 'echo/liveness']);
  counters.of(8080).passedThrough += 3;
  counters.of(9090).intercepted++;
  counters.of(9090).dialFailures++;
  counters.probe('echo/readiness').performed += 4;
  counters.probe('echo/readiness').failed++;
  counters.probe('echo/liveness').performed++;
  assert.is(
    counters.format(),
    'app port 8080: 3 passed through, 0 intercepted, 0 dial failures; ' +
      'app port 9090: 0 passed through, 1 intercepted, 1 dial failures; ' +
      'probes: echo/readiness 4 (1 failed), echo/liveness 1 (0 failed)',
  );
  // Of the intercepted: straight to the workstation, and given to the app.
  counters.of(9090).intercepted += 3;
  counters.of(9090).direct += 2;
  counters.of(9090).fellBack++;
  assert.match(
    counters.format(),
    'app port 9090: 0 passed through, 4 intercepted (2 straight to the workstation, 1 given to the app: the workstation was unavailable), 1 dial failures',
  );
  assert.throws(() => counters.of(7070), /app port 7070 is not one the agent serves/);
  assert.throws(() => counters.probe('echo/startup'), /probe echo\/startup is not one the agent performs/);
});

test.run();
