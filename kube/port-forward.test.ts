// PortForwardSession against a stand-in for the kubelet's port-forward on loopback: HTTP upgraded to SPDY/3.1,
// and for every stream pair a TCP connection to the pod's port, as containerd makes one. Many forwarded
// connections share the session; each is byte-exact and independent of the others; a port nothing listens
// on fails its stream with the kubelet's message and leaves the session to the rest. The lab's e2e tests
// run the same code against the real kubelet and containerd.
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as net from 'node:net';
import type { KubeConfig, V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor, within } from '../command/wait.js';
import { createLogger, setLevel } from '../logging/logger.js';
import {
  encodeControlFrame,
  encodeDataFrameHeader,
  encodeSynReply,
  FLAG_FIN,
  FrameReader,
  FrameType,
  parseSynStream,
} from '../spdy/frames.js';
import { HeaderBlockDecoder, HeaderBlockEncoder } from '../spdy/header-compression.js';
import { loopbackKubeConfig } from '../testbed/kubeconfig.js';
import { dialTarget, originate, readOpen } from '../tunnel/flow.js';
import { FLOW_MAGIC, FramedCall } from '../tunnel/framed-call.js';
import { streamInfo } from '../tunnel/messages.js';
import { TunnelStream } from '../tunnel/stream.js';
import { forwardingListener, PodStreams, PortForwardSession, podToForwardTo } from './port-forward.js';

setLevel('error');
const log = createLogger('test');

/**
 * The kubelet's side: every data stream connects to 127.0.0.1:<its port header>. With
 * `failedStreamStopsConnection`, a connection whose stream could not reach the pod takes no new stream
 * afterwards (no SYN_REPLY, no pod connection), as containerd's port-forward up to 1.7 (Debian 12's 1.6.20,
 * the lab node's: containerd#8849); pings are still answered.
 */
async function fakeKubelet(opts: { failedStreamStopsConnection?: boolean } = {}): Promise<{
  kc: KubeConfig;
  upgrades: () => number;
  /** Upgraded connections still open. */
  openConnections: () => number;
  /** The upgrade requests' paths (the pod each names), in order. */
  paths: string[];
  freeze(): void;
  /** Accepts no new stream from now on, on any connection (pings are still answered). */
  stopAccepting(): void;
  close(): Promise<void>;
}> {
  const conns = new Set<net.Socket>();
  let upgrades = 0;
  /** Answers nothing and relays nothing any more: a network that dropped between the two. */
  let frozen = false;
  let accepting = true;
  const server = http.createServer((_req, res) => res.writeHead(400).end());
  const paths: string[] = [];
  server.on('upgrade', (req, socket: net.Socket) => {
    upgrades++;
    paths.push(req.url ?? '');
    conns.add(socket);
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n' +
        'X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n',
    );
    const reader = new FrameReader({ streamData: true });
    const decoder = new HeaderBlockDecoder();
    const encoder = new HeaderBlockEncoder();
    const pods = new Map<number, net.Socket>();
    const errorStreams = new Map<string, number>();
    const early = new Map<number, { data: Buffer; fin: boolean }[]>();
    /** A stream of this connection could not reach the pod (failedStreamStopsConnection). */
    let stuck = false;
    socket.on('close', () => {
      decoder.close();
      for (const p of pods.values()) p.destroy();
    });
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      reader.push(chunk);
      for (let f = reader.next(); f; f = reader.next()) {
        if (!f.control) {
          // Data may come before the stream's headers are decoded: it waits for the pod connection.
          if (frozen) continue;
          const pod = pods.get(f.streamId);
          const data = Buffer.from(f.data);
          const fin = (f.flags & FLAG_FIN) !== 0;
          if (!pod) early.set(f.streamId, [...(early.get(f.streamId) ?? []), { data, fin }]);
          else {
            if (data.length > 0) pod.write(data);
            if (fin) pod.end();
          }
          continue;
        }
        if (f.type === FrameType.Ping && !frozen) socket.write(encodeControlFrame(FrameType.Ping, 0, f.body));
        if (f.type !== FrameType.SynStream) continue;
        const syn = parseSynStream(f.body);
        const id = syn.streamId;
        // Decoded in order (the shared context); the reply and the pod connection follow.
        decoder.decode(syn.headerBlock).then(
          (h) => {
            if (stuck || !accepting) return;
            socket.write(encodeSynReply(id, 0, encoder.encode({})));
            if (h.streamtype === 'error') {
              errorStreams.set(h.requestid!, id);
              return;
            }
            const pod = net.connect({ port: Number(h.port), host: '127.0.0.1', allowHalfOpen: true });
            pods.set(id, pod);
            for (const e of early.get(id) ?? []) {
              if (e.data.length > 0) pod.write(e.data);
              if (e.fin) pod.end();
            }
            early.delete(id);
            pod.on('data', (d: Buffer) => {
              socket.write(encodeDataFrameHeader(id, 0, d.length));
              socket.write(d);
            });
            pod.on('end', () => socket.write(encodeDataFrameHeader(id, FLAG_FIN, 0)));
            pod.on('error', (e) => {
              if (opts.failedStreamStopsConnection) stuck = true;
              const errorId = errorStreams.get(h.requestid!)!;
              const text = Buffer.from(`error forwarding port ${h.port}: ${e.message}`);
              socket.write(encodeDataFrameHeader(errorId, FLAG_FIN, text.length));
              socket.write(text);
            });
          },
          () => socket.destroy(),
        ); // the connection closed while decoding
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const kc = loopbackKubeConfig((server.address() as net.AddressInfo).port);
  return {
    kc,
    upgrades: () => upgrades,
    openConnections: () => [...conns].filter((c) => !c.destroyed && !c.readableEnded).length,
    paths,
    freeze: () => {
      frozen = true;
    },
    stopAccepting: () => {
      accepting = false;
    },
    close: async () => {
      for (const c of conns) c.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

async function listen(
  handler: (s: net.Socket) => void,
  port = 0,
): Promise<{ port: number; server: net.Server }> {
  // A peer that resets at the end of a case is no failure of the case.
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    handler(s);
  });
  await new Promise<void>((r, j) => {
    server.once('error', j);
    server.listen(port, '127.0.0.1', r);
  });
  return { port: (server.address() as net.AddressInfo).port, server };
}

/** Sends `payload` on a forwarded connection, ends it, collects what comes back until the pod ends. */
function exchange(stream: NodeJS.ReadWriteStream, payload: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    stream.on('data', (d: Buffer) => got.push(d));
    stream.on('end', () => resolve(Buffer.concat(got)));
    stream.on('error', reject);
    stream.end(payload);
  });
}

test('many forwarded connections share one upgrade, each byte-exact (20 × 2 MiB echoed at once)', async () => {
  const kubelet = await fakeKubelet();
  const echo = await listen((s) => s.pipe(s));
  const session = await PortForwardSession.open(kubelet.kc, 'ns', 'pod', echo.port, log);
  try {
    const payloads = Array.from({ length: 20 }, () => crypto.randomBytes(2 << 20));
    const echoed = await Promise.all(payloads.map((p) => exchange(session.stream(), p)));
    for (const [i, e] of echoed.entries())
      assert.ok(e.equals(payloads[i]!), `connection ${i} came back byte for byte`);
    assert.is(kubelet.upgrades(), 1, 'one port-forward connection for all 20');
    assert.is(session.ended, undefined, 'the session is still up');
  } finally {
    session.close();
    echo.server.close();
    await kubelet.close();
  }
});

test('a connection the pod refuses fails with the kubelet message; the others on the session go on', async () => {
  const kubelet = await fakeKubelet();
  const echo = await listen((s) => s.pipe(s));
  const closed = await listen(() => {});
  const nothing = closed.port;
  await new Promise((r) => closed.server.close(r));
  const good = await PortForwardSession.open(kubelet.kc, 'ns', 'pod', echo.port, log);
  const bad = await PortForwardSession.open(kubelet.kc, 'ns', 'pod', nothing, log);
  try {
    const failed = await exchange(bad.stream(), Buffer.from('hello')).then(
      () => undefined,
      (e: Error) => e.message,
    );
    assert.match(
      failed ?? 'no error',
      `port-forward to pod:${nothing} failed: error forwarding port ${nothing}`,
    );
    const first = good.stream();
    const second = good.stream();
    second.destroy();
    assert.equal((await exchange(first, Buffer.from('still here'))).toString(), 'still here');
    assert.is(good.ended, undefined);
  } finally {
    good.close();
    bad.close();
    echo.server.close();
    await kubelet.close();
  }
});

test('a port-forward that stops answering pings is given up, and its streams fail with the reason; idle is no silence', async () => {
  const kubelet = await fakeKubelet();
  const echo = await listen((s) => s.pipe(s));
  const liveness = { pingIntervalMs: 100, pingTimeoutMs: 500 };
  const session = await PortForwardSession.open(kubelet.kc, 'ns', 'pod', echo.port, log, liveness);
  try {
    const echoed = (stream: NodeJS.ReadWriteStream) => {
      const first = new Promise((r) => stream.once('data', r));
      stream.write('hello');
      return first;
    };
    const before = session.stream();
    await echoed(before);
    before.destroy();
    // No stream for many timeouts: nothing is pinged, nothing is given up.
    await new Promise((r) => setTimeout(r, 1_500));
    const stream = session.stream();
    await echoed(stream);
    await new Promise((r) => setTimeout(r, 1_000));
    assert.is(session.ended, undefined, 'alive after an idle spell');
    const failed = new Promise<Error>((r) => stream.once('error', r));
    kubelet.freeze();
    assert.match((await failed).message, /answered no ping for 0.5 s/);
    assert.match(session.ended ?? '', /answered no ping/);
  } finally {
    session.close();
    echo.server.close();
    await kubelet.close();
  }
});

test('after a stream the pod refused (containerd up to 1.7 then takes no new stream on that connection), the next connection goes on a new port-forward and reaches the pod', async () => {
  const kubelet = await fakeKubelet({ failedStreamStopsConnection: true });
  const probe = await listen(() => {});
  const port = probe.port;
  await new Promise((r) => probe.server.close(r));
  // A pod that does not listen yet (a new manager pod dialed before it listens).
  const streams = new PodStreams(kubelet.kc, log, 'ns', { pod: 'pod', port }, Buffer.from('HELLO'));
  let pod: Awaited<ReturnType<typeof listen>> | undefined;
  try {
    const refused = await exchange(await streams.open(), Buffer.from(' first')).then(
      () => 'no error',
      (e: Error) => e.message,
    );
    assert.match(refused, `port-forward to pod:${port} failed: error forwarding port ${port}`);
    // Now it listens.
    pod = await listen((s) => s.pipe(s), port);
    // A connection that would wait for good fails the case instead.
    const echoed = await within(
      streams.open().then((c) => exchange(c, Buffer.from(' second'))),
      5_000,
    );
    assert.ok(echoed, 'the connection after the refused one answered within 5 s');
    assert.is(echoed.toString(), 'HELLO second');
    assert.is(kubelet.upgrades(), 2, 'a new port-forward connection for it');
  } finally {
    streams.close();
    pod?.server.close();
    await kubelet.close();
  }
});

test('a stream the kubelet does not accept in time fails and taints its port-forward: no new stream on it, the one that heard from the pod goes on, and it closes after that one', async () => {
  const kubelet = await fakeKubelet();
  const echo = await listen((s) => s.pipe(s));
  const liveness = { pingIntervalMs: 100, pingTimeoutMs: 5_000, streamReplyTimeoutMs: 300 };
  const session = await PortForwardSession.open(kubelet.kc, 'ns', 'pod', echo.port, log, liveness);
  try {
    const working = session.stream();
    const first = new Promise((r) => working.once('data', r));
    working.write('hello');
    await first;
    kubelet.stopAccepting();
    const unaccepted = session.stream();
    const failed = await new Promise<Error>((r) => unaccepted.once('error', r));
    assert.match(failed.message, /the kubelet did not accept a new stream within 0.3 s/);
    assert.is(session.takesNewStreams, false);
    assert.throws(() => session.stream(), /did not accept a new stream/);
    assert.is(session.ended, undefined, 'it still carries the stream that heard from the pod');
    assert.is((await exchange(working, Buffer.from(' again'))).toString(), ' again');
    await waitFor('the tainted port-forward to close', async () => session.ended !== undefined, 5000, 20);
  } finally {
    session.close();
    echo.server.close();
    await kubelet.close();
  }
});

test('PodStreams: every connection starts with the prelude, one waits at the pod ahead of need, one handed back goes out first', async () => {
  const kubelet = await fakeKubelet();
  const got: string[] = [];
  const pod = await listen((s) => {
    const i = got.push('') - 1;
    s.on('data', (d: Buffer) => {
      got[i] += d.toString();
    });
  });
  const streams = new PodStreams(kubelet.kc, log, 'ns', { pod: 'pod', port: pod.port }, Buffer.from('HELLO'));
  try {
    streams.warm();
    await waitFor('the spare at the pod', () => got.length === 1 || undefined, 5000, 20);
    // The first connection asked for is the spare: the pod had it before it was asked for.
    const a = await streams.open();
    // close() below ends them with an error.
    a.on('error', () => {});
    a.write(' from a');
    await waitFor('its bytes', () => got[0] === 'HELLO from a' || undefined, 5000, 20);
    await waitFor('a new spare', () => got.length === 2 || undefined, 5000, 20);
    const b = await streams.open();
    b.on('error', () => {});
    b.write(' from b');
    await waitFor('its bytes', () => got[1] === 'HELLO from b' || undefined, 5000, 20);
    await waitFor('a third spare', () => got.length === 3 || undefined, 5000, 20);
    assert.is(got[2], 'HELLO');
    // A connection handed back is the next one out, before the spare; no new one at the pod.
    streams.release(a);
    assert.is(await streams.open(), a);
    a.write(' again');
    await waitFor('its bytes', () => got[0] === 'HELLO from a again' || undefined, 5000, 20);
    assert.is(got.length, 3);
    assert.is(kubelet.upgrades(), 1, 'one port-forward connection for all');
  } finally {
    streams.close();
    pod.server.close();
    await kubelet.close();
  }
});

test('PodStreams: a connection whose pod side ended while it waited (the agent restarted) is not handed out', async () => {
  const kubelet = await fakeKubelet();
  // The pod closes a connection on "bye", as an agent that restarts closes them all.
  const pod = await listen((s) => s.on('data', (d: Buffer) => d.includes('bye') && s.end()));
  const streams = new PodStreams(kubelet.kc, log, 'ns', { pod: 'pod', port: pod.port }, Buffer.from('HELLO'));
  try {
    const a = await streams.open();
    a.on('error', () => {});
    streams.release(a);
    const spareAndA = await streams.open();
    assert.is(spareAndA, a, 'handed back, handed out');
    streams.release(a);
    a.write('bye');
    await waitFor('the pod to end it', () => a.remoteEnded || undefined, 5000, 20);
    const next = await streams.open();
    next.on('error', () => {});
    assert.is.not(next, a);
    assert.ok(a.destroyed, 'dropped');
  } finally {
    streams.close();
    pod.server.close();
    await kubelet.close();
  }
});

test('tunnel flows on forwarded connections: 64 MiB each way, byte-exact, read memory reused', async () => {
  const kubelet = await fakeKubelet();
  // The workstation's app: answers the sha256 of what it got, then sends `n` bytes of a pattern.
  const n = 64 << 20;
  const pattern = Buffer.alloc(n);
  for (let i = 0; i < n; i += 4) pattern.writeUInt32BE(i, i);
  const app = await listen((s) => {
    const h = crypto.createHash('sha256');
    s.on('data', (d: Buffer) => h.update(d));
    s.on('end', () => s.end(Buffer.concat([Buffer.from(h.digest('hex')), pattern])));
  });
  // The agent's side: the direct port's flow connections, each originating the client's connection.
  const front = await listen(() => {});
  const clients: net.Socket[] = [];
  front.server.on('connection', (s) => clients.push(s));
  const agent = await listen((s) => {
    s.once('readable', () => {
      assert.equal(s.read(FLOW_MAGIC.length), FLOW_MAGIC);
      const stream = new TunnelStream(new FramedCall(s, 'workstation'));
      void readOpen(stream, 5000).then(async (info) => {
        const client = await waitFor('the client', () => clients.shift());
        await originate(client, stream, info, { openedByFarSide: true, log });
      });
    });
  });
  const session = await PortForwardSession.open(kubelet.kc, 'ns', 'pod', agent.port, log);
  try {
    const client = net.connect({ port: front.port, host: '127.0.0.1', allowHalfOpen: true });
    await new Promise((r) => client.once('connect', r));
    const info = streamInfo({ connId: undefined, sessionId: 's', relayId: 'r', dialTimeoutMs: 5000 });
    const flow = dialTarget(
      new TunnelStream(FramedCall.open(session.stream(), 'pod')),
      info,
      { host: '127.0.0.1', port: app.port },
      log,
    );
    const upload = crypto.randomBytes(n);
    const reply = await exchange(client, upload);
    assert.is(reply.subarray(0, 64).toString(), crypto.createHash('sha256').update(upload).digest('hex'));
    assert.ok(reply.subarray(64).equals(pattern), 'the download came back byte for byte');
    assert.is((await flow).kind, 'closed');
    client.destroy();
  } finally {
    session.close();
    for (const s of [app, front, agent]) s.server.close();
    await kubelet.close();
  }
});

test("the manager's forward: flow connections share one port-forward, a gRPC connection gets its own", async () => {
  const kubelet = await fakeKubelet();
  const echo = await listen((s) => s.pipe(s));
  const forward = await forwardingListener(kubelet.kc, log, 'ns', 'the test', {
    target: async () => ({ pod: 'pod', port: echo.port }),
    failed: () => {},
    shareFlowConnections: true,
  });
  const [host, port] = forward.address.split(':') as [string, string];
  /** A local connection that sends `first` and `rest` and reads until as much came back (the echo). */
  const through = (first: Buffer, rest: Buffer) =>
    new Promise<Buffer>((resolve, reject) => {
      const want = first.length + rest.length;
      const c = net.connect({ host, port: Number(port) }, () => c.write(Buffer.concat([first, rest])));
      const got: Buffer[] = [];
      let n = 0;
      c.on('data', (d: Buffer) => {
        got.push(d);
        n += d.length;
        if (n >= want) {
          c.destroy();
          resolve(Buffer.concat(got));
        }
      });
      c.on('close', () => resolve(Buffer.concat(got)));
      c.on('error', reject);
    });
  try {
    // Below a bulk rate (kube/port-forward.ts BUSY_BYTES): all share the one session.
    const payloads = Array.from({ length: 5 }, () => crypto.randomBytes(32 << 10));
    const flows = await Promise.all(payloads.map((p) => through(FLOW_MAGIC, p)));
    for (const [i, f] of flows.entries())
      assert.ok(f.equals(Buffer.concat([FLOW_MAGIC, payloads[i]!])), `flow connection ${i} byte for byte`);
    assert.is(kubelet.upgrades(), 1, 'one port-forward for the 5 flow connections');
    const preface = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    assert.ok((await through(preface, Buffer.from('x'))).equals(Buffer.concat([preface, Buffer.from('x')])));
    assert.is(kubelet.upgrades(), 2, 'the gRPC connection on a port-forward of its own');
    assert.ok(
      (await through(FLOW_MAGIC, Buffer.from('y'))).equals(Buffer.concat([FLOW_MAGIC, Buffer.from('y')])),
    );
    assert.is(kubelet.upgrades(), 2, 'the next flow connection on the shared one again');
  } finally {
    await forward.close();
    echo.server.close();
    await kubelet.close();
  }
});

test('a retired port-forward lets its open streams finish, then closes; with none open it closes at once', async () => {
  const kubelet = await fakeKubelet();
  const echo = await listen((s) => s.pipe(s));
  const busy = await PortForwardSession.open(kubelet.kc, 'ns', 'pod', echo.port, log);
  const idle = await PortForwardSession.open(kubelet.kc, 'ns', 'pod', echo.port, log);
  try {
    const stream = busy.stream();
    busy.retire();
    idle.retire();
    assert.ok(idle.ended, 'the one without streams closed');
    assert.is(busy.ended, undefined, 'the one with a stream stays');
    assert.is((await exchange(stream, Buffer.from('finishing'))).toString(), 'finishing');
    await waitFor('the retired port-forward to close', async () => busy.ended !== undefined, 5000, 20);
  } finally {
    busy.close();
    idle.close();
    echo.server.close();
    await kubelet.close();
  }
});

test("PodStreams to the manager's pod as looked up: another pod gets a session of its own, the old one ends after its flows", async () => {
  const kubelet = await fakeKubelet();
  const echo = await listen((s) => s.pipe(s));
  let target = { pod: 'manager-1', port: echo.port };
  let failures = 0;
  // The root daemon's case (managerTarget): the pod behind the Service, looked up again after a restart.
  const streams = new PodStreams(kubelet.kc, log, 'tp-system', {
    resolve: async () => target,
    failed: () => failures++,
  });
  try {
    const first = await streams.open();
    first.write('one');
    assert.is((await once(first, 'data')).toString(), 'one');
    // The manager restarted: its new pod is the target now.
    target = { pod: 'manager-2', port: echo.port };
    const second = await streams.open();
    assert.equal(
      kubelet.paths.map((p) => p.replace(/\?.*/, '')),
      [
        '/api/v1/namespaces/tp-system/pods/manager-1/portforward',
        '/api/v1/namespaces/tp-system/pods/manager-2/portforward',
      ],
    );
    assert.is((await exchange(second, Buffer.from('two'))).toString(), 'two');
    // The old pod's connection in progress finishes on its session (a draining manager).
    first.write(' still');
    assert.is((await once(first, 'data')).toString(), ' still');
    assert.is(kubelet.upgrades(), 2);
    assert.is(failures, 0);
    // An upgrade that fails (the API server refuses it, or is gone) says so to the resolver: look again.
    const refused = new PodStreams(loopbackKubeConfig(1), log, 'tp-system', {
      resolve: async () => target,
      failed: () => failures++,
    });
    await refused.open().then(
      () => assert.unreachable('a port-forward through nothing opened'),
      (e: Error) => assert.match(e.message, 'ECONNREFUSED'),
    );
    assert.is(failures, 1);
    refused.close();
  } finally {
    streams.close();
    echo.server.close();
    await kubelet.close();
  }
});

test('a connection that starts beside a transfer in bulk goes on a port-forward of its own, and those after it share that one; an idle extra one closes', async () => {
  const kubelet = await fakeKubelet();
  const echo = await listen((s) => s.pipe(s));
  // The root daemon's case: flow connections to the manager, one kept ready ahead of need.
  const streams = new PodStreams(kubelet.kc, log, 'ns', { pod: 'pod', port: echo.port }, FLOW_MAGIC);
  let pumping = true;
  try {
    const bulk = await streams.open();
    bulk.on('error', () => {});
    // A download's worth of bytes, echoed, until told to stop.
    const chunk = crypto.randomBytes(256 << 10);
    let echoed = 0;
    bulk.on('data', (d: Buffer) => {
      echoed += d.length;
    });
    const pump = () => {
      while (pumping && bulk.write(chunk)) {}
      if (pumping) bulk.once('drain', pump);
    };
    pump();
    await waitFor(
      'the bulk transfer to make its session busy',
      () => bulk.onBusySession || undefined,
      10_000,
      5,
    );
    const beside = await streams.open();
    beside.on('error', () => {});
    assert.is(kubelet.upgrades(), 2, 'the connection beside the transfer on a port-forward of its own');
    assert.not.ok(beside.onBusySession);
    const next = await streams.open();
    next.on('error', () => {});
    assert.is(kubelet.upgrades(), 2, 'the next connection shares the new one');
    // Both carry their bytes while the transfer goes on.
    beside.write('beside');
    assert.is((await once(beside, 'data')).toString(), `${FLOW_MAGIC}beside`);
    await waitFor('the transfer to go on beside them', () => echoed > 4 << 20 || undefined, 10_000, 20);
    pumping = false;
    beside.destroy();
    next.destroy();
    bulk.destroy();
    await waitFor('the first session no longer busy', () => !bulk.onBusySession || undefined, 10_000, 20);
    // The spare kept ready on the new session goes out; the next spare is on the first session again.
    (await streams.open()).destroy();
    await waitFor('a spare', () => streams.pool.readyCount > 0 || undefined, 5_000, 20);
    // Without streams, the extra session closes (EXTRA_SESSION_IDLE_MS); the first stays.
    await waitFor(
      'the extra port-forward closed',
      () => kubelet.openConnections() === 1 || undefined,
      20_000,
      100,
    );
    const after = await streams.open();
    after.on('error', () => {});
    let got = '';
    after.on('data', (d: Buffer) => {
      got += d.toString();
    });
    // A ready connection waits paused (the flow's call resumes it).
    after.resume();
    after.write('after');
    await waitFor('its echo', () => got === `${FLOW_MAGIC}after` || undefined, 5_000, 20);
    assert.is(kubelet.upgrades(), 2, 'on the first one');
  } finally {
    pumping = false;
    streams.close();
    echo.server.close();
    await kubelet.close();
  }
});

/** The next `event` of an emitter: its first argument. */
function once(e: NodeJS.EventEmitter, event: string): Promise<Buffer> {
  return new Promise((resolve) => e.once(event, resolve));
}

test("podToForwardTo: a Ready pod first; else one whose containers all started (a new manager before its probe's period); never one being deleted", () => {
  const pod = (
    name: string,
    o: { phase?: string; ready?: boolean; started?: boolean[]; deleting?: boolean } = {},
  ): V1Pod => ({
    metadata: { name, ...(o.deleting ? { deletionTimestamp: new Date() } : {}) },
    status: {
      phase: o.phase ?? 'Running',
      conditions: [{ type: 'Ready', status: o.ready ? 'True' : 'False' }],
      containerStatuses: (o.started ?? [true]).map((started, i) => ({
        name: `c${i}`,
        image: 'tp',
        imageID: '',
        ready: o.ready === true,
        restartCount: 0,
        started,
      })),
    },
  });
  const chosen = (...pods: V1Pod[]) => podToForwardTo(pods)?.metadata?.name;
  // A rollout: the old pod still Ready, the new one started: the Ready one.
  assert.is(chosen(pod('new'), pod('old', { ready: true })), 'old');
  // A deleted pod's successor, started, its probe not run yet: tried.
  assert.is(chosen(pod('old', { ready: true, deleting: true }), pod('new')), 'new');
  // Not while one of its containers has not started, nor while it is Pending.
  assert.is(chosen(pod('new', { started: [true, false] })), undefined);
  assert.is(chosen(pod('new', { phase: 'Pending', started: [] })), undefined);
  assert.is(chosen(), undefined);
});

test.run();
