// The agent's listener with real sockets on loopback: passthrough carries the bytes (with backpressure
// both ways), the half-close and resets, a dead app resets the client, and every connection is counted.
// Each passthrough test runs twice: on the passthrough thread (passthrough-thread.ts, the default) and on
// the main thread's net.Sockets (TP_PASSTHROUGH=main, and the path of an intercepted connection given to
// the app). No manager: the session is never started, so there are no intercepts and everything
// passes through, unless a test sets its routes.
// (Kubelet probes do not come here: they are rewritten to the probe server, probe-server.test.ts.)
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger, setLevel } from '../logging/logger.js';
import { AgentInfo } from '../rpc/gen/manager.js';
import { loadLibc } from '../sys/libc.js';
import { freePort } from '../testbed/loopback.js';
import { ConnectionCounters } from './connection-counters.js';
import { PortListener } from './listeners.js';
import { AgentManagerSession } from './manager-session.js';
import { PassthroughThread } from './passthrough.js';

type Mode = 'thread' | 'main thread';
const MODES: Mode[] = ['thread', 'main thread'];

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
  options: { listenAddress?: string; mode: Mode },
  run: (
    agentPort: number,
    counters: ConnectionCounters,
    session: AgentManagerSession,
    listener: PortListener,
  ) => Promise<void>,
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
    passthrough: options.mode === 'thread' ? 'thread' : 'main',
    counters,
    workstationDialDeadlineMs: 2_000,
  });
  await listener.listen();
  try {
    assert.is(await listener.passthroughReady(), options.mode);
    await run(agentPort, counters, session, listener);
  } finally {
    listener.close();
    session.client.close();
  }
}

/** A listening socket on 127.0.0.1 with a backlog of 0 that nothing accepts on yet (koffi: Node always accepts). */
function slowListener(): { fd: number; port: number } {
  const libc = loadLibc();
  const socket = libc.func('int socket(int domain, int type, int protocol)');
  const bind = libc.func('int bind(int fd, void *addr, uint32_t length)');
  const listen = libc.func('int listen(int fd, int backlog)');
  const getsockname = libc.func('int getsockname(int fd, void *addr, void *length)');
  const fd = socket(2, 1, 0);
  const addr = Buffer.alloc(16);
  addr.writeUInt16LE(2, 0);
  addr.writeUInt32BE(0x7f000001, 4);
  assert.is(bind(fd, addr, 16), 0, 'bind');
  assert.is(listen(fd, 0), 0, 'listen');
  const length = Buffer.alloc(4);
  length.writeUInt32LE(16, 0);
  assert.is(getsockname(fd, addr, length), 0, 'getsockname');
  return { fd, port: addr.readUInt16BE(2) };
}

async function waitUntil(done: () => boolean): Promise<void> {
  for (let i = 0; !done(); i++) {
    if (i > 500) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}

for (const mode of MODES) {
  test(`${mode}: passthrough: the bytes and the half-close reach the app, and the connection is counted`, async () => {
    const app = await startApp();
    try {
      await withListener(app.port, { mode }, async (agentPort, counters) => {
        assert.is(await exchange(agentPort, 'hello'), '127.0.0.1 said: hello');
        assert.is(await exchange(agentPort, 'again'), '127.0.0.1 said: again');
        assert.equal(counters.snapshot().get(app.port), {
          passedThrough: 2,
          intercepted: 0,
          fellBack: 0,
          direct: 0,
          dialFailures: 0,
        });
        assert.is(
          counters.format(),
          `app port ${app.port}: 2 passed through, 0 intercepted, 0 dial failures`,
        );
      });
    } finally {
      app.server.close();
    }
  });

  test(`${mode}: passthrough: backpressure both ways, 16 MiB echoed to a client that reads slowly arrive whole`, async () => {
    // The app echoes; the client writes everything at once and reads in pauses, so both directions fill.
    const server = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const appPort = (server.address() as net.AddressInfo).port;
    const sent = crypto.randomBytes(16 * 1024 * 1024);
    try {
      await withListener(appPort, { mode }, async (agentPort) => {
        const received = await new Promise<Buffer>((resolve, reject) => {
          const chunks: Buffer[] = [];
          const s = net.connect({ host: '127.0.0.1', port: agentPort, allowHalfOpen: true }, () =>
            s.end(sent),
          );
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

  test(`${mode}: passthrough: a reset on either side resets the other`, async () => {
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
      await withListener(appPort, { mode }, async (agentPort) => {
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

  test(`${mode}: the app is down: the client is reset and the dial failure counted`, async () => {
    const deadPort = await freePort();
    await withListener(deadPort, { mode }, async (agentPort, counters) => {
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

  test(`${mode}: an app slow to take connections gets what the client sent, and its FIN, once it does`, async () => {
    // The app's socket, listening with a backlog of 0 and not accepting yet: one connection fills its
    // queue, so the agent's dials wait in SYN_SENT (the kernel drops their SYNs and sends them again after
    // 1 s), while the clients send and half-close. Then the app starts accepting.
    const app = slowListener();
    const filler = net.connect({ host: '127.0.0.1', port: app.port });
    filler.on('error', () => {});
    try {
      await new Promise((r) => filler.once('connect', r));
      await withListener(app.port, { mode }, async (agentPort, counters) => {
        // One client sends its request and half-closes, the other only half-closes: its FIN alone must wait.
        const answers = Promise.all([exchange(agentPort, 'patience'), exchange(agentPort, '')]);
        await new Promise((r) => setTimeout(r, 300));
        const server = net.createServer({ allowHalfOpen: true }, (s) => {
          let got = '';
          s.on('data', (d) => {
            got += d;
          });
          s.on('end', () => s.end(`said: ${got}`));
        });
        await new Promise<void>((r) => server.listen({ fd: app.fd }, r));
        try {
          assert.equal(await answers, ['said: patience', 'said: ']);
          assert.is(counters.snapshot().get(app.port)?.dialFailures, 0);
        } finally {
          server.close();
        }
      });
    } finally {
      filler.destroy();
    }
  });

  test(`${mode}: closing the listener closes the connections it carries`, async () => {
    const appSide: net.Socket[] = [];
    const server = net.createServer((s) => {
      appSide.push(s);
      s.on('error', () => {});
      s.resume(); // reads, so the agent's FIN is seen
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const appPort = (server.address() as net.AddressInfo).port;
    try {
      await withListener(appPort, { mode }, async (agentPort, _counters, _session, listener) => {
        const client = net.connect({ host: '127.0.0.1', port: agentPort });
        client.on('error', () => {});
        client.write('x');
        await waitUntil(() => appSide.length > 0);
        listener.close();
        await waitUntil(() => client.destroyed && appSide[0]!.destroyed);
      });
    } finally {
      server.close();
    }
  });

  test(`${mode}: a dual-stack listener dials the app over the connection’s own family`, async () => {
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
      await withListener(app4.port, { listenAddress: '', mode }, async (agentPort) => {
        assert.is(await exchange(agentPort, 'v4'), '127.0.0.1 said: v4');
        if (hasV6) assert.is(await exchange(agentPort, 'v6', '::1'), '::1 said over IPv6: v6');
      });
    } finally {
      app4.server.close();
      app6?.close();
    }
  });
}

test('an intercept started after listening takes its port from the thread; ended, the thread passes through again', async () => {
  const app = await startApp();
  try {
    await withListener(app.port, { mode: 'thread' }, async (agentPort, counters, session) => {
      const setRoutes = (routes: Map<number, string>) =>
        (session as unknown as { setRoutes(...maps: Map<unknown, unknown>[]): void }).setRoutes(
          routes,
          new Map(),
          new Map(),
        );
      assert.is(await exchange(agentPort, 'before'), '127.0.0.1 said: before');
      // Intercepted: the main thread takes the connection. The manager (127.0.0.1:1) is not there, so the
      // connection is given to the app whole, and counted as intercepted and given back.
      session.sessionId = 's1';
      setRoutes(new Map([[app.port, 'i1']]));
      assert.is(await exchange(agentPort, 'during'), '127.0.0.1 said: during');
      session.sessionId = '';
      setRoutes(new Map());
      assert.is(await exchange(agentPort, 'after'), '127.0.0.1 said: after');
      // Given to the app, it counts as intercepted and given back, not as passed through.
      assert.equal(counters.snapshot().get(app.port), {
        passedThrough: 2,
        intercepted: 1,
        fellBack: 1,
        direct: 0,
        dialFailures: 0,
      });
    });
  } finally {
    app.server.close();
  }
});

test('a passthrough thread that cannot start says why, and leaves the socket alone', async () => {
  // /dev/null is no socket: epoll refuses it (EPERM), so the thread fails before it accepts anything.
  const fs = await import('node:fs');
  const fd = fs.openSync('/dev/null', 'r');
  try {
    const thread = PassthroughThread.start({
      listenFd: fd,
      appPorts: [8080],
      loopback: '127.0.0.1',
      routed: [],
      onHandover: () => {},
      onFailed: () => {},
      log: createLogger('test/passthrough'),
    });
    await thread.ready.then(
      () => assert.unreachable('started on /dev/null'),
      (e: Error) => assert.match(e.message, /epoll_ctl failed \(errno 1\)/),
    );
    assert.ok(fs.fstatSync(fd).isCharacterDevice(), 'the caller’s fd was closed');
  } finally {
    fs.closeSync(fd);
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
