// What happens when a part dies: the manager restarted mid-intercept, the user daemon killed.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../../command/wait.js';
import { freePorts } from '../../testbed/loopback.js';
import { httpApp, httpGet, isRunning, type Rig, withRig } from './harness.js';

interface StatusJson {
  state: string;
  error: string;
  lastOutage: string;
  intercepts: { name: string; disposition: string; message: string }[];
}

async function setUp(rig: Rig, managerArgs: string[] = []) {
  const [manager, app, laptop, agent] = await freePorts(4);
  const ports = { manager, app, laptop, agent };
  const apps = [await httpApp(ports.app, 'cluster'), await httpApp(ports.laptop, 'laptop')];
  rig.closeWith(() => Promise.all(apps.map((a) => a.close())));
  await rig.startManager(ports.manager, managerArgs);
  rig.startAgent(ports.manager, ports.app, ports.agent);
  await waitFor('passthrough', () => httpGet(ports.agent));
  const c = await rig.tp('connect', '--manager-address', `127.0.0.1:${ports.manager}`);
  assert.is(c.code, 0, c.stderr);
  const daemonPid = await rig.noteDaemon();
  await waitFor('the agent in tp list', async () => {
    const l = await rig.tpJson<{ workloads: unknown[] }>('list');
    return l.workloads.length > 0;
  });
  const i = await rig.tp('intercept', 'echo', '--port', `${ports.laptop}:${ports.app}`);
  assert.is(i.code, 0, i.stderr);
  assert.is(await httpGet(ports.agent), 'laptop');
  return { ports, daemonPid };
}

test('the manager killed and restarted mid-intercept: everyone reconnects, the intercept is restored', () =>
  withRig(async (rig) => {
    const s = await setUp(rig);

    await rig.kill('manager', 'SIGKILL');
    // While the manager is away: the agent passes through, status says what is going on.
    assert.is(
      await waitFor('passthrough without the manager', async () =>
        (await httpGet(s.ports.agent)) === 'cluster' ? 'cluster' : undefined,
      ),
      'cluster',
    );
    const away = await waitFor('status to report the loss', async () => {
      const st = await rig.tpJson<StatusJson>('status');
      return st.state === 'RECONNECTING' ? st : undefined;
    });
    assert.match(away.error, /lost the traffic manager/);
    assert.match(away.intercepts[0]!.message, /restored when it is back/);
    assert.is.not(away.intercepts[0]!.disposition, 'ACTIVE', 'never shown active while the manager is away');

    await rig.startManager(s.ports.manager);
    const restartedAt = Date.now();
    // Passthrough works again within 10 s (it never stopped), and the intercept comes back.
    await waitFor('passthrough after the restart', () => httpGet(s.ports.agent), 10_000);
    const back = await waitFor(
      'the intercept restored',
      async () => {
        const st = await rig.tpJson<StatusJson>('status');
        return st.state === 'CONNECTED' && st.intercepts[0]?.disposition === 'ACTIVE' ? st : undefined;
      },
      15_000,
    );
    assert.match(back.intercepts[0]!.message, /restored/);
    assert.is(
      await waitFor('intercepted traffic again', async () =>
        (await httpGet(s.ports.agent)) === 'laptop' ? 'laptop' : undefined,
      ),
      'laptop',
    );
    assert.ok(Date.now() - restartedAt < 15_000);

    assert.is((await rig.tp('leave', 'echo')).code, 0);
    assert.is(
      await waitFor('passthrough after leave', async () =>
        (await httpGet(s.ports.agent)) === 'cluster' ? 'cluster' : undefined,
      ),
      'cluster',
    );
    assert.is((await rig.tp('quit')).code, 0);
  }));

/** Requests every 100 ms for `ms`: the answers, 'failed: …' for each request that did not get one. */
async function probe(port: number, ms: number): Promise<string[]> {
  const answers: string[] = [];
  const until = Date.now() + ms;
  while (Date.now() < until) {
    answers.push(await httpGet(port, 5_000).catch((e: Error) => `failed: ${e.message}`));
    await new Promise((r) => setTimeout(r, 100));
  }
  return answers;
}

test('the user daemon killed: no request fails, and a new daemon takes the intercept back at once', () =>
  withRig(async (rig) => {
    const s = await setUp(rig);

    process.kill(s.daemonPid, 'SIGKILL');
    await waitFor('the daemon to die', () => !isRunning(s.daemonPid));
    // Its stream closed: the manager ends the session at once and holds the intercept; the agent passes
    // everything to the app meanwhile, and no request fails.
    const answers = await probe(s.ports.agent, 1_500);
    assert.equal(
      answers.filter((a) => a !== 'cluster' && a !== 'laptop'),
      [],
    );
    assert.is(answers.at(-1), 'cluster');
    assert.match(rig.log('manager'), /WARN {2}manager\/tunnel: client dial stream dropped/);
    assert.match(rig.log('manager'), /client lost .*heldIntercepts=echo/);

    // The CLI finds no daemon (a stale socket is not a daemon); a new connect and intercept take it back.
    assert.is((await rig.tpJson<{ state: string }>('status')).state, 'NOT_RUNNING');
    assert.is((await rig.tp('connect', '--manager-address', `127.0.0.1:${s.ports.manager}`)).code, 0);
    await rig.noteDaemon();
    const i = await rig.tp('intercept', 'echo', '--port', `${s.ports.laptop}:${s.ports.app}`);
    assert.is(i.code, 0, i.stderr);
    assert.is(await httpGet(s.ports.agent), 'laptop');
    assert.match(rig.log('manager'), /intercept taken back by its user from a new session/);
    assert.is((await rig.tp('leave', 'echo')).code, 0);
    assert.is(await httpGet(s.ports.agent), 'cluster');
    assert.is((await rig.tp('quit')).code, 0);
  }));

test('the workstation goes silent (SIGSTOP, no FIN): the app answers, and the intercept heals by itself', () =>
  withRig(async (rig) => {
    const s = await setUp(rig);
    process.kill(s.daemonPid, 'SIGSTOP');
    try {
      // Until keepalives find the silence, intercepted connections wait for the workstation at most the
      // dial deadline, then go to the app; then the session is lost and everything goes to the app.
      assert.is(await httpGet(s.ports.agent), 'cluster');
      await waitFor('the manager to declare the session lost', () => /client lost/.test(rig.log('manager')));
      assert.match(
        rig.log('agent'),
        /the workstation cannot take an intercepted connection: passing it to the app/,
      );
      const answers = await probe(s.ports.agent, 1_000);
      assert.equal(
        answers.filter((a) => a !== 'cluster'),
        [],
      );
    } finally {
      process.kill(s.daemonPid, 'SIGCONT');
    }
    // Awake again: the daemon finds its session gone, arrives again and takes its intercept back.
    assert.is(
      await waitFor('the intercept back without a command', async () =>
        (await httpGet(s.ports.agent)) === 'laptop' ? 'laptop' : undefined,
      ),
      'laptop',
    );
    const st = await rig.tpJson<StatusJson>('status');
    assert.is(st.state, 'CONNECTED');
    assert.match(st.intercepts[0]!.message, /restored/);
    // The status says what was lost and when it came back.
    assert.match(
      st.lastOutage,
      /^lost the traffic manager at \S+ \S+Z \(.+\); back at \S+ \S+Z after [\d.]+ s; intercepts restored: echo$/,
    );
    assert.match((await rig.tp('status')).stdout, /last outage: lost the traffic manager at/);
    assert.is((await rig.tp('quit')).code, 0);
  }));

test('an intercept that cannot be restored after a manager restart is reported gone, with the reason', () =>
  withRig(async (rig) => {
    rig.env.TP_RESTORE_GRACE_MS = '1000'; // inherited by the user daemon: give up on the workload after 1 s
    const s = await setUp(rig);
    // The manager and the workload's only agent both go away; the manager comes back alone.
    await rig.kill('agent', 'SIGKILL');
    await rig.kill('manager', 'SIGKILL');
    await rig.startManager(s.ports.manager);
    const st = await waitFor('the intercept reported gone', async () => {
      const v = await rig.tpJson<StatusJson>('status');
      return v.state === 'CONNECTED' && v.intercepts[0]?.disposition === 'REMOVED' ? v : undefined;
    });
    assert.match(
      st.intercepts[0]!.message,
      /not restored after the connection to the traffic manager was lost: workload "echo" not found/,
    );
    // The text status says it too, and leave clears it.
    const text = await rig.tp('status');
    assert.match(text.stdout, /echo: REMOVED .*not restored/);
    assert.is((await rig.tp('leave', 'echo')).code, 0);
    assert.equal((await rig.tpJson<StatusJson>('status')).intercepts, []);
    assert.is((await rig.tp('quit')).code, 0);
  }));

test.run();
