// The manager's Prometheus metrics: what an operator graphs and alerts on (sessions, intercepts, agents,
// tunnel flows and bytes, dial failures, authorization refusals, the agents' own counters). The text
// exposition format is written here (no client library: it is a few lines of text per family).
//
// What they must not leak (docs/security.md): no user names, session ids, intercept names or addresses —
// only counts, by kind and by namespace. They are served on a port of their own (never the gRPC port,
// which workstations reach through port-forward), meant for a Prometheus inside the cluster.
import * as http from 'node:http';
import type { Logger } from '../logging/logger.js';
import { InterceptDisposition } from '../rpc/gen/manager.js';
import { VERSION } from '../version/version.js';
import type { ManagerCore } from './service.js';

export type MetricType = 'counter' | 'gauge';

export interface Sample {
  labels?: Record<string, string>;
  value: number;
}

export interface MetricFamily {
  name: string;
  help: string;
  type: MetricType;
  samples: Sample[];
}

const escapeHelp = (s: string) => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escapeLabel = (s: string) => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Number.POSITIVE_INFINITY) return '+Inf';
  if (v === Number.NEGATIVE_INFINITY) return '-Inf';
  return String(v);
}

/** The Prometheus text exposition format (version 0.0.4) of the families, in the order given. */
export function renderPrometheus(families: MetricFamily[]): string {
  const out: string[] = [];
  for (const f of families) {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(f.name)) throw new Error(`invalid metric name ${f.name}`);
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const labels = Object.entries(s.labels ?? {});
      const text = labels.length ? `{${labels.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}` : '';
      out.push(`${f.name}${text} ${formatValue(s.value)}`);
    }
  }
  return `${out.join('\n')}\n`;
}

/** Sums per key, for samples labelled by namespace and the like. */
function countBy<T>(items: T[], key: (t: T) => string, label: string): Sample[] {
  const counts = new Map<string, number>();
  for (const i of items) counts.set(key(i), (counts.get(key(i)) ?? 0) + 1);
  return [...counts]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, value]) => ({ labels: { [label]: k }, value }));
}

/** The manager's metrics, as of now. */
export function managerMetrics(core: ManagerCore): MetricFamily[] {
  const clients = core.sessions.clients();
  const agents = core.sessions.agents();
  const intercepts = core.intercepts.all();
  const t = core.router.stats;
  const agentPorts = agents.flatMap((a) => a.info.counters?.ports ?? []);
  const agentProbes = agents.flatMap((a) => a.info.counters?.probes ?? []);
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  return [
    {
      name: 'tp_manager_info',
      help: "The traffic manager's version and security mode.",
      type: 'gauge',
      samples: [{ labels: { version: VERSION, security_mode: core.access.mode }, value: 1 }],
    },
    {
      name: 'tp_sessions',
      help: 'Sessions the manager holds now, by kind (client: a workstation; agent: a pod).',
      type: 'gauge',
      samples: [
        { labels: { kind: 'client' }, value: clients.length },
        { labels: { kind: 'agent' }, value: agents.length },
      ],
    },
    {
      name: 'tp_agents',
      help: 'Agents with a session now, by namespace.',
      type: 'gauge',
      samples: countBy(agents, (a) => a.info.namespace, 'namespace'),
    },
    {
      name: 'tp_intercepts',
      help: 'Intercepts now, by disposition.',
      type: 'gauge',
      samples: ['WAITING', 'ACTIVE', 'AGENT_ERROR'].map((d) => ({
        labels: { disposition: d },
        value: intercepts.filter((i) => InterceptDisposition[i.disposition] === d).length,
      })),
    },
    {
      name: 'tp_tunnel_flows_total',
      help: 'Tunnel flows admitted, by kind (intercept: a cluster client reaching a workstation through the manager, not straight from its agent; outbound: a workstation reaching the cluster).',
      type: 'counter',
      samples: [
        { labels: { kind: 'intercept' }, value: t.flows.intercept },
        { labels: { kind: 'outbound_tcp' }, value: t.flows.outboundTcp },
        { labels: { kind: 'outbound_udp' }, value: t.flows.outboundUdp },
      ],
    },
    {
      name: 'tp_tunnel_flow_connections_total',
      help: "Flow connections accepted: connections that carry tunnel flows one after another without HTTP/2 (the workstation VIF's TCP flows).",
      type: 'counter',
      samples: [{ value: t.flowConnections }],
    },
    {
      name: 'tp_tunnel_refused_total',
      help: 'Tunnel streams refused before any dial (unknown session, not admitted, intercept gone).',
      type: 'counter',
      samples: [{ value: t.refused }],
    },
    {
      name: 'tp_tunnel_bytes_total',
      help: 'Bytes of ended TCP flows through the manager, by direction.',
      type: 'counter',
      samples: [
        { labels: { direction: 'to_cluster' }, value: t.bytes.toCluster },
        { labels: { direction: 'to_workstation' }, value: t.bytes.toWorkstation },
      ],
    },
    {
      name: 'tp_dial_failures_total',
      help: "Dials that failed: the manager's outbound dials, and workstations' dials of intercepted connections.",
      type: 'counter',
      samples: [
        { labels: { kind: 'intercept' }, value: t.dialFailures.intercept },
        { labels: { kind: 'outbound' }, value: t.dialFailures.outbound },
      ],
    },
    {
      name: 'tp_authorization_refusals_total',
      help: 'Calls refused by access control (in permissive mode: the ones it would have refused), by code.',
      type: 'counter',
      samples: (['unauthenticated', 'permission-denied'] as const).map((code) => ({
        labels: { code: code.replace('-', '_') },
        value: core.access.refusals[code] ?? 0,
      })),
    },
    {
      name: 'tp_agent_connections_total',
      help: 'Connections the agents with a session accepted, as they last reported, by outcome.',
      type: 'counter',
      samples: [
        { labels: { outcome: 'passed_through' }, value: sum(agentPorts.map((p) => p.passedThrough)) },
        { labels: { outcome: 'intercepted' }, value: sum(agentPorts.map((p) => p.intercepted)) },
        // Of the intercepted: straight to the workstation, not through the manager (agent/direct.ts).
        { labels: { outcome: 'intercepted_direct' }, value: sum(agentPorts.map((p) => p.direct)) },
        { labels: { outcome: 'dial_failure' }, value: sum(agentPorts.map((p) => p.dialFailures)) },
      ],
    },
    {
      name: 'tp_agent_probes_total',
      help: 'Kubelet probes the agents performed for their apps, as they last reported, by result.',
      type: 'counter',
      samples: [
        { labels: { result: 'performed' }, value: sum(agentProbes.map((p) => p.performed)) },
        { labels: { result: 'failed' }, value: sum(agentProbes.map((p) => p.failed)) },
      ],
    },
  ];
}

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

/** Serves GET /metrics on host:port (port 0: any free one). */
export async function startMetricsServer(
  core: ManagerCore,
  host: string,
  port: number,
  log: Logger,
): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics is served here\n');
      return;
    }
    try {
      res
        .writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' })
        .end(renderPrometheus(managerMetrics(core)));
    } catch (e) {
      log.error('rendering the metrics failed', { error: (e as Error).message });
      res.writeHead(500).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) =>
      reject(new Error(`cannot serve the metrics on ${host}:${port}: ${e.message}`)),
    );
    server.listen(port, host, () => resolve());
  });
  const bound = (server.address() as { port: number }).port;
  log.info('serving Prometheus metrics', { address: `${host}:${bound}`, path: '/metrics' });
  return {
    port: bound,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
