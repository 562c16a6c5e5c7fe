// The acceptance script, run with the real binaries on loopback, and the user errors of the CLI.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../../command/wait.js';
import { freePorts } from '../../testbed/loopback.js';
import { httpApp, httpGet, isRunning, Rig, withRig } from './harness.js';

interface StatusJson {
  state: string;
  managerAddress: string;
  daemon?: { pid: number; logFile: string };
  intercepts: {
    name: string;
    workload: string;
    remotePort: number;
    localAddress: string;
    disposition: string;
  }[];
}

interface ListJson {
  workloads: {
    name: string;
    namespace: string;
    ports: { appPort: number; agentPort: number }[];
    agents: { pod: string; podIp: string }[];
    intercepts: { name: string; disposition: string }[];
  }[];
}

test('acceptance: connect, list, intercept, status, leave, quit', () =>
  withRig(async (rig) => {
    const [managerPort, appPort, laptopPort, agentPort] = await freePorts(4);
    const cluster = await httpApp(appPort, 'cluster');
    const laptop = await httpApp(laptopPort, 'laptop');
    rig.closeWith(async () => {
      await cluster.close();
      await laptop.close();
    });
    await rig.startManager(managerPort);
    rig.startAgent(managerPort, appPort, agentPort);
    assert.is(await waitFor('passthrough', () => httpGet(agentPort)), 'cluster');

    const connect = await rig.tp('connect', '--manager-address', `127.0.0.1:${managerPort}`);
    assert.is(connect.code, 0, connect.stderr);
    assert.match(connect.stdout, new RegExp(`Connected to the traffic manager at 127.0.0.1:${managerPort}`));
    const daemonPid = await rig.noteDaemon();
    assert.ok(
      fs.existsSync(path.join(rig.dir, 'run', 'connector.sock')),
      'the daemon serves its socket in TP_RUN_DIR',
    );
    assert.ok(fs.existsSync(path.join(rig.dir, 'log', 'connector.log')), 'the daemon logs to TP_LOG_DIR');

    // The agent may arrive a moment after the manager starts: list until it shows.
    const list = await waitFor('the agent in tp list', async () => {
      const l = await rig.tpJson<ListJson>('list');
      return l.workloads.length > 0 ? l : undefined;
    });
    assert.is(list.workloads.length, 1);
    const echo = list.workloads[0]!;
    assert.is(echo.name, 'echo');
    assert.is(echo.namespace, 'default');
    assert.equal(echo.ports, [{ name: '', appPort, agentPort, protocol: 'TCP' } as never]);
    assert.equal(
      echo.agents.map((a) => a.pod),
      ['echo-0'],
    );

    const intercept = await rig.tp('intercept', 'echo', '--port', `${laptopPort}:${appPort}`);
    assert.is(intercept.code, 0, intercept.stderr);
    assert.is(await httpGet(agentPort), 'laptop');

    const status = await rig.tpJson<StatusJson>('status');
    assert.is(status.state, 'CONNECTED');
    assert.is(status.managerAddress, `127.0.0.1:${managerPort}`);
    assert.is(status.intercepts.length, 1);
    assert.is(status.intercepts[0]!.name, 'echo');
    assert.is(status.intercepts[0]!.disposition, 'ACTIVE');
    assert.is(status.intercepts[0]!.remotePort, appPort);
    assert.is(status.intercepts[0]!.localAddress, `127.0.0.1:${laptopPort}`);

    const listed = await rig.tpJson<ListJson>('list');
    assert.equal(
      listed.workloads[0]!.intercepts.map((i) => [i.name, i.disposition]),
      [['echo', 'ACTIVE']],
    );

    const leave = await rig.tp('leave', 'echo');
    assert.is(leave.code, 0, leave.stderr);
    assert.is(
      await waitFor('passthrough again', async () =>
        (await httpGet(agentPort)) === 'cluster' ? 'cluster' : undefined,
      ),
      'cluster',
    );

    const quit = await rig.tp('quit');
    assert.is(quit.code, 0, quit.stderr);
    assert.not.ok(isRunning(daemonPid), 'no daemon process is left');
    const after = await rig.tpJson<{ state: string }>('status');
    assert.is(after.state, 'NOT_RUNNING');
  }));

test('user errors: one line each, non-zero exit, no stack trace', () =>
  withRig(async (rig) => {
    const [managerPort, appPort, laptopPort, agentPort, deadPort] = await freePorts(5);
    const cluster = await httpApp(appPort, 'cluster');
    const expectError = async (args: string[], pattern: RegExp) => {
      const r = await rig.tp(...args);
      assert.is.not(r.code, 0, `tp ${args.join(' ')} should fail`);
      assert.match(r.stderr, pattern, `tp ${args.join(' ')}`);
      assert.is(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
      assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
    };
    rig.closeWith(() => cluster.close());
    // No daemon.
    await expectError(['list'], /not connected: run tp connect/);
    await expectError(['intercept', 'echo', '--port', '8080'], /not connected: run tp connect/);
    await expectError(['leave', 'echo'], /not connected: run tp connect/);

    // A dead manager: the error names it, and no daemon is left behind.
    const dead = await rig.tp('connect', '--manager-address', `127.0.0.1:${deadPort}`);
    assert.is.not(dead.code, 0);
    assert.match(
      dead.stderr,
      new RegExp(`cannot reach the traffic manager at 127.0.0.1:${deadPort}: connection refused`),
    );
    assert.ok(!dead.stderr.includes('    at '), 'no stack trace');
    assert.is((await rig.tpJson<{ state: string }>('status')).state, 'NOT_RUNNING');

    await rig.startManager(managerPort);
    rig.startAgent(managerPort, appPort, agentPort);
    await waitFor('passthrough', () => httpGet(agentPort));
    assert.is((await rig.tp('connect', '--manager-address', `127.0.0.1:${managerPort}`)).code, 0);
    await rig.noteDaemon();
    await waitFor(
      'the agent in tp list',
      async () => (await rig.tpJson<ListJson>('list')).workloads.length > 0,
    );

    await expectError(
      ['intercept', 'echo', '--port', `${laptopPort}`, '--mechanism', 'http'],
      /mechanism "http" is not supported: use --mechanism tcp/,
    );
    await expectError(
      ['intercept', 'nope', '--port', `${laptopPort}`],
      /workload "nope" not found in namespace "default"/,
    );
    await expectError(
      ['intercept', 'echo', '--port', `${laptopPort}:9`],
      new RegExp(`has no port 9: use one of container port ${appPort}`),
    );
    await expectError(['intercept', 'echo', '--port', 'x'], /invalid local port "x"/);
    await expectError(['list', '-o', 'xml'], /invalid output format "xml"/);
    await expectError(['leave', 'nope'], /no intercept named "nope"/);

    assert.is((await rig.tp('intercept', 'echo', '--port', `${laptopPort}:${appPort}`)).code, 0);
    await expectError(
      ['intercept', 'echo', '--port', `${laptopPort}:${appPort}`, '--name', 'again'],
      new RegExp(
        `port ${appPort} of workload "echo" in namespace "default" is already intercepted by you \\(intercept "echo"\\)`,
      ),
    );

    // A second client meets the conflict with the holder's name.
    const other = new Rig();
    try {
      assert.is((await other.tp('connect', '--manager-address', `127.0.0.1:${managerPort}`)).code, 0);
      await other.noteDaemon();
      const r = await other.tp('intercept', 'echo', '--port', `${laptopPort}:${appPort}`);
      assert.is.not(r.code, 0);
      assert.match(r.stderr, /is already intercepted by \S+@\S+ \(intercept "echo"\)/);
      assert.is((await other.tp('quit')).code, 0);
    } finally {
      await other.close();
    }

    // The manager dies: commands that need it say so.
    await rig.kill('manager', 'SIGKILL');
    await waitFor(
      'the daemon to notice',
      async () => (await rig.tpJson<{ state: string }>('status')).state === 'RECONNECTING',
    );
    await expectError(['list'], new RegExp(`traffic manager at 127.0.0.1:${managerPort} is unreachable`));
    assert.is((await rig.tp('quit')).code, 0);
  }));

test.run();
