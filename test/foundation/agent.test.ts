// The agent on its own: passthrough without a manager, kubelet probes answered on the probe port and never
// intercepted, configuration errors, a shared agent port without SO_ORIGINAL_DST.
import * as http from 'node:http';
import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../../command/wait.js';
import { type AppProbe, encodeProbes } from '../../probes/spec.js';
import { freePorts } from '../../testbed/loopback.js';
import { httpAnswer, httpApp, httpGet, Rig, withRig } from './harness.js';

test('passes connections through while the manager is not there, and arrives once it is', () =>
  withRig(async (rig) => {
    const [managerPort, appPort, agentPort] = await freePorts(3);
    const app = await httpApp(appPort, 'cluster');
    rig.closeWith(() => app.close());
    const agent = rig.startAgent(managerPort, appPort, agentPort);
    assert.is(await waitFor('passthrough without a manager', () => httpGet(agentPort)), 'cluster');
    await rig.startManager(managerPort);
    await waitFor('the agent to arrive', () => /agent arrived/.test(rig.log('manager')));
    assert.is(await httpGet(agentPort), 'cluster');
    // SIGTERM: the agent departs and exits cleanly.
    await rig.kill('agent');
    assert.is(agent.exitCode, 0);
    await waitFor('the manager to see it depart', () => /agent departed/.test(rig.log('manager')));
  }));

test('passthrough carries half-close and resets, and big replies, unchanged', () =>
  withRig(async (rig) => {
    const [managerPort, appPort, agentPort] = await freePorts(3);
    // The app answers after the client's FIN with 5 MiB, or resets when told to.
    const app = net.createServer({ allowHalfOpen: true }, (s) => {
      const chunks: Buffer[] = [];
      s.on('error', () => {});
      s.on('data', (d) => {
        chunks.push(d);
        if (Buffer.concat(chunks).toString() === 'reset me') s.resetAndDestroy();
      });
      s.on('end', () => s.end(Buffer.alloc(5 << 20, Buffer.concat(chunks).toString())));
    });
    await new Promise<void>((r) => app.listen(appPort, '127.0.0.1', r));
    rig.closeWith(() => app.close());
    rig.startAgent(managerPort, appPort, agentPort);
    await waitFor('the agent to listen', () => /listening/.test(rig.log('agent')));
    const reply = await new Promise<Buffer>((resolve, reject) => {
      const c = net.connect({ port: agentPort, host: '127.0.0.1', allowHalfOpen: true }, () => c.end('x'));
      const chunks: Buffer[] = [];
      c.on('data', (d) => chunks.push(d));
      c.on('end', () => resolve(Buffer.concat(chunks)));
      c.on('error', reject);
    });
    assert.is(reply.length, 5 << 20);
    assert.ok(reply.every((b) => b === 0x78));
    const reset = await new Promise<string>((resolve) => {
      const c = net.connect({ port: agentPort, host: '127.0.0.1' }, () => c.write('reset me'));
      c.on('data', () => {});
      c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      c.on('close', () => resolve('closed without a reset'));
    });
    assert.is(reset, 'ECONNRESET');
  }));

test('kubelet probes, rewritten to the probe port, check the app in the pod even while intercepted', () =>
  withRig(async (rig) => {
    const [managerPort, appPort, laptopPort, agentPort, probePort] = await freePorts(5);
    const cluster = await httpApp(appPort, 'cluster');
    rig.closeWith(() => cluster.close());
    // The workstation's app counts what reaches it: no probe may.
    let laptopRequests = 0;
    const laptop = http.createServer((_req, res) => {
      laptopRequests++;
      res.end('laptop\n');
    });
    await new Promise<void>((r) => laptop.listen(laptopPort, '127.0.0.1', r));
    const stopLaptop = () =>
      new Promise<void>((r) => {
        laptop.closeAllConnections();
        laptop.close(() => r());
      });
    rig.closeWith(() => (laptop.listening ? stopLaptop() : undefined));
    await rig.startManager(managerPort);
    const probes: AppProbe[] = [
      {
        container: 'echo',
        kind: 'readiness',
        timeoutSeconds: 1,
        httpGet: { port: appPort, scheme: 'HTTP', path: '/', httpHeaders: [] },
      },
      { container: 'echo', kind: 'liveness', timeoutSeconds: 1, tcpSocket: { port: appPort } },
    ];
    const agent = rig.startAgent(managerPort, appPort, agentPort, {
      TP_PROBE_PORT: String(probePort),
      TP_PROBES: encodeProbes(probes),
    });
    await waitFor('passthrough', () => httpGet(agentPort));
    assert.equal(await httpAnswer(probePort, '/tp-probe/agent'), {
      status: 200,
      body: 'tp-agent: listening',
    });
    assert.is((await rig.tp('connect', '--manager-address', `127.0.0.1:${managerPort}`)).code, 0);
    await rig.noteDaemon();
    await waitFor(
      'the agent in tp list',
      async () => (await rig.tpJson<{ workloads: unknown[] }>('list')).workloads.length > 0,
    );
    const i = await rig.tp('intercept', 'echo', '--port', `${laptopPort}:${appPort}`);
    assert.is(i.code, 0, i.stderr);
    await waitFor('the intercept to reach the laptop', async () => (await httpGet(agentPort)) === 'laptop');

    // Intercepted: clients reach the laptop, probes check the app in the pod and never reach the laptop.
    const before = laptopRequests;
    const readiness = await httpAnswer(probePort, '/tp-probe/echo/readiness');
    assert.is(readiness.status, 200, readiness.body);
    assert.match(readiness.body, new RegExp(`GET http://127\\.0\\.0\\.1:${appPort}/: status 200`));
    assert.is((await httpAnswer(probePort, '/tp-probe/echo/liveness')).status, 200);
    assert.is(laptopRequests, before, 'no probe reached the workstation');

    // The developer stops the local app: clients fail, the pod stays healthy.
    await stopLaptop();
    const failed = await httpGet(agentPort).then(
      () => 'answered',
      () => 'failed',
    );
    assert.is(failed, 'failed');
    assert.is((await httpAnswer(probePort, '/tp-probe/echo/readiness')).status, 200);
    assert.is((await httpAnswer(probePort, '/tp-probe/echo/liveness')).status, 200);

    // The app in the pod goes down: that is what the probes report.
    await cluster.close();
    const down = await httpAnswer(probePort, '/tp-probe/echo/readiness');
    assert.is(down.status, 503);
    assert.match(down.body, new RegExp(`connection refused by 127\\.0\\.0\\.1:${appPort}`));
    assert.is((await httpAnswer(probePort, '/tp-probe/echo/liveness')).status, 503);

    // SIGUSR2: the counters name each probe.
    agent.kill('SIGUSR2');
    await waitFor('the agent to log its counters', () =>
      /probes: echo\/readiness 3 \(1 failed\), echo\/liveness 3 \(1 failed\)/.test(rig.log('agent')),
    );
    assert.is((await rig.tp('quit')).code, 0);
  }));

test('a bad configuration stops the agent with one line naming the variable', async () => {
  const rig = new Rig();
  try {
    const cases: [NodeJS.ProcessEnv, RegExp][] = [
      [{ TP_PORTS: 'nonsense' }, /invalid TP_PORTS entry "nonsense": expected appPort:agentPort/],
      [{ TP_MANAGER_ADDRESS: 'manager' }, /invalid TP_MANAGER_ADDRESS "manager": expected HOST:PORT/],
      [{ TP_POD_NAME: '' }, /TP_POD_NAME is not set/],
      [{ TP_MECHANISM: 'magic' }, /TP_MECHANISM="magic" is not known/],
    ];
    for (const [env, pattern] of cases) {
      const agent = rig.startAgent(1, 2, 3, env);
      await new Promise((r) => agent.once('exit', r));
      assert.is(agent.exitCode, 1);
      const out = rig.log('agent').trim().split('\n').at(-1)!;
      assert.match(out, pattern);
      assert.not.match(rig.log('agent'), /\n\s+at /, 'no stack trace');
    }
    // The agent port is taken.
    const blocker = net.createServer();
    const [port, managerPort, appPort] = await freePorts(3);
    await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', r));
    const agent = rig.startAgent(managerPort, appPort, port, {
      TP_LISTEN_ADDRESS: '127.0.0.1',
    });
    await new Promise((r) => agent.once('exit', r));
    assert.is(agent.exitCode, 1);
    assert.match(rig.log('agent'), new RegExp(`cannot listen on agent port ${port}: the port is in use`));
    blocker.close();
  } finally {
    await rig.close();
  }
});

test('a shared agent port resets a connection it cannot attribute (no SO_ORIGINAL_DST on loopback)', () =>
  withRig(async (rig) => {
    const [managerPort, appA, appB, agentPort] = await freePorts(4);
    const apps = [await httpApp(appA, 'a'), await httpApp(appB, 'b')];
    rig.closeWith(() => Promise.all(apps.map((a) => a.close())));
    rig.startAgent(managerPort, appA, agentPort, { TP_PORTS: `${appA}:${agentPort},${appB}:${agentPort}` });
    await waitFor('the agent to listen', () => /listening/.test(rig.log('agent')));
    const err = await httpGet(agentPort).then(
      () => 'answered',
      (e: NodeJS.ErrnoException) => e.code ?? e.message,
    );
    assert.is(err, 'ECONNRESET');
    // The passthrough thread resets the connection first and tells the main thread, which logs it after.
    await waitFor('the agent to log why it reset the connection', () =>
      /cannot tell which app port a connection is for/.test(rig.log('agent')),
    );
  }));

test.run();
