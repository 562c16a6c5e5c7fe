// Direct intercepted connections (agent/direct.ts, daemons/user/direct-links.ts) on loopback: the agent's
// own service on 127.0.0.1, the daemon watching there, the manager relaying nothing; a watch without the
// intercept's secret refused; an agent that cannot take its direct port still intercepting through the
// manager. Real processes and gRPC, the installed bins.
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../../command/wait.js';
import { workstationChannelOptions } from '../../rpc/grpc-options.js';
import { AgentClient } from '../../rpc/manager-service.js';
import { freePorts } from '../../testbed/loopback.js';
import { httpApp, httpGet, type Rig, withRig } from './harness.js';

interface PodJson {
  pod: string;
  disposition: string;
  message: string;
}
interface StatusJson {
  sessionId: string;
  intercepts: { name: string; id: string; disposition: string; pods: PodJson[] }[];
}

/** A standalone manager with metrics, the cluster's and the laptop's apps, an agent, a session. */
async function setUp(rig: Rig, agentEnv: (direct: number) => Record<string, string>) {
  const [manager, app, laptop, agent, direct, metrics] = await freePorts(6);
  const ports = { manager, app, laptop, agent, direct, metrics };
  const apps = [await httpApp(ports.app, 'cluster'), await httpApp(ports.laptop, 'laptop')];
  rig.closeWith(() => Promise.all(apps.map((a) => a.close())));
  await rig.startManager(ports.manager, ['--metrics-listen', `127.0.0.1:${ports.metrics}`]);
  rig.startAgent(ports.manager, ports.app, ports.agent, agentEnv(ports.direct));
  await waitFor('passthrough', () => httpGet(ports.agent));
  const c = await rig.tp('connect', '--manager-address', `127.0.0.1:${ports.manager}`);
  assert.is(c.code, 0, c.stderr);
  await rig.noteDaemon();
  await waitFor('the agent in tp list', async () => {
    const l = await rig.tpJson<{ workloads: unknown[] }>('list');
    return l.workloads.length > 0;
  });
  const i = await rig.tp('intercept', 'echo', '--port', `${ports.laptop}:${ports.app}`);
  assert.is(i.code, 0, i.stderr);
  return ports;
}

/** A sample of the manager's metrics, e.g. `tp_tunnel_flows_total{kind="intercept"}`. */
async function metric(metricsPort: number, sample: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  if (!line) throw new Error(`no ${sample} in:\n${text}`);
  return Number(line.slice(sample.length + 1));
}

/** The intercepted connections the manager relayed. */
const relayedByManager = (metricsPort: number) =>
  metric(metricsPort, 'tp_tunnel_flows_total{kind="intercept"}');

async function podState(rig: Rig): Promise<PodJson> {
  const st = await rig.tpJson<StatusJson>('status');
  const pod = st.intercepts[0]?.pods[0];
  if (!pod) throw new Error(`no pod in the intercept: ${JSON.stringify(st.intercepts)}`);
  return pod;
}

test('an agent with a direct port sends its intercepted connections straight to the workstation: the manager relays none', () =>
  withRig(async (rig) => {
    const ports = await setUp(rig, (direct) => ({ TP_DIRECT_PORT: String(direct) }));
    const pod = await waitFor('the daemon to watch at the agent', async () => {
      const p = await podState(rig);
      return /straight from the agent/.test(p.message) ? p : undefined;
    });
    assert.is(pod.disposition, 'ACTIVE');
    const before = await relayedByManager(ports.metrics);
    for (let n = 0; n < 20; n++) assert.is(await httpGet(ports.agent), 'laptop');
    assert.is(await relayedByManager(ports.metrics), before, 'the manager relayed none of the 20');
    // On flow connections to the direct port (tunnel/framed-call.ts), not Tunnel calls, and a connection
    // carries one flow after another (tunnel/flow-pool.ts): fewer connections than requests.
    const flowConnections = (rig.log('agent').match(/a flow connection/g) ?? []).length;
    assert.ok(
      flowConnections >= 1 && flowConnections < 20,
      `${flowConnections} flow connections for 20 requests`,
    );
    assert.not.match(rig.daemonLog(), /no flow connection to the agent/);
    // The agent counts them (it reports every 10 s): an admin sees the direct path in the metrics.
    await waitFor(
      'the agent to report its direct connections',
      async () =>
        (await metric(ports.metrics, 'tp_agent_connections_total{outcome="intercepted_direct"}')) >= 20,
      20_000,
    );

    // Without the intercept's secret, or for another session, the agent sends nothing.
    const client = new AgentClient(
      `127.0.0.1:${ports.direct}`,
      grpc.credentials.createInsecure(),
      workstationChannelOptions(),
    );
    rig.closeWith(() => client.close());
    const st = await rig.tpJson<StatusJson>('status');
    const refused = await new Promise<grpc.ServiceError>((resolve, reject) => {
      const call = client.watchDial({
        sessionId: st.sessionId,
        interceptId: st.intercepts[0]!.id,
        token: 'guess',
      });
      call.on('data', () => reject(new Error('a watch without the secret got a dial')));
      call.on('error', resolve);
    });
    assert.is(refused.code, grpc.status.PERMISSION_DENIED);
    assert.match(refused.details, /is not one this agent serves/);
    // The daemon's own watch is untouched by that.
    assert.is(await httpGet(ports.agent), 'laptop');

    // tp leave: the agent ends the watch, its connections go to the app again.
    assert.is((await rig.tp('leave', 'echo')).code, 0);
    assert.is(
      await waitFor('passthrough after leave', async () =>
        (await httpGet(ports.agent)) === 'cluster' ? 'cluster' : undefined,
      ),
      'cluster',
    );
    assert.is((await rig.tp('quit')).code, 0);
  }));

test('an agent that cannot take its direct port intercepts through the manager', () =>
  withRig(async (rig) => {
    // Something else holds the direct port on 127.0.0.1 before the agent starts.
    const squatter = net.createServer();
    const [taken] = await freePorts(1);
    await new Promise<void>((r) => squatter.listen(taken, '127.0.0.1', r));
    rig.closeWith(() => new Promise((r) => squatter.close(r)));
    const ports = await setUp(rig, () => ({ TP_DIRECT_PORT: String(taken) }));
    await waitFor('the intercept', async () =>
      (await httpGet(ports.agent)) === 'laptop' ? true : undefined,
    );
    const before = await relayedByManager(ports.metrics);
    for (let n = 0; n < 5; n++) assert.is(await httpGet(ports.agent), 'laptop');
    assert.is(await relayedByManager(ports.metrics), before + 5, 'all 5 through the manager');
    assert.not.match((await podState(rig)).message, /straight from the agent/);
    assert.match(rig.log('agent'), /no direct connections to intercepting clients/);
    assert.is((await rig.tp('quit')).code, 0);
  }));

test.run();
