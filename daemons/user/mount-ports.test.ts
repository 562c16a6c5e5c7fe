// LocalMountPorts on real loopback sockets: each connection to the port goes to the flow opener (here a
// stand-in that echoes, where the daemon opens a mount flow to the agent); a taken port is refused with a
// message naming it; close() ends the connections and frees the port.
import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LocalMountPorts } from './mount-ports.js';

/** A free loopback port (listened on and released). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Connects, sends `text`, resolves with what comes back before the connection ends. */
function exchange(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1', () => c.end(text));
    let got = '';
    c.setEncoding('utf8').on('data', (d: string) => {
      got += d;
    });
    c.on('close', () => resolve(got));
    c.on('error', reject);
  });
}

test('each connection is one flow; a taken port is named; close() frees the port', async () => {
  const ports = new LocalMountPorts();
  const port = await freePort();
  const opened: string[] = [];
  await ports.serve('echo', port, false, (socket) => {
    opened.push('flow');
    socket.pipe(socket); // the stand-in flow: what the mounter sends comes back
    return new Promise((resolve) =>
      socket.on('close', () => resolve({ kind: 'closed', bytesIn: 0, bytesOut: 0 })),
    );
  });
  try {
    assert.equal(ports.portOf('echo'), { port, readWrite: false });
    assert.equal(ports.names(), ['echo']);
    assert.is(await exchange(port, 'SSH_FXP_INIT'), 'SSH_FXP_INIT');
    assert.is(await exchange(port, 'again'), 'again');
    assert.is(opened.length, 2);

    const other = new LocalMountPorts();
    try {
      await other.serve('second', port, true, () => Promise.reject(new Error('not reached')));
      assert.unreachable('the taken port was accepted');
    } catch (e) {
      assert.match((e as Error).message, `127.0.0.1:${port} is in use: choose another --local-mount-port`);
    }
    assert.equal(other.names(), []);

    // A connection open when the port closes ends with it.
    const held = net.connect(port, '127.0.0.1');
    await new Promise((r) => held.once('connect', r));
    const ended = new Promise((r) => held.once('close', r));
    await ports.close('echo');
    await ended;
    assert.equal(ports.names(), []);
    assert.is(ports.portOf('echo'), undefined);
    const refused = await new Promise<string>((r) =>
      net
        .connect(port, '127.0.0.1')
        .on('connect', () => r('open'))
        .on('error', (e: NodeJS.ErrnoException) => r(e.code ?? e.message)),
    );
    assert.is(refused, 'ECONNREFUSED');
  } finally {
    await ports.closeAll();
  }
});

test.run();
