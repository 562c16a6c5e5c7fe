// Personal intercepts in the agent with real sockets on loopback: the router on a listener, an app and two
// "workstations" (alice and bob), each its own HTTP/1.1 + h2c server. The tunnel is replaced by a loopback
// connection behind the same in-memory socket pair the agent uses (the whole path through the manager is
// test/e2e/personal.test.ts).
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { setLevel } from '../logging/logger.js';
import type { HttpFilter } from '../rpc/gen/manager.js';
import { socketPair } from './flow-socket.js';
import { type PersonalPort, routeConnection, sniff } from './http-router.js';
import type { PersonalRoute } from './intercept-routes.js';
import { splice } from './listeners.js';

setLevel('error');

const byHeader = (value: string): HttpFilter => ({
  headers: [{ name: 'x-dev', value }],
  pathPrefix: '',
  pathEqual: '',
  pathRegex: '',
});

/** Answers `<who> <method> <path> <body>` on HTTP/1.1 and h2c alike, with a trailer (as gRPC does). */
interface Party {
  port: number;
  close: () => void;
  /** Closes every connection, as an app does with idle keep-alive connections. */
  drop: () => void;
  connections: () => number;
}

async function party(who: string): Promise<Party> {
  let connections = 0;
  const handler = (
    req: http.IncomingMessage | http2.Http2ServerRequest,
    res: http.ServerResponse | http2.Http2ServerResponse,
  ) => {
    let body = '';
    req.on('data', (d: Buffer) => {
      body += d;
    });
    req.on('end', () => {
      res.setHeader('content-type', 'text/plain');
      if (req.httpVersion === '2.0')
        (res as http2.Http2ServerResponse).addTrailers({ 'grpc-status': '0', who });
      res.end(`${who} ${req.method} ${req.url} ${body}`);
    });
  };
  // One port for both: h2c by its preface, else HTTP/1.1 (node:http2's allowHTTP1 needs TLS).
  const h1 = http.createServer(handler);
  const h2 = http2.createServer(handler);
  // An Upgrade: the connection is this party's from now on; it says who it is, then echoes.
  h1.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${req.headers.upgrade}\r\n\r\n${who}:`,
    );
    socket.pipe(socket);
  });
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.once('data', (d) => {
      s.pause();
      if (d.subarray(0, 3).toString() !== 'PRI') {
        s.unshift(d);
        h1.emit('connection', s);
        s.resume();
        return;
      }
      // node:http2 reads a net.Socket's handle directly: replay the bytes read through an in-memory pair.
      const [session, relay] = socketPair();
      relay.write(d);
      s.pipe(relay).pipe(s);
      s.on('close', () => relay.destroy());
      h2.emit('connection', session);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => connections,
    drop: () => {
      for (const s of sockets) s.end();
    },
    close: () => {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}

interface Rig {
  port: number;
  routes: PersonalRoute[];
  counts: {
    passedThrough: number;
    intercepted: number;
    fellBack: number;
    direct: number;
    dialFailures: number;
  };
  close: () => void;
}

async function rig(appPort: number, workstations: Record<string, number>): Promise<Rig> {
  const r: Rig = {
    port: 0,
    routes: [],
    counts: { passedThrough: 0, intercepted: 0, fellBack: 0, direct: 0, dialFailures: 0 },
    close: () => {},
  };
  const personal: PersonalPort = {
    appPort,
    appHost: '127.0.0.1',
    counts: r.counts,
    routes: () => r.routes,
    openFlow: (interceptId) => {
      const [outer, inner] = socketPair();
      const ws = net.connect({ host: '127.0.0.1', port: workstations[interceptId]! });
      inner.pipe(ws).pipe(inner);
      ws.on('error', () => inner.destroy());
      inner.on('error', () => ws.destroy());
      return outer as unknown as net.Socket;
    },
    // The listener's own pump, as in the agent.
    splice: (client, app) => splice(client, app, appPort, r.counts),
  };
  const sockets = new Set<net.Socket>();
  const listener = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    routeConnection(s, personal);
  });
  await new Promise<void>((res) => listener.listen(0, '127.0.0.1', res));
  r.port = (listener.address() as net.AddressInfo).port;
  r.close = () => {
    listener.close();
    for (const s of sockets) s.destroy();
  };
  return r;
}

async function withParties(
  run: (rig: Rig, parties: { app: Party; alice: Party }) => Promise<void>,
): Promise<void> {
  const [app, alice, bob] = await Promise.all([party('app'), party('alice'), party('bob')]);
  const r = await rig(app.port, { 'c-alice:echo': alice.port, 'c-bob:echo': bob.port });
  r.routes = [
    { interceptId: 'c-alice:echo', filter: byHeader('alice') },
    { interceptId: 'c-bob:echo', filter: byHeader('bob') },
  ];
  try {
    await run(r, { app, alice });
  } finally {
    r.close();
    for (const p of [app, alice, bob]) p.close();
  }
}

function get(agent: http.Agent, port: number, path: string, dev?: string, body?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        agent,
        host: '127.0.0.1',
        port,
        path,
        method: body ? 'POST' : 'GET',
        headers: dev ? { 'X-Dev': dev } : {},
      },
      (res) => {
        let text = '';
        res.on('data', (d) => {
          text += d;
        });
        res.on('end', () => resolve(text));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

test('sniffing: the h2c preface, an HTTP/1 request line, anything else; "more" while undecided', () => {
  assert.is(sniff(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')), 'h2');
  assert.is(sniff(Buffer.from('PRI * HT')), 'more');
  assert.is(sniff(Buffer.from('GET /x HTTP/1.1\r\nHost: a\r\n')), 'http1');
  assert.is(sniff(Buffer.from('GET /x HT')), 'more');
  assert.is(sniff(Buffer.from('GE')), 'more');
  assert.is(sniff(Buffer.from('SSH-2.0-OpenSSH_9.2\r\n')), 'other');
  assert.is(sniff(Buffer.from([0x16, 0x03, 0x01, 0x02])), 'other', 'a TLS ClientHello');
  assert.is(sniff(Buffer.from('hello\n')), 'other');
});

test('HTTP/1.1: 200 requests over 10 keep-alive connections, each answered by the right party', async () => {
  await withParties(async (r, { app, alice }) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 10 });
    try {
      const kinds = ['alice', 'bob', undefined] as const;
      const answers = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          get(agent, r.port, `/r${i}`, kinds[i % 3], i % 7 === 0 ? `b${i}` : undefined),
        ),
      );
      answers.forEach((a, i) => {
        const body = i % 7 === 0 ? `b${i}` : '';
        assert.is(a, `${kinds[i % 3] ?? 'app'} ${body ? 'POST' : 'GET'} /r${i} ${body}`);
      });
      assert.ok(app.connections() <= 10, `the app saw ${app.connections()} connections`);
      assert.is(r.counts.intercepted, 134);
      // alice's app closes its idle connections (a keep-alive timeout): her next request gets a new flow.
      alice.drop();
      await new Promise((res) => setTimeout(res, 100));
      assert.is(await get(agent, r.port, '/later', 'alice'), 'alice GET /later ');
      // The intercept of bob ends: his next request on the same connections goes to the app.
      r.routes = r.routes.slice(0, 1);
      assert.is(await get(agent, r.port, '/after', 'bob'), 'app GET /after ');
      assert.is(await get(agent, r.port, '/after', 'alice'), 'alice GET /after ');
    } finally {
      agent.destroy();
    }
  });
});

test('an Upgrade request hands the connection over whole to the party it matched', async () => {
  await withParties(async (r) => {
    const upgrade = (dev?: string) =>
      new Promise<string>((resolve, reject) => {
        const req = http.request({
          host: '127.0.0.1',
          port: r.port,
          path: '/ws',
          agent: false,
          headers: { connection: 'Upgrade', upgrade: 'echo', ...(dev ? { 'x-dev': dev } : {}) },
        });
        req.on('upgrade', (_res, socket: net.Socket, head: Buffer) => {
          let got = head.toString();
          socket.on('data', (d) => {
            got += d;
            if (got.endsWith('ping')) {
              socket.destroy();
              resolve(got);
            }
          });
          socket.write('ping');
        });
        req.on('error', reject);
        req.end();
      });
    assert.is(await upgrade('bob'), 'bob:ping');
    assert.is(await upgrade(), 'app:ping');
  });
});

test('h2c: 50 streams on one connection, mixed, each from the right party, trailers kept', async () => {
  await withParties(async (r) => {
    const session = http2.connect(`http://127.0.0.1:${r.port}`);
    session.on('error', () => {});
    try {
      const kinds = ['alice', 'bob', undefined] as const;
      const results = await Promise.all(
        Array.from(
          { length: 50 },
          (_, i) =>
            new Promise<{ body: string; trailers: http2.IncomingHttpHeaders }>((resolve, reject) => {
              const s = session.request({
                ':method': 'POST',
                ':path': `/s${i}`,
                ...(kinds[i % 3] ? { 'x-dev': kinds[i % 3] } : {}),
              });
              let body = '';
              let trailers: http2.IncomingHttpHeaders = {};
              s.on('data', (d) => {
                body += d;
              });
              s.on('trailers', (t) => {
                trailers = t;
              });
              s.on('end', () => resolve({ body, trailers }));
              s.on('error', reject);
              s.end(`x${i}`);
            }),
        ),
      );
      results.forEach((res, i) => {
        const who = kinds[i % 3] ?? 'app';
        assert.is(res.body, `${who} POST /s${i} x${i}`);
        assert.is(res.trailers['grpc-status'], '0');
        assert.is(res.trailers.who, who);
      });
    } finally {
      session.close();
    }
  });
});

test('not HTTP: bytes the client sends first, and a server that speaks first, pass through untouched', async () => {
  const echo = net.createServer((s) => {
    s.write('220 hello\r\n');
    s.pipe(s);
  });
  await new Promise<void>((res) => echo.listen(0, '127.0.0.1', res));
  const r = await rig((echo.address() as net.AddressInfo).port, {});
  r.routes = [{ interceptId: 'c-alice:echo', filter: byHeader('alice') }];
  const talk = (first?: Buffer) =>
    new Promise<string>((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port: r.port }, () => {
        if (first) s.write(first);
      });
      let got = '';
      s.on('data', (d) => {
        got += d.toString('latin1');
        if (!first && got === '220 hello\r\n') s.write('QUIT\r\n');
        if (got.endsWith('QUIT\r\n') || (first && got.length >= 11 + first.length)) s.end();
      });
      s.on('end', () => resolve(got));
      s.on('error', reject);
    });
  try {
    assert.is(await talk(), '220 hello\r\nQUIT\r\n');
    const binary = Buffer.from([0x16, 0x03, 0x01, 0x00, 0xff]);
    assert.is(await talk(binary), `220 hello\r\n${binary.toString('latin1')}`);
  } finally {
    r.close();
    echo.close();
  }
});

test('a client that sends a little and half-closes before the first bytes tell: bytes and FIN reach the app', async () => {
  // A silent app (it does not speak first) that answers what it read once the client half-closed.
  const app = net.createServer({ allowHalfOpen: true }, (s) => {
    let got = '';
    s.on('data', (d) => {
      got += d;
    });
    s.on('end', () => s.end(`read ${got}`));
  });
  await new Promise<void>((res) => app.listen(0, '127.0.0.1', res));
  const r = await rig((app.address() as net.AddressInfo).port, {});
  r.routes = [{ interceptId: 'c-alice:echo', filter: byHeader('alice') }];
  try {
    const answer = await new Promise<string>((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port: r.port, allowHalfOpen: true }, () => s.end('GE'));
      let got = '';
      s.on('data', (d) => {
        got += d;
      });
      s.on('end', () => resolve(got));
      s.on('error', reject);
    });
    assert.is(answer, 'read GE');
  } finally {
    r.close();
    app.close();
  }
});

test.run();
