// Flows on byte streams of their own (tunnel/framed-call.ts) over real loopback TCP: the flow code as the
// agent and the user daemon run it on a direct connection, the per-flow window, and what a broken or
// hostile peer gets.
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { socketPair } from '../agent/flow-socket.js';
import { waitFor } from '../command/wait.js';
import { createLogger, setLevel } from '../logging/logger.js';
import { isJoined, receivedWritten } from '../rpc/tunnel-codec.js';
import { dialTcp } from './dial.js';
import {
  dialTarget,
  FlowDialRejected,
  type FlowOutcome,
  openFlow,
  originate,
  readOpen,
  serveDial,
} from './flow.js';
import { connectFlowSocket, FlowConnectionPool } from './flow-pool.js';
import {
  FLOW_MAGIC,
  FlowWindowGroup,
  FramedCall,
  type FramedCallOptions,
  LONE_WINDOW_BYTES,
  WINDOW_BYTES,
} from './framed-call.js';
import { msg, streamInfo, type TunnelMessage } from './messages.js';
import { readSwitchOf } from './read-switch.js';
import { TunnelStream } from './stream.js';
import { framesOf } from './test/frames.js';

setLevel('error');

/**
 * A loopback connection: the opener's FramedCall, its socket, and the accepted socket (magic not yet
 * read).
 */
async function connected(options: FramedCallOptions = {}): Promise<{
  opener: FramedCall;
  socket: net.Socket;
  accepted: net.Socket;
  close(): void;
}> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const acceptedP = new Promise<net.Socket>((r) => server.once('connection', r));
  const socket = net.connect(port, '127.0.0.1');
  await new Promise((r) => socket.once('connect', r));
  const accepted = await acceptedP;
  server.close();
  const opener = FramedCall.open(socket, 'test', options);
  // close() ends the test's connection from outside: a failure the cases that look for one see themselves.
  opener.on('error', () => {});
  return {
    opener,
    socket,
    accepted,
    close: () => {
      socket.destroy();
      accepted.destroy();
    },
  };
}

/** Reads FLOW_MAGIC off the accepted socket, then wraps it (the rest of what came stays for the call). */
async function acceptFramed(socket: net.Socket, options: { reusable?: boolean } = {}): Promise<FramedCall> {
  const magic = await new Promise<Buffer>((resolve) => {
    const onReadable = () => {
      const b = socket.read(FLOW_MAGIC.length) as Buffer | null;
      if (b) {
        socket.off('readable', onReadable);
        resolve(b);
      }
    };
    socket.on('readable', onReadable);
  });
  assert.equal(magic, FLOW_MAGIC);
  const call = new FramedCall(socket, 'peer', options);
  call.on('error', () => {});
  return call;
}

function data(n: number, fill: number): TunnelMessage {
  return msg.data(Buffer.alloc(n, fill));
}

test('a flow runs on it as on a gRPC call: 4 MiB each way, half-close, byte-exact', async () => {
  const echo = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  const echoPort = (echo.address() as net.AddressInfo).port;
  // The originating side (the agent): a client socket whose connection the flow carries.
  const front = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
  const frontPort = (front.address() as net.AddressInfo).port;
  const c = await connected();
  try {
    const dialer = new TunnelStream(await acceptFramed(c.accepted));
    const info = streamInfo({ connId: undefined, sessionId: 's', relayId: 'r', dialTimeoutMs: 2000 });
    const served = readOpen(dialer, 2000).then((got) =>
      serveDial(dialer, got, (signal, onread) => dialTcp('127.0.0.1', echoPort, 2000, signal, onread)),
    );
    let originated: Promise<FlowOutcome> | undefined;
    front.once('connection', (s) => {
      originated = originate(s, new TunnelStream(c.opener), info);
    });
    const client = net.connect({ port: frontPort, host: '127.0.0.1', allowHalfOpen: true });
    const payload = crypto.randomBytes(4 << 20);
    const got: Buffer[] = [];
    client.on('data', (d: Buffer) => got.push(d));
    const ended = new Promise((r) => client.once('end', r));
    client.end(payload);
    await ended;
    assert.equal(Buffer.concat(got).equals(payload), true, 'the echo came back byte for byte');
    const outcome = await served;
    assert.equal(outcome.kind, 'closed');
    assert.equal((await originated!).kind, 'closed');
    client.destroy();
  } finally {
    c.close();
    echo.close();
    front.close();
  }
});

test('a large message that arrives in pieces is joined into pooled memory, reused only once its payload was written', async () => {
  const c = await connected();
  try {
    const receiver = await acceptFramed(c.accepted);
    const got: TunnelMessage[] = [];
    receiver.on('data', (m: TunnelMessage) => got.push(m));
    const sent = [0, 1, 2].map(() => crypto.randomBytes(600 << 10));
    c.opener.write(msg.data(sent[0]!));
    c.opener.write(msg.data(sent[1]!));
    await waitFor('two messages', async () => got.length === 2 || undefined, 5_000, 10);
    const [first, second] = got as [TunnelMessage, TunnelMessage];
    assert.ok(first.data.equals(sent[0]!) && second.data.equals(sent[1]!), 'both payloads byte for byte');
    assert.ok(
      isJoined(first.data) && isJoined(second.data),
      'each came in pieces (64 KiB reads) and was joined',
    );
    assert.is.not(second.data.buffer, first.data.buffer, 'memory still to be written is not taken');
    // The first payload was written (a Flow calls this from its socket's write callback): the next joined
    // message of that size lands in its memory.
    receivedWritten(first.data);
    assert.not.ok(isJoined(first.data));
    c.opener.write(msg.data(sent[2]!));
    await waitFor('the third message', async () => got.length === 3 || undefined, 5_000, 10);
    assert.is(got[2]!.data.buffer, first.data.buffer, "the first one's memory is reused");
    assert.ok(
      got[2]!.data.equals(sent[2]!) && second.data.equals(sent[1]!),
      'the third arrived intact; the second untouched',
    );
    // A small message is not pooled (Buffer's own, as before).
    c.opener.write(msg.data(crypto.randomBytes(1000)));
    await waitFor('the small message', async () => got.length === 4 || undefined, 5_000, 10);
    assert.not.ok(isJoined(got[3]!.data));
  } finally {
    c.close();
  }
});

test("a flow into an in-memory end (a personal intercept's) leaves the joined memory to its reader", async () => {
  const c = await connected();
  try {
    // The dialing side's "socket" is one end of agent/flow-socket.ts's pair; its reader keeps every chunk it
    // is given (as node:http may, queued on a slow client's socket) without copying it.
    const [theirs, ours] = socketPair();
    theirs.on('error', () => {});
    const got: Buffer[] = [];
    let gotBytes = 0;
    theirs.on('data', (d: Buffer) => {
      got.push(d);
      gotBytes += d.length;
    });
    const dialer = new TunnelStream(await acceptFramed(c.accepted));
    void readOpen(dialer, 2000).then((open) =>
      serveDial(dialer, open, async () => ours as unknown as net.Socket),
    );
    const origin = new TunnelStream(c.opener);
    origin.send(
      msg.open(streamInfo({ connId: undefined, sessionId: 's', relayId: 'r', dialTimeoutMs: 2000 })),
    );
    const answered = new Promise<TunnelMessage>((resolve) => origin.onMessage(resolve));
    assert.is((await answered).code, msg.dialOk().code, 'the far side dialed');
    const sent = [0, 1, 2, 3].map(() => crypto.randomBytes(600 << 10));
    // The first payload is in the reader's hands before the others arrive: a join reusing its memory would
    // overwrite what the reader holds.
    origin.send(msg.data(sent[0]!));
    await waitFor('the first payload read', async () => gotBytes >= sent[0]!.length || undefined, 5_000, 10);
    for (const b of sent.slice(1)) origin.send(msg.data(b));
    await waitFor('all read', async () => gotBytes >= 4 * sent[0]!.length || undefined, 5_000, 10);
    assert.ok(
      Buffer.concat(got).equals(Buffer.concat(sent)),
      'byte for byte, none overwritten by a later join',
    );
  } finally {
    c.close();
  }
});

test('the window: a receiver that stops taking stops its sender after WINDOW_BYTES, then all arrives', async () => {
  const c = await connected();
  try {
    const receiver = await acceptFramed(c.accepted);
    receiver.pause();
    const received: TunnelMessage[] = [];
    receiver.on('data', (m: TunnelMessage) => received.push(m));
    const MESSAGE = 256 << 10;
    const COUNT = 24; // 6 MiB: three windows
    let written = 0;
    for (let i = 0; i < COUNT; i++) c.opener.write(data(MESSAGE, i), () => written++);
    // Everything the window allows reaches the wire; the rest waits with the sender.
    await waitFor(
      'the window was sent',
      () => written >= Math.floor(WINDOW_BYTES / (MESSAGE + 16)),
      5000,
      20,
    );
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(written * MESSAGE <= WINDOW_BYTES, `${written} messages went out past a paused receiver`);
    assert.equal(received.length, 0, 'a paused receiver delivers nothing');
    receiver.resume();
    await waitFor('every message arrived', () => received.length === COUNT, 5000, 20);
    assert.equal(
      received.map((m) => m.data[0]),
      Array.from({ length: COUNT }, (_, i) => i),
      'in order',
    );
    assert.equal(written, COUNT);
  } finally {
    c.close();
  }
});

test("each message's written callback runs once, in order; those the stream could not write get its error", async () => {
  const c = await connected();
  try {
    const receiver = await acceptFramed(c.accepted);
    const received: TunnelMessage[] = [];
    receiver.on('data', (m: TunnelMessage) => received.push(m));
    const calls: [number, boolean][] = [];
    const sizes = [10, 300_000, 20, 1 << 20, 30, 5, 70_000];
    for (const [i, n] of sizes.entries()) c.opener.write(data(n, i), (e) => calls.push([i, !e]));
    await waitFor('every message arrived', () => received.length === sizes.length, 5000, 20);
    await waitFor('every callback ran', () => calls.length === sizes.length, 5000, 20);
    assert.equal(
      calls,
      sizes.map((_, i) => [i, true]),
      'once each, in order, without an error',
    );
    // The byte stream is gone: what is written now fails, each callback once, in order.
    c.socket.destroy();
    const late: [number, boolean][] = [];
    for (let i = 0; i < 3; i++) c.opener.write(data(100, i), (e) => late.push([i, !e]));
    await waitFor('the late callbacks ran', () => late.length === 3, 5000, 20);
    assert.equal(late, [
      [0, false],
      [1, false],
      [2, false],
    ]);
  } finally {
    c.close();
  }
});

/** The bytes sentToPaused queues: twice the largest window. */
const QUEUED = LONE_WINDOW_BYTES * 2;

/**
 * How many bytes of QUEUED, in 256 KiB messages, `sender` puts on the wire to a `receiver` that takes
 * nothing: written until no more go for a while (each write's callback runs once the byte stream took its
 * frame).
 */
async function sentToPaused(sender: FramedCall, receiver: FramedCall, fill: number): Promise<number> {
  const MESSAGE = 256 << 10;
  receiver.pause();
  let written = 0;
  for (let i = 0; i < QUEUED / MESSAGE; i++)
    sender.write(data(MESSAGE, fill), (e) => {
      if (!e) written += MESSAGE;
    });
  let last = -1;
  while (written !== last) {
    last = written;
    await new Promise((r) => setTimeout(r, 150));
  }
  return written;
}

/** Lets `receiver` take what sentToPaused queued to it, and waits until all of it came. */
async function drain(receiver: FramedCall): Promise<void> {
  let got = 0;
  const count = (m: TunnelMessage) => {
    got += m.data.length;
  };
  receiver.on('data', count);
  receiver.resume();
  await waitFor('the rest arrived', () => got >= QUEUED, 5000, 20);
  receiver.off('data', count);
}

test("windows: a workstation's only flow gets LONE_WINDOW_BYTES both ways from a peer that takes them; with a second flow WINDOW_BYTES, and back when it ends", async () => {
  const windows = new FlowWindowGroup();
  const one = await connected({ windows, peerTakesWindows: true });
  const two = await connected({ windows, peerTakesWindows: true });
  try {
    const far1 = await acceptFramed(one.accepted);
    await acceptFramed(two.accepted);
    assert.is(windows.size, 2);
    // Two flows: each side of the first holds the other to WINDOW_BYTES (the far side granted more).
    let toWorkstation = await sentToPaused(far1, one.opener, 1);
    assert.ok(toWorkstation <= WINDOW_BYTES, `${toWorkstation} bytes sent to a paused workstation`);
    let toCluster = await sentToPaused(one.opener, far1, 2);
    assert.ok(toCluster <= WINDOW_BYTES, `${toCluster} bytes sent to a paused far side`);
    await drain(one.opener);
    await drain(far1);
    // The second flow ends: the first is alone, and 8 MiB may be in flight each way.
    two.opener.cancel('done');
    assert.is(windows.size, 1);
    toWorkstation = await sentToPaused(far1, one.opener, 3);
    assert.ok(toWorkstation > WINDOW_BYTES * 2, `only ${toWorkstation} bytes sent to a paused workstation`);
    assert.ok(toWorkstation <= LONE_WINDOW_BYTES, `${toWorkstation} bytes sent past the lone window`);
    toCluster = await sentToPaused(one.opener, far1, 4);
    assert.ok(toCluster > WINDOW_BYTES * 2, `only ${toCluster} bytes sent to a paused far side`);
    assert.ok(toCluster <= LONE_WINDOW_BYTES, `${toCluster} bytes sent past the lone window`);
  } finally {
    one.close();
    two.close();
  }
  await waitFor('both flows left the group', () => windows.size === 0, 2000, 20);
});

test('windows: a peer not known to take WINDOW frames gets none, and each side keeps WINDOW_BYTES', async () => {
  for (const peerTakesWindows of [false, true]) {
    const windows = new FlowWindowGroup();
    const c = await connected({ windows, peerTakesWindows });
    try {
      // The first frame on the wire after the magic: WINDOW (type 4, 8 MiB) only for a peer that takes it.
      c.opener.write(data(10, 1));
      const first = await new Promise<Buffer>((resolve) => {
        const chunks: Buffer[] = [];
        c.accepted.on('data', (b: Buffer) => {
          chunks.push(b);
          const all = Buffer.concat(chunks);
          if (all.length >= FLOW_MAGIC.length + 9) resolve(all.subarray(FLOW_MAGIC.length));
        });
      });
      if (peerTakesWindows) {
        assert.is(first[0], 4, 'a WINDOW frame first');
        assert.is(first.readUInt32BE(5), LONE_WINDOW_BYTES);
      } else assert.is(first[0], 0, 'the message first: no WINDOW frame to an older peer');
      // A far side that never credits (it answers no WINDOW): the opener stops at WINDOW_BYTES.
      let written = 0;
      for (let i = 0; i < 32; i++) c.opener.write(data(256 << 10, 2), () => (written += 256 << 10));
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(written <= WINDOW_BYTES, `${written} bytes sent to a far side that granted no window`);
      assert.ok(written >= WINDOW_BYTES / 2, `only ${written} bytes sent`);
    } finally {
      c.close();
    }
  }
});

test('half-close: END from one side leaves the other free to send; the byte stream closes after both', async () => {
  const c = await connected();
  try {
    const b = await acceptFramed(c.accepted);
    const got: TunnelMessage[] = [];
    const ends: string[] = [];
    c.opener.on('data', (m: TunnelMessage) => got.push(m));
    c.opener.on('end', () => ends.push('opener saw end'));
    b.on('end', () => ends.push('acceptor saw end'));
    c.opener.on('error', (e: Error) => ends.push(`opener error ${e.message}`));
    b.on('error', (e: Error) => ends.push(`acceptor error ${e.message}`));
    c.opener.end();
    await waitFor('the END arrived', () => ends.includes('acceptor saw end'), 2000, 20);
    b.write(data(10, 7));
    b.end();
    await waitFor("the other side's END arrived", () => ends.includes('opener saw end'), 2000, 20);
    assert.equal(got.length, 1, 'a message sent after the peer ended arrives');
    await waitFor('the byte stream closed', () => c.accepted.destroyed, 2000, 20);
    assert.equal(
      ends.filter((e) => e.includes('error')),
      [],
      'a clean end is no failure',
    );
  } finally {
    c.close();
  }
});

test('a peer that cancels, sends garbage or vanishes fails the flow with the reason', async () => {
  {
    const c = await connected();
    const b = await acceptFramed(c.accepted);
    const failed = new Promise<Error>((r) => b.once('error', r));
    c.opener.cancel('the workstation is leaving');
    assert.match((await failed).message, 'the peer cancelled the flow: the workstation is leaving');
    c.close();
  }
  {
    const c = await connected();
    const b = await acceptFramed(c.accepted);
    const failed = new Promise<Error>((r) => b.once('error', r));
    const opener = new Promise<Error>((r) => c.opener.once('error', r));
    // A frame of type 9 and 4 GiB: refused before anything is buffered for it.
    c.socket.write(Buffer.from([9, 0xff, 0xff, 0xff, 0xff]));
    assert.match((await failed).message, 'malformed flow frame (type 9');
    assert.match((await opener).message, 'the peer cancelled the flow: malformed flow frame');
    c.close();
  }
  {
    const c = await connected();
    const b = await acceptFramed(c.accepted);
    const failed = new Promise<Error>((r) => b.once('error', r));
    const opener = new Promise<Error>((r) => c.opener.once('error', r));
    // A window of 1,000 bytes (below a credit batch: the flow would crawl).
    c.socket.write(Buffer.from([4, 0, 0, 0, 4, 0, 0, 0x03, 0xe8]));
    assert.match((await failed).message, 'malformed flow frame (a window of 1000 bytes)');
    assert.match((await opener).message, 'the peer cancelled the flow: malformed flow frame');
    c.close();
  }
  {
    const c = await connected();
    const b = await acceptFramed(c.accepted);
    const failed = new Promise<Error>((r) => b.once('error', r));
    c.opener.write(data(10, 1));
    c.socket.destroy();
    assert.match((await failed).message, /the connection (ended|closed)/);
    c.close();
  }
});

test('a far side that answered before originate(): its queued DIAL_OK starts the pump, no dial timeout', async () => {
  const app = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.end('hello from the far side');
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  const appPort = (app.address() as net.AddressInfo).port;
  const front = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
  const c = await connected();
  try {
    // The agent's side: OPEN is read, then it waits (as for its client) while DIAL_OK arrives and queues.
    const agentSide = new TunnelStream(await acceptFramed(c.accepted));
    const info = streamInfo({ connId: undefined, sessionId: 's', relayId: 'r', dialTimeoutMs: 1500 });
    const opened = readOpen(agentSide, 2000);
    const served = dialTarget(new TunnelStream(c.opener), info, { host: '127.0.0.1', port: appPort });
    const got = await opened;
    await waitFor('the far side to dial', () => served !== undefined, 1000, 20);
    await new Promise((r) => setTimeout(r, 300));
    const accepted = new Promise<net.Socket>((r) => front.once('connection', r));
    const client = net.connect({ port: (front.address() as net.AddressInfo).port, host: '127.0.0.1' });
    const outcome = originate(await accepted, agentSide, got, { openedByFarSide: true, earlyData: true });
    const reply: Buffer[] = [];
    client.on('data', (d: Buffer) => reply.push(d));
    await new Promise((r) => client.once('end', r));
    client.end();
    assert.is(Buffer.concat(reply).toString(), 'hello from the far side');
    assert.is((await outcome).kind, 'closed', 'not rejected by the dial timer');
    client.destroy();
  } finally {
    c.close();
    app.close();
    front.close();
  }
});

test('a flow whose far side never answers its OPEN gives the connection up: closed, not handed back for the next flow', async () => {
  const c = await connected({ reusable: true });
  try {
    // The far side reads the OPEN and answers nothing (a port-forward stream the kubelet never connected
    // behaves alike: nothing comes back).
    const far = new TunnelStream(await acceptFramed(c.accepted, { reusable: true }));
    const info = streamInfo({ connId: undefined, sessionId: 's', dialTimeoutMs: 100 });
    let reusable = false;
    c.opener.once('reusable', () => {
      reusable = true;
    });
    const opened = readOpen(far, 2000);
    const e = await openFlow(new TunnelStream(c.opener), info, 100).then(
      () => undefined,
      (err: Error) => err,
    );
    await opened;
    assert.ok(e instanceof FlowDialRejected, String(e));
    assert.match(e!.message, /did not answer within 200 ms/);
    await waitFor('the connection to close', () => c.socket.destroyed || undefined, 5000, 20);
    assert.is(reusable, false, 'not handed back for a next flow');
  } finally {
    c.close();
  }
});

test('reusable: after both ENDs the byte stream carries the next call, bytes right behind the END included', async () => {
  const c = await connected({ reusable: true });
  try {
    const opener1 = c.opener;
    const acceptor1 = await acceptFramed(c.accepted, { reusable: true });
    for (const call of [opener1, acceptor1]) call.on('error', (e: Error) => assert.unreachable(e.message));
    const openerFree = new Promise((r) => opener1.once('reusable', r));
    const acceptorFree = new Promise((r) => acceptor1.once('reusable', r));
    // The accepting side ends first; the opener's END and its next call's first message then arrive
    // together, and the accepting side's next call must get that message.
    acceptor1.end();
    await new Promise((r) => opener1.once('end', r));
    opener1.end();
    await openerFree;
    const opener2 = new FramedCall(c.socket, 'agent', { reusable: true });
    opener2.on('error', () => {}); // the end of the case closes the connection
    opener2.write(data(5, 42));
    await acceptorFree;
    const acceptor2 = new FramedCall(c.accepted, 'workstation', { reusable: true });
    acceptor2.on('error', () => {});
    const m = await new Promise<TunnelMessage>((r) => acceptor2.once('data', r));
    assert.equal([...m.data], [42, 42, 42, 42, 42]);
    // And the other way on the reused connection.
    const back = new Promise<TunnelMessage>((r) => opener2.once('data', r));
    acceptor2.write(data(3, 7));
    assert.equal([...(await back).data], [7, 7, 7]);
    assert.is(c.socket.destroyed || c.accepted.destroyed, false, 'one connection throughout');
  } finally {
    c.close();
  }
});

test('a flow connection the workstation opens (connectFlowSocket) reads large messages into their memory: every size byte for byte, in order, across reused calls, with bytes read before a call took over', async () => {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const acceptedP = new Promise<net.Socket>((r) => server.once('connection', r));
  const socket = await connectFlowSocket('127.0.0.1', (server.address() as net.AddressInfo).port);
  const accepted = await acceptedP;
  server.close();
  // A call failing before the case ends its connection fails the case.
  let ending = false;
  const failOnError = (call: FramedCall) =>
    call.on('error', (e: Error) => {
      if (!ending) assert.unreachable(e.message);
    });
  try {
    assert.ok(readSwitchOf(socket), 'created with a ReadSwitch, so a call can take its reads');
    const sender1 = await acceptFramed(accepted, { reusable: true });
    const receiver1 = new FramedCall(socket, 'manager', { reusable: true });
    failOnError(receiver1);
    const got: TunnelMessage[] = [];
    receiver1.on('data', (m: TunnelMessage) => got.push(m));
    // Sizes around the edges: below and at the pooled size (64 KiB), a read's size, pieces, the largest.
    const sizes = [1, 70_000, 100, 65_536, 1 << 20, 0, 600_000, 3, 1 << 20, 131_072, 65_535, 5000];
    const sent = sizes.map((n) => crypto.randomBytes(n));
    for (const b of sent) sender1.write(msg.data(b));
    await waitFor(
      `${sent.length} messages (got ${got.length})`,
      () => got.length === sent.length || undefined,
      10_000,
      10,
    );
    for (const [i, m] of got.entries()) {
      assert.ok(m.data.equals(sent[i]!), `message ${i} (${sizes[i]} bytes) byte for byte`);
    }
    assert.ok(isJoined(got[4]!.data), 'a large message landed in pooled memory');

    // Both end, and the connection waits in the pool (which reads what arrives meanwhile). The peer's next
    // call has begun a large message: its first 300,000 bytes were read while it waited, the rest comes
    // once a call took the reads. The next call reads both, in order.
    const free = Promise.all([
      new Promise((r) => receiver1.once('reusable', r)),
      new Promise((r) => sender1.once('reusable', r)),
    ]);
    sender1.end();
    receiver1.end();
    await free;
    const pool = new FlowConnectionPool<net.Socket>({
      connect: () => Promise.reject(new Error('no new connection in this case')),
      what: 'test',
      log: createLogger('test'),
      spare: false,
    });
    pool.release(socket);
    const big = crypto.randomBytes((1 << 20) - 100);
    const after = crypto.randomBytes(200_000);
    const frames = framesOf([msg.data(big), msg.data(after)]);
    const cut = 300_000;
    const readBefore = socket.bytesRead;
    accepted.write(frames.subarray(0, cut));
    await waitFor(
      'the first bytes to be read while the connection waits in the pool',
      () => socket.bytesRead >= readBefore + cut || undefined,
      5_000,
      10,
    );
    const { connection } = await pool.open();
    assert.is(connection, socket, 'the pool hands the same connection back');
    const receiver2 = new FramedCall(connection, 'manager', { reusable: true });
    failOnError(receiver2);
    const got2: TunnelMessage[] = [];
    receiver2.on('data', (m: TunnelMessage) => got2.push(m));
    accepted.write(frames.subarray(cut));
    await waitFor('both messages on the reused connection', () => got2.length === 2 || undefined, 10_000, 10);
    assert.ok(got2[0]!.data.equals(big), 'the message begun before the call took the reads, byte for byte');
    assert.ok(got2[1]!.data.equals(after), 'and the next one');
    pool.close();
    const sender2 = new FramedCall(accepted, 'workstation', { reusable: true });
    failOnError(sender2);
    // And back the other way on the same connection.
    const back = new Promise<TunnelMessage>((r) => sender2.once('data', r));
    const up = crypto.randomBytes(300_000);
    receiver2.write(msg.data(up));
    assert.ok((await back).data.equals(up), 'the other way, byte for byte');
    assert.is(socket.destroyed || accepted.destroyed, false, 'one connection throughout');
  } finally {
    ending = true;
    socket.destroy();
    accepted.destroy();
  }
});

test.run();
