import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger, setLevel } from '../../../logging/logger.js';
import { SpdyTestClient } from '../test/spdy-client.js';
import { StreamPairer, servePortForward } from './port-forward.js';
import { SpdySession } from './spdy-session.js';

const log = createLogger('test');
setLevel('warn');
const stream = (id: number, headers: Record<string, string>) => ({ id, headers });

test('error and data streams pair by requestid, in either order', () => {
  const pairer = new StreamPairer<{ id: number; headers: Record<string, string> }>();
  assert.equal(pairer.accept(stream(1, { streamtype: 'error', port: '80', requestid: '0' })), {
    kind: 'waiting',
    requestId: '0',
    isNew: true,
  });
  const second = pairer.accept(stream(3, { streamtype: 'data', port: '80', requestid: '1' }));
  assert.is(second.kind, 'waiting');
  const paired = pairer.accept(stream(5, { streamtype: 'data', port: '80', requestid: '0' }));
  assert.is(paired.kind, 'paired');
  if (paired.kind === 'paired') {
    assert.is(paired.pair.error.id, 1);
    assert.is(paired.pair.data.id, 5);
    assert.is(paired.pair.port, 80);
  }
  assert.is(pairer.pendingCount, 1);
});

test('without requestid (old clients) the data stream pairs with the error stream two ids before', () => {
  const pairer = new StreamPairer<{ id: number; headers: Record<string, string> }>();
  pairer.accept(stream(1, { streamtype: 'error', port: '8080' }));
  const paired = pairer.accept(stream(3, { streamtype: 'data', port: '8080' }));
  assert.is(paired.kind, 'paired');
});

test('bad port or stream type is rejected; a second stream of one type is a duplicate', () => {
  const pairer = new StreamPairer<{ id: number; headers: Record<string, string> }>();
  assert.is(pairer.accept(stream(1, { streamtype: 'data', port: '0' })).kind, 'rejected');
  assert.is(pairer.accept(stream(3, { streamtype: 'data', port: 'http' })).kind, 'rejected');
  assert.is(pairer.accept(stream(5, { streamtype: 'data' })).kind, 'rejected');
  assert.is(pairer.accept(stream(7, { streamtype: 'resize', port: '80' })).kind, 'rejected');
  pairer.accept(stream(9, { streamtype: 'error', port: '80', requestid: '4' }));
  const dup = pairer.accept(stream(11, { streamtype: 'error', port: '80', requestid: '4' }));
  assert.is(dup.kind, 'duplicate');
  if (dup.kind === 'duplicate') assert.match(dup.message, /error stream already assigned/);
});

/** The session, a test client, and a TCP "pod" on loopback. */
async function setup(podHandler: (socket: net.Socket) => void) {
  const pod = net.createServer(podHandler);
  await new Promise<void>((resolve) => pod.listen(0, '127.0.0.1', resolve));
  const podPort = (pod.address() as net.AddressInfo).port;
  const kubelet = net.createServer((socket) => {
    const session = new SpdySession(socket, { log });
    servePortForward(
      session,
      { podName: 'default/echo', podUid: 'uid-1', dial: (port) => net.connect({ host: '127.0.0.1', port }) },
      log,
    );
  });
  await new Promise<void>((resolve) => kubelet.listen(0, '127.0.0.1', resolve));
  const socket = net.connect((kubelet.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  const client = new SpdyTestClient(socket);
  return {
    client,
    podPort,
    close: () => {
      client.destroy();
      kubelet.close();
      pod.close();
    },
  };
}

test('a forwarded connection reaches the pod port; both streams end with FIN, the error stream empty', async () => {
  const s = await setup((socket) => {
    socket.once('data', (d) => socket.end(`pod got ${d}`));
  });
  try {
    const headers = { port: String(s.podPort), requestid: '0' };
    const error = await s.client.openStream({ ...headers, streamtype: 'error' });
    error.end(); // the client closes its side of the error stream at once, as kubectl does
    const data = await s.client.openStream({ ...headers, streamtype: 'data' });
    data.write('hello');
    await data.closed();
    await error.closed();
    assert.is(data.text, 'pod got hello');
    assert.ok(error.remoteFin, 'the error stream is FIN-ed: kubectl reads it to EOF');
    assert.is(error.text, '');
  } finally {
    s.close();
  }
});

test('a refused pod port is reported on the error stream, naming pod and port', async () => {
  const s = await setup(() => {});
  try {
    const closed = net.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const deadPort = (closed.address() as net.AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const headers = { port: String(deadPort), requestid: '7' };
    const error = await s.client.openStream({ ...headers, streamtype: 'error' });
    const data = await s.client.openStream({ ...headers, streamtype: 'data' });
    await error.closed();
    await data.closed();
    assert.match(
      error.text,
      new RegExp(`error forwarding port ${deadPort} to pod default/echo, uid uid-1:.*ECONNREFUSED`),
    );
  } finally {
    s.close();
  }
});

test('parallel connections on one session stay separate', async () => {
  const s = await setup((socket) => {
    socket.on('data', (d) => socket.end(d.toString().toUpperCase()));
  });
  try {
    const results = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const headers = { port: String(s.podPort), requestid: String(i) };
        const error = await s.client.openStream({ ...headers, streamtype: 'error' });
        const data = await s.client.openStream({ ...headers, streamtype: 'data' });
        data.write(`conn-${i}`);
        await data.closed();
        await error.closed();
        return data.text;
      }),
    );
    assert.equal(
      results,
      Array.from({ length: 10 }, (_, i) => `CONN-${i}`),
    );
  } finally {
    s.close();
  }
});

test.run();
