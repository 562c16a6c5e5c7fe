// Issue 15 acceptance: personal intercepts on a real cluster. Two workstations (two tp sessions with their
// own run directories in the lab's workstation namespace) intercept the same workload port, alice with
// `x-dev: alice` and bob with `x-dev: bob`; a client pod sends HTTP/1.1 (curl, keep-alive), h2c and gRPC
// (wire format over node:http2) requests with each header and without; every answer must come from the
// right party. The app in the pod and both workstations' apps speak HTTP/1.1 and h2c on one port.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as assert from 'uvu/assert';
import {
  apply,
  type Background,
  execInPod,
  freshNamespace,
  kubectl,
  MANAGER_NS,
  rolloutStatus,
  startClientPod,
  startOnWorkstation,
  type TpRunner,
  tpOnWorkstation,
  waitFor,
} from './kube.js';
import { afterSetup, clusterSuite } from './suite.js';
import { deployment } from './workloads.js';

const NS = 'tp-e2e-personal';
const APP_PORT = 8080;
const ALICE_PORT = 18190;
const BOB_PORT = 18191;

const { test, cluster } = await clusterSuite('personal intercepts');

/** BIG_BYTES of bytes no two parties share, from a hash chain: each end computes them alike. */
const BIG_BYTES = 4 << 20;
const bigBodySource = `function bigBody(who, hashes = require('node:crypto')) {
  const out = Buffer.alloc(${BIG_BYTES});
  let h = Buffer.from(who);
  for (let o = 0; o < out.length; o += 32) {
    h = hashes.createHash('sha256').update(h).digest();
    h.copy(out, o);
  }
  return out;
}`;
const bigBody = new Function(`${bigBodySource}; return bigBody;`)() as (
  who: string,
  hashes: typeof crypto,
) => Buffer;

/**
 * Source (CommonJS, `node -e`) of a party: HTTP/1.1 and h2c on one port; answers its name; a gRPC request
 * (content-type application/grpc) gets one length-prefixed message with the name and grpc-status 0 in the
 * trailers. Prints `REQ <x-dev or -> <path>` per request, so a test can tell what reached it.
 */
function partySource(who: string, port: number, host: string): string {
  return `
const http = require('node:http');
const http2 = require('node:http2');
const net = require('node:net');
const { Duplex } = require('node:stream');
const handler = (req, res) => {
  console.log('REQ ' + (req.headers['x-dev'] || '-') + ' ' + req.url);
  req.resume();
  req.on('end', () => {
    if (String(req.headers['content-type']).startsWith('application/grpc')) {
      const msg = Buffer.from(${JSON.stringify(who)});
      const frame = Buffer.alloc(5 + msg.length);
      frame.writeUInt32BE(msg.length, 1);
      msg.copy(frame, 5);
      res.setHeader('content-type', 'application/grpc');
      res.addTrailers({ 'grpc-status': '0' });
      return res.end(frame);
    }
    if (req.url === '/big') return res.end(bigBody(${JSON.stringify(who)}));
    res.end(${JSON.stringify(who)});
  });
};
${bigBodySource}
const h1 = http.createServer(handler);
const h2 = http2.createServer(handler);
// node:http2 reads a socket's handle directly and would miss the bytes already read: replay them.
function replay(socket, head) {
  const d = new Duplex({
    read() { socket.resume(); },
    write(chunk, _e, cb) { socket.write(chunk, cb); },
    final(cb) { socket.end(); cb(); },
  });
  d.push(head);
  socket.on('data', (c) => { if (!d.push(c)) socket.pause(); });
  socket.on('end', () => d.push(null));
  socket.on('close', () => d.destroy());
  socket.on('error', () => d.destroy());
  return d;
}
net.createServer((s) => {
  s.once('data', (d) => {
    s.pause();
    if (d.subarray(0, 3).toString() === 'PRI') return h2.emit('connection', replay(s, d));
    s.unshift(d);
    h1.emit('connection', s);
    s.resume();
  });
}).listen(${port}, ${JSON.stringify(host)}, () => console.log(${JSON.stringify(`${who} listening`)}));
`;
}

/**
 * Source of the client pod's checks: 200 HTTP/1.1 requests interleaved over 10 keep-alive connections,
 * 50 h2c streams on one connection, and a gRPC call with metadata, each kind with x-dev alice, bob and
 * none. Prints {"wrong": [...], "h1Sockets": n, "grpc": {...}}.
 */
const clientChecksSource = (base: string) => `
const http = require('node:http');
const http2 = require('node:http2');
const kinds = ['alice', 'bob', undefined];
const expect = (k) => k || 'app';
const wrong = [];
const agent = new http.Agent({ keepAlive: true, maxSockets: 10 });
const sockets = new Set();
const get = (i) => new Promise((resolve) => {
  const k = kinds[i % 3];
  const req = http.get(${JSON.stringify(base)} + '/h1/' + i, { agent, timeout: 10000, headers: k ? { 'x-dev': k } : {} }, (res) => {
    let b = '';
    res.on('data', (d) => { b += d; });
    res.on('end', () => { if (b !== expect(k)) wrong.push('h1 ' + i + ' ' + (k || '-') + ' -> ' + b); resolve(); });
  });
  req.on('socket', (s) => sockets.add(s));
  req.on('timeout', () => req.destroy(new Error('timeout')));
  req.on('error', (e) => { wrong.push('h1 ' + i + ' ' + e.message); resolve(); });
});
const stream = (session, i, headers, grpc) => new Promise((resolve) => {
  const s = session.request({ ':method': 'POST', ':path': grpc ? '/tp.test.Echo/Who' : '/h2/' + i, ...headers });
  const chunks = [];
  let trailers = {};
  s.on('data', (d) => chunks.push(d));
  s.on('trailers', (t) => { trailers = t; });
  s.on('end', () => {
    const body = Buffer.concat(chunks);
    resolve({ body: grpc ? body.subarray(5).toString() : body.toString(), status: trailers['grpc-status'] });
  });
  s.on('error', (e) => resolve({ body: 'error ' + e.message }));
  s.end(grpc ? Buffer.alloc(5) : 'x');
});
(async () => {
  await Promise.all(Array.from({ length: 200 }, (_, i) => get(i)));
  agent.destroy();
  const session = http2.connect(${JSON.stringify(base)});
  session.on('error', (e) => wrong.push('h2 session ' + e.message));
  const h2 = await Promise.all(Array.from({ length: 50 }, (_, i) => {
    const k = kinds[i % 3];
    return stream(session, i, k ? { 'x-dev': k } : {}).then((r) => { if (r.body !== expect(k)) wrong.push('h2 ' + i + ' ' + (k || '-') + ' -> ' + r.body); });
  }));
  const grpc = {};
  for (const k of kinds) {
    const r = await stream(session, 0, { 'content-type': 'application/grpc', te: 'trailers', ...(k ? { 'x-dev': k } : {}) }, true);
    grpc[k || 'none'] = r.body + ' status ' + r.status;
  }
  session.close();
  console.log(JSON.stringify({ wrong, h1Sockets: sockets.size, h2Streams: h2.length, grpc }));
})().catch((e) => { console.log(JSON.stringify({ error: e.message, wrong })); process.exit(1); });
`;

interface Workstation {
  runDir: string;
  tp: TpRunner;
}

if (cluster) {
  const c = cluster;
  const workstation = (name: string): Workstation => {
    const runDir = `/tmp/tpk-e2e-personal-${name}`;
    return { runDir, tp: tpOnWorkstation(c, runDir) };
  };
  const alice = workstation('alice');
  const bob = workstation('bob');
  const laptops: Background[] = [];
  const serviceUrl = `http://web.${NS}.svc.cluster.local`;

  const curl = async (dev?: string) => {
    const r = await execInPod(
      c,
      NS,
      'client',
      ['curl', '-sS', '--max-time', '10', ...(dev ? ['-H', `x-dev: ${dev}`] : []), `${serviceUrl}/`],
      { check: false },
    );
    return r.code === 0 ? r.stdout.trim() : `curl failed (exit ${r.code}): ${r.stderr.trim()}`;
  };
  const interceptOf = async (w: Workstation, name: string) => {
    const st = JSON.parse((await w.tp(['status', '-o', 'json'])).stdout) as {
      intercepts?: { name: string; disposition: string; filter: string }[];
    };
    return st.intercepts?.find((i) => i.name === name);
  };
  const intercept = (w: Workstation, port: number, dev: string) =>
    w.tp(['intercept', 'web', '-n', NS, '--port', `${port}:${APP_PORT}`, '--http-header', `x-dev=${dev}`]);

  const scenario = afterSetup(test, async () => {
    await freshNamespace(c, NS);
    const labels = { app: 'web' };
    await apply(
      c,
      [
        deployment('web', labels, {
          terminationGracePeriodSeconds: 5,
          containers: [
            {
              name: 'web',
              image: c.images.shell,
              command: ['node', '-e', partySource('app', APP_PORT, '0.0.0.0')],
              ports: [{ name: 'http', containerPort: APP_PORT }],
              readinessProbe: { httpGet: { path: '/ready', port: APP_PORT }, periodSeconds: 1 },
            },
          ],
        }),
        {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name: 'web' },
          spec: { selector: labels, ports: [{ name: 'http', port: 80, targetPort: APP_PORT }] },
        },
      ],
      NS,
    );
    await startClientPod(c, NS);
    await rolloutStatus(c, NS, 'web');
    for (const [who, port] of [
      ['alice', ALICE_PORT],
      ['bob', BOB_PORT],
    ] as const) {
      const l = startOnWorkstation(c, [process.execPath, '-e', partySource(who, port, '127.0.0.1')]);
      laptops.push(l);
      await l.waitForOutput(new RegExp(`${who} listening`));
    }
  });

  test.after(async () => {
    for (const w of [alice, bob]) await w.tp(['quit'], { check: false }).catch(() => {});
    for (const l of laptops) await l.stop();
    await kubectl(c, ['delete', 'namespace', NS, '--ignore-not-found', '--wait=false'], { check: false });
    await alice.tp(['helm', 'uninstall'], { check: false, timeoutMs: 300_000 }).catch(() => {});
    for (const w of [alice, bob]) fs.rmSync(w.runDir, { recursive: true, force: true });
  });

  scenario('the chart installed, two workstations connected', async () => {
    const r = await alice.tp(['helm', 'install', '--set', 'timeouts.clientSession=10s'], {
      check: false,
      timeoutMs: 360_000,
    });
    if (r.code !== 0 && /already installed/.test(r.stderr))
      await alice.tp(['helm', 'upgrade', '--set', 'timeouts.clientSession=10s'], { timeoutMs: 360_000 });
    else assert.is(r.code, 0, r.stderr);
    await rolloutStatus(c, MANAGER_NS, 'traffic-manager');
    await alice.tp(['connect']);
    // One VIF per workstation namespace (alice's): bob needs none.
    await bob.tp(['connect', '--no-vif']);
  });

  scenario(
    'alice and bob intercept the same port with their own header; the filters are listed',
    async () => {
      assert.match((await intercept(alice, ALICE_PORT, 'alice')).stdout, /Intercepting .* x-dev=alice/);
      await intercept(bob, BOB_PORT, 'bob');
      for (const [w, dev] of [
        [alice, 'alice'],
        [bob, 'bob'],
      ] as const)
        await waitFor(`${dev}'s intercept to be ACTIVE`, async () => {
          const i = await interceptOf(w, 'web');
          return i?.disposition === 'ACTIVE' && i.filter === `x-dev=${dev}`;
        });
      const list = JSON.parse((await alice.tp(['list', '-n', NS, '-o', 'json'])).stdout) as {
        workloads: { name: string; intercepts: { client: string; filter: string }[] }[];
      };
      const web = list.workloads.find((w) => w.name === 'web')!;
      assert.equal(web.intercepts.map((i) => i.filter).sort(), ['x-dev=alice', 'x-dev=bob']);
      assert.ok(
        web.intercepts.every((i) => /\S+@\S+/.test(i.client)),
        'each intercept names its owner',
      );
      const text = (await alice.tp(['list', '-n', NS])).stdout;
      assert.match(text, /\[x-dev=alice\]/);
      const described = (await alice.tp(['describe', 'web', '-n', NS, '--no-live'])).stdout;
      assert.match(described, /port 8080 -> 127\.0\.0\.1:18190, x-dev=alice, by \S+@\S+/);
      assert.match(described, /port 8080 -> 127\.0\.0\.1:18191, x-dev=bob, by \S+@\S+/);
    },
  );

  scenario('refusals: a global intercept beside them names a holder; a bad regex says why', async () => {
    // bob asks: the first holder found is alice (to her own request it would say "you").
    const global = await bob.tp(
      ['intercept', 'web', '-n', NS, '--name', 'all', '--port', `${BOB_PORT + 5}:${APP_PORT}`],
      { check: false },
    );
    assert.is.not(global.code, 0);
    assert.match(global.stderr, /has a personal intercept by \S+@\S+ \(intercept "web", x-dev=/);
    const regex = await alice.tp(
      [
        'intercept',
        'web',
        '-n',
        NS,
        '--name',
        're',
        '--port',
        `${ALICE_PORT + 6}:${APP_PORT}`,
        '--http-path-regex',
        '((',
      ],
      { check: false },
    );
    assert.is.not(regex.code, 0);
    assert.match(regex.stderr, /--http-path-regex "\(\(" is not a valid regular expression/);
  });

  scenario('curl from a cluster pod: each header reaches its workstation, none reaches the app', async () => {
    await waitFor('alice to answer', async () => (await curl('alice')) === 'alice', 60_000);
    for (let i = 0; i < 3; i++) {
      assert.is(await curl('alice'), 'alice');
      assert.is(await curl('bob'), 'bob');
      assert.is(await curl(), 'app');
    }
  });

  scenario('200 keep-alive requests over 10 connections, 50 h2c streams on one, gRPC metadata', async () => {
    const r = await execInPod(c, NS, 'client', ['node', '-e', clientChecksSource(serviceUrl)], {
      check: false,
    });
    const out = JSON.parse(r.stdout.trim() || '{}') as {
      wrong?: string[];
      h1Sockets?: number;
      h2Streams?: number;
      grpc?: Record<string, string>;
      error?: string;
    };
    assert.is(out.error, undefined, `the client failed: ${out.error} (${r.stderr.trim()})`);
    assert.equal(out.wrong, [], `wrong answers: ${out.wrong?.slice(0, 10).join('; ')}`);
    assert.ok((out.h1Sockets ?? 0) <= 10, `${out.h1Sockets} connections`);
    assert.is(out.h2Streams, 50);
    assert.equal(out.grpc, { alice: 'alice status 0', bob: 'bob status 0', none: 'app status 0' });
  });

  scenario(
    '4 MiB answers through each personal intercept and from the app arrive byte for byte',
    async () => {
      for (const who of ['alice', 'bob', undefined]) {
        const r = await execInPod(
          c,
          NS,
          'client',
          [
            'sh',
            '-c',
            `curl -sS --max-time 30 ${who ? `-H 'x-dev: ${who}'` : ''} ${serviceUrl}/big | sha256sum`,
          ],
          { check: false },
        );
        const expected = crypto
          .createHash('sha256')
          .update(bigBody(who ?? 'app', crypto))
          .digest('hex');
        assert.is(
          r.stdout.split(/\s/)[0],
          expected,
          `the answer for ${who ?? 'no header'} (${r.stderr.trim()})`,
        );
      }
    },
  );

  scenario("alice leaves: bob's intercept still works, alice's header reaches the app", async () => {
    await alice.tp(['leave', 'web']);
    await waitFor('alice header to reach the app', async () => (await curl('alice')) === 'app');
    assert.is(await curl('bob'), 'bob');
    assert.is(await curl(), 'app');
  });

  scenario("bob's workstation dies: only his intercept expires", async () => {
    await intercept(alice, ALICE_PORT, 'alice');
    await waitFor('alice to answer again', async () => (await curl('alice')) === 'alice', 60_000);
    const st = JSON.parse((await bob.tp(['status', '-o', 'json'])).stdout) as { daemon: { pid: number } };
    process.kill(st.daemon.pid, 'SIGKILL');
    await waitFor(
      'bob header to reach the app once his session expired',
      async () => (await curl('bob')) === 'app',
      90_000,
    );
    assert.is(await curl('alice'), 'alice');
    assert.is(await curl(), 'app');
  });

  scenario('requests without the header, probes included, never reached a workstation', async () => {
    // The app's readiness probe ran every second through all of the above (rewritten to the agent's
    // probe port), and unheaded requests were sent in every scenario.
    for (const l of laptops) {
      const lines = l
        .output()
        .split('\n')
        .filter((x) => x.startsWith('REQ '));
      assert.ok(lines.length > 0, 'the workstation saw requests');
      const stray = lines.filter((x) => !/^REQ (alice|bob) /.test(x));
      assert.equal(stray, [], 'requests without the header at a workstation');
    }
    const [aliceLines, bobLines] = laptops.map((l) => l.output());
    assert.not.match(aliceLines!, /^REQ bob /m);
    assert.not.match(bobLines!, /^REQ alice /m);
  });
}

test.run();
