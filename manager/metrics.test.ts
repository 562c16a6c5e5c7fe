// The manager's Prometheus metrics: the text format, and /metrics of a real manager after an agent arrived
// and reported its counters over gRPC.
import * as http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger, setLevel } from '../logging/logger.js';
import type { AgentInfo, SessionInfo } from '../rpc/gen/manager.js';
import { managerChannelOptions } from '../rpc/grpc-options.js';
import { ManagerClient } from '../rpc/manager-service.js';
import { unary } from '../rpc/unary-call.js';
import { renderPrometheus, startMetricsServer } from './metrics.js';
import { startManager } from './server.js';

setLevel('error');

test('the text format: HELP and TYPE per family, labels escaped, special values', () => {
  const text = renderPrometheus([
    {
      name: 'x_total',
      help: 'a "help"\nline',
      type: 'counter',
      samples: [{ value: 3 }, { labels: { a: 'q"u\\o\nte' }, value: Number.POSITIVE_INFINITY }],
    },
  ]);
  assert.is(
    text,
    '# HELP x_total a "help"\\nline\n# TYPE x_total counter\nx_total 3\nx_total{a="q\\"u\\\\o\\nte"} +Inf\n',
  );
  assert.throws(() => renderPrometheus([{ name: 'bad-name', help: '', type: 'gauge', samples: [] }]));
});

/** name{labels} -> value, from the text format. */
function parse(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    out.set(m[1]!, Number(m[2]));
  }
  return out;
}

function get(port: number, path: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }),
        );
      })
      .on('error', reject);
  });
}

const agentInfo: AgentInfo = {
  name: 'echo',
  namespace: 'shop',
  kind: 'Standalone',
  podName: 'echo-0',
  podIp: '127.0.0.1',
  version: '0.1.0',
  mechanism: 'none',
  containers: [],
  counters: undefined,
  directPort: 0,
};

test('/metrics: sessions, agents by namespace, the counters an agent reported; 404 elsewhere', async () => {
  const manager = await startManager({ host: '127.0.0.1', port: 0, clientTtlMs: 15_000, agentTtlMs: 15_000 });
  const metrics = await startMetricsServer(manager.core, '127.0.0.1', 0, createLogger('metrics'));
  const client = new ManagerClient(
    `127.0.0.1:${manager.port}`,
    grpc.credentials.createInsecure(),
    managerChannelOptions(),
  );
  try {
    const agent = await unary<SessionInfo>((md, o, cb) => client.arriveAsAgent(agentInfo, md, o, cb), 5000);
    await unary(
      (md, o, cb) =>
        client.reportAgentCounters(
          {
            session: agent,
            counters: {
              ports: [{ appPort: 8080, passedThrough: 7, intercepted: 2, dialFailures: 1, direct: 1 }],
              probes: [{ probe: 'echo/readiness', performed: 5, failed: 1 }],
              reportedUnixMs: 0,
            },
          },
          md,
          o,
          cb,
        ),
      5000,
    );
    const r = await get(metrics.port, '/metrics');
    assert.is(r.status, 200);
    assert.match(r.type, /^text\/plain; version=0\.0\.4/);
    const m = parse(r.body);
    assert.is(m.get('tp_sessions{kind="agent"}'), 1);
    assert.is(m.get('tp_sessions{kind="client"}'), 0);
    assert.is(m.get('tp_agents{namespace="shop"}'), 1);
    assert.is(m.get('tp_agent_connections_total{outcome="passed_through"}'), 7);
    assert.is(m.get('tp_agent_connections_total{outcome="intercepted"}'), 2);
    assert.is(m.get('tp_agent_connections_total{outcome="intercepted_direct"}'), 1);
    assert.is(m.get('tp_agent_connections_total{outcome="dial_failure"}'), 1);
    assert.is(m.get('tp_agent_probes_total{result="failed"}'), 1);
    assert.is(m.get('tp_tunnel_flows_total{kind="outbound_tcp"}'), 0);
    assert.is(m.get('tp_authorization_refusals_total{code="permission_denied"}'), 0);
    // No names beyond namespaces: the pod, the workload and the session never appear.
    assert.not.match(r.body, /echo-0|"echo"/);
    assert.not.ok(r.body.includes(agent.sessionId));
    assert.is((await get(metrics.port, '/')).status, 404);
  } finally {
    client.close();
    await metrics.close();
    await manager.stop();
  }
});

test.run();
