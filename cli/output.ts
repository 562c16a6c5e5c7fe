// How the CLI prints what it shows: text for people, -o json|yaml for scripts. The JSON/YAML shapes are
// plain views of the gRPC messages (documented in cli/README.md), stable across releases.
import * as YAML from 'yaml';
import { formatFilter } from '../http-filter/filter.js';
import { UsageError } from '../netaddr/parse.js';
import type { ConnectInfo } from '../rpc/gen/connector.js';
import { InterceptDisposition, type InterceptInfo, type WorkloadInfo } from '../rpc/gen/manager.js';

export type OutputFormat = 'text' | 'json' | 'yaml';

export function parseOutputFormat(value: string): OutputFormat {
  if (value === 'text' || value === 'json' || value === 'yaml') return value;
  throw new UsageError(`invalid output format "${value}": use json or yaml (or leave -o out for text)`);
}

export function print(format: OutputFormat, value: unknown, text: () => string): void {
  if (format === 'json') process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  else if (format === 'yaml') process.stdout.write(YAML.stringify(value));
  else process.stdout.write(text());
}

export interface InterceptView {
  name: string;
  workload: string;
  namespace: string;
  remotePort: number;
  localAddress: string;
  mechanism: string;
  client: string;
  /** `all traffic` (global) or the personal intercept's filter in one line: `x-dev=alice,path-prefix=/api`. */
  filter: string;
  disposition: string;
  message: string;
  id: string;
  pods: { pod: string; podIp: string; disposition: string; message: string }[];
  /** Only the variable count: the values may be secrets (tp intercept --env-file writes them). */
  environmentVariables: number;
}

const dispositionName = (d: InterceptDisposition) => InterceptDisposition[d] ?? String(d);

export function interceptView(i: InterceptInfo): InterceptView {
  const s = i.spec!;
  return {
    name: s.name,
    workload: s.workload,
    namespace: s.namespace,
    remotePort: s.remotePort,
    localAddress: `${s.targetHost || '127.0.0.1'}:${s.targetPort}`,
    mechanism: s.mechanism,
    client: s.client,
    filter: formatFilter(s.httpFilter),
    disposition: dispositionName(i.disposition),
    message: i.message,
    id: i.id,
    pods: i.pods.map((p) => ({
      pod: p.podName,
      podIp: p.podIp,
      disposition: dispositionName(p.disposition),
      message: p.message,
    })),
    environmentVariables: Object.keys(i.environment).length,
  };
}

/** The workstation's VIF: UP (a TUN with routes and DNS), or DOWN with the reason in rootDaemon.message. */
export interface VifView {
  state: 'UP' | 'DOWN';
  name: string;
  subnets: string[];
  dns: string;
  rootDaemon: { running: boolean; version: string; message: string };
}

export interface ClusterView {
  podSubnets: string[];
  serviceSubnets: string[];
  clusterDomain: string;
  dnsIps: string[];
}

export type StatusView =
  | { state: 'NOT_RUNNING'; message: string }
  | {
      state: string;
      managerAddress: string;
      managerVersion: string;
      sessionId: string;
      namespace: string;
      error: string;
      daemon: { pid: number; logFile: string };
      cluster: ClusterView | null;
      vif: VifView | null;
      intercepts: InterceptView[];
    };

export function statusView(info: ConnectInfo | undefined): StatusView {
  if (!info)
    return { state: 'NOT_RUNNING', message: 'the tp user daemon is not running: tp connect starts it' };
  const c = info.cluster;
  const r = info.rootDaemon;
  return {
    state: info.state,
    managerAddress: info.managerAddress,
    managerVersion: info.managerVersion,
    sessionId: info.sessionId,
    namespace: info.namespace,
    error: info.error,
    daemon: { pid: info.daemonPid, logFile: info.logFile },
    cluster: c
      ? {
          podSubnets: c.podSubnets,
          serviceSubnets: c.serviceSubnets,
          clusterDomain: c.clusterDomain,
          dnsIps: c.dnsIps,
        }
      : null,
    vif: r
      ? {
          state: r.vifName ? 'UP' : 'DOWN',
          name: r.vifName,
          subnets: r.subnets,
          dns: r.dns,
          rootDaemon: { running: r.running, version: r.version, message: r.message },
        }
      : null,
    intercepts: info.intercepts.map(interceptView),
  };
}

/** The VIF in one or two lines, for `tp connect` and `tp status`. */
export function vifLines(v: VifView | null, indent = ''): string[] {
  if (!v) return [];
  if (v.state === 'DOWN') return [`${indent}VIF:         ${v.rootDaemon.message || 'none'}`];
  return [
    `${indent}VIF:         ${v.name} routing ${v.subnets.join(', ') || 'nothing'}`,
    `${indent}DNS:         ${v.dns}`,
    `${indent}root daemon: ${v.rootDaemon.running ? `running (${v.rootDaemon.version})` : 'not running'}: ${v.rootDaemon.message}`,
  ];
}

export function statusText(v: StatusView): string {
  if (!('daemon' in v)) return 'Not connected: the tp user daemon is not running (tp connect starts it)\n';
  const lines: string[] = [];
  if (v.state === 'CONNECTED')
    lines.push(`Connected to the traffic manager at ${v.managerAddress} (tp-manager ${v.managerVersion})`);
  else if (v.state === 'RECONNECTING')
    lines.push(`Reconnecting to the traffic manager at ${v.managerAddress}`);
  else lines.push('Not connected (tp connect; --manager-address HOST:PORT for a manager outside Kubernetes)');
  if (v.error) lines.push(`  problem:     ${v.error}`);
  if (v.sessionId) lines.push(`  session:     ${v.sessionId}`);
  if (v.namespace) lines.push(`  namespace:   ${v.namespace}`);
  const c = v.cluster;
  if (c && c.podSubnets.length + c.serviceSubnets.length > 0)
    lines.push(
      `  cluster:     pods ${c.podSubnets.join(', ') || '-'}; services ${c.serviceSubnets.join(', ') || '-'}; DNS ${c.dnsIps.join(', ') || '-'} (${c.clusterDomain})`,
    );
  lines.push(...vifLines(v.vif, '  '));
  lines.push(`  daemon:      pid ${v.daemon.pid}, log ${v.daemon.logFile}`);
  lines.push(...interceptLines(v.intercepts, ''));
  return `${lines.join('\n')}\n`;
}

/** `Intercepts:` and one line each (name, state, port, filter, owner), for tp status and tp describe. */
export function interceptLines(intercepts: InterceptView[], indent: string): string[] {
  if (intercepts.length === 0) return [`${indent}Intercepts: none`];
  return [
    `${indent}Intercepts:`,
    ...intercepts.map(
      (i) =>
        `${indent}  ${i.name}: ${i.disposition}  ${i.namespace}/${i.workload} port ${i.remotePort} -> ${i.localAddress}, ${i.filter}, by ${i.client}` +
        (i.message ? `  (${i.message})` : ''),
    ),
  ];
}

export function workloadView(w: WorkloadInfo) {
  return {
    name: w.name,
    namespace: w.namespace,
    kind: w.kind,
    agentState: w.agentState,
    mechanism: w.mechanism,
    replicas: w.replicas,
    readyReplicas: w.readyReplicas,
    ports: w.ports.map((p) => ({
      name: p.name,
      appPort: p.appPort,
      agentPort: p.agentPort,
      protocol: p.protocol,
    })),
    agents: w.agents.map((a) => ({
      pod: a.podName,
      podIp: a.podIp,
      version: a.version,
      mechanism: a.mechanism,
    })),
    intercepts: w.intercepts.map(interceptView),
  };
}

export function listText(workloads: ReturnType<typeof workloadView>[]): string {
  if (workloads.length === 0)
    return 'No workloads (standalone mode lists the workloads whose agents have arrived)\n';
  const rows = [['NAMESPACE', 'WORKLOAD', 'KIND', 'AGENT', 'PORTS (APP->AGENT)', 'INTERCEPTED']];
  for (const w of workloads)
    rows.push([
      w.namespace,
      w.name,
      w.kind,
      `${w.agentState} (${w.agents.length} pod${w.agents.length === 1 ? '' : 's'})`,
      w.ports.map((p) => `${p.appPort}->${p.agentPort}`).join(',') || '-',
      w.intercepts.map((i) => `${i.remotePort} by ${i.client} [${i.filter}] (${i.disposition})`).join(', ') ||
        '-',
    ]);
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return `${rows
    .map((r) =>
      r
        .map((cell, c) => cell.padEnd(widths[c]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}
