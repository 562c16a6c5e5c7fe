// Bytes through a real intercept (client -> agent -> manager -> user daemon -> local app): 100 MiB each
// way, byte-exact; half-close honoured end to end.
import * as crypto from 'node:crypto';
import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../../command/wait.js';
import { freePorts } from '../../testbed/loopback.js';
import { httpApp, httpGet, withRig } from './harness.js';

const MiB = 1 << 20;

/** A deterministic pseudo-random byte stream (AES-CTR over zeros): distinct blocks, cheap to make twice. */
function keystream(seed: string): (n: number) => Buffer {
  const key = crypto.createHash('sha256').update(seed).digest().subarray(0, 16);
  const cipher = crypto.createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  return (n) => cipher.update(Buffer.alloc(n));
}

/** The "laptop" app: reads until the client's FIN, answers "<sha256> <bytes>\n", then sends `download` bytes. */
async function hashingApp(port: number, download: number): Promise<net.Server> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    const hash = crypto.createHash('sha256');
    let bytes = 0;
    s.on('error', () => {});
    s.on('data', (d) => {
      hash.update(d);
      bytes += d.length;
    });
    s.on('end', () => {
      s.write(`${hash.digest('hex')} ${bytes}\n`);
      const next = keystream('download');
      let left = download;
      const pump = () => {
        while (left > 0) {
          const n = Math.min(MiB, left);
          left -= n;
          if (!s.write(next(n))) return void s.once('drain', pump);
        }
        s.end();
      };
      pump();
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return server;
}

/** Sends `upload` bytes, half-closes, reads the whole answer. */
function exchange(port: number, upload: number): Promise<{ header: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    s.on('data', (d) => chunks.push(d));
    s.on('error', reject);
    s.on('end', () => {
      const all = Buffer.concat(chunks);
      const nl = all.indexOf(10);
      resolve({ header: all.subarray(0, nl).toString(), body: all.subarray(nl + 1) });
    });
    s.on('connect', () => {
      const next = keystream('upload');
      let left = upload;
      const pump = () => {
        while (left > 0) {
          const n = Math.min(MiB, left);
          left -= n;
          if (!s.write(next(n))) return void s.once('drain', pump);
        }
        s.end(); // half-close: the app answers only after this
      };
      pump();
    });
  });
}

function expectedHash(seed: string, n: number): string {
  const next = keystream(seed);
  const h = crypto.createHash('sha256');
  for (let left = n; left > 0; left -= MiB) h.update(next(Math.min(MiB, left)));
  return h.digest('hex');
}

test('100 MiB each way through an intercept, byte-exact; half-close carried end to end', () =>
  withRig(async (rig) => {
    const [managerPort, appPort, laptopPort, agentPort] = await freePorts(4);
    const ports = { manager: managerPort, app: appPort, laptop: laptopPort, agent: agentPort };
    const cluster = await httpApp(ports.app, 'cluster');
    const laptop = await hashingApp(ports.laptop, 100 * MiB);
    rig.closeWith(async () => {
      await cluster.close();
      laptop.close();
    });
    rig.env.TP_LOG_LEVEL = 'info';
    await rig.startManager(ports.manager);
    rig.startAgent(ports.manager, ports.app, ports.agent);
    await waitFor('passthrough', () => httpGet(ports.agent));
    assert.is((await rig.tp('connect', '--manager-address', `127.0.0.1:${ports.manager}`)).code, 0);
    await rig.noteDaemon();
    await waitFor(
      'the agent in tp list',
      async () => (await rig.tpJson<{ workloads: unknown[] }>('list')).workloads.length > 0,
    );
    const i = await rig.tp('intercept', 'echo', '--port', `${ports.laptop}:${ports.app}`);
    assert.is(i.code, 0, i.stderr);

    // A small request first: the client shuts its write side and still gets the whole answer.
    const small = await exchange(ports.agent, 11);
    assert.is(small.header, `${expectedHash('upload', 11)} 11`);
    assert.is(small.body.length, 100 * MiB);

    const big = await exchange(ports.agent, 100 * MiB);
    assert.is(
      big.header,
      `${expectedHash('upload', 100 * MiB)} ${100 * MiB}`,
      'the app got the 100 MiB upload intact',
    );
    assert.is(big.body.length, 100 * MiB);
    assert.is(
      crypto.createHash('sha256').update(big.body).digest('hex'),
      expectedHash('download', 100 * MiB),
      'the 100 MiB download arrived intact',
    );
    assert.is((await rig.tp('quit')).code, 0);
  }));

test.run();
