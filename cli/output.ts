// How the CLI prints what it shows: text for people, -o json|yaml for scripts. The JSON/YAML shapes are
// plain views of the gRPC messages (documented in cli/README.md), stable across releases.
import * as YAML from 'yaml';
import { formatFilter } from '../http-filter/filter.js';
import { UsageError } from '../netaddr/parse.js';
import type { ConnectInfo, KernelNatStatus } from '../rpc/gen/connector.js';
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
  /** intercept, or ingest (the container's environment, no traffic). */
  kind: 'intercept' | 'ingest';
  /** The container the environment comes from ('' until an agent accepted). */
  container: string;
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
  /**
   * This workstation's mount of the container's volumes (--mount): where, and ro or rw; or the loopback
   * port serving them as SFTP (--local-mount-port; mountPoint ''); null: neither.
   */
  mount: { mountPoint: string; access: 'ro' | 'rw'; localMountPort: number } | null;
}

const dispositionName = (d: InterceptDisposition) => InterceptDisposition[d] ?? String(d);

export function interceptView(i: InterceptInfo): InterceptView {
  const s = i.spec!;
  return {
    name: s.name,
    kind: s.ingest ? 'ingest' : 'intercept',
    container: i.container || s.container,
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
    mount:
      i.mountPoint || i.localMountPort
        ? {
            mountPoint: i.mountPoint,
            access: i.mountReadWrite ? 'rw' : 'ro',
            localMountPort: i.localMountPort,
          }
        : null,
  };
}

/** The workstation's VIF: UP (a TUN with routes and DNS), or DOWN with the reason in rootDaemon.message. */
export interface VifView {
  state: 'UP' | 'DOWN';
  name: string;
  subnets: string[];
  dns: string;
  rootDaemon: { running: boolean; version: string; message: string };
  /** The kernel NAT of the VIF (docs/vif.md#connections); null without a VIF. */
  kernelNat: KernelNatStatus | null;
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
      /** The last loss of the manager session and its recovery, in one line ('' if never lost). */
      lastOutage: string;
      daemon: { pid: number; logFile: string; logLevel: string };
      cluster: ClusterView | null;
      vif: VifView | null;
      intercepts: InterceptView[];
      /** Connected: this tp's, the manager's and the agents' versions, and what does not match. */
      versions?: VersionsView;
    };

export interface VersionsView {
  client: string;
  manager: string;
  /** The agents with a session, by version (every namespace the user may see). */
  agents: { version: string; pods: number }[];
  /** One line per mismatch, naming the fix. */
  mismatches: string[];
}

/** The versions of tp, the traffic manager and the agents, and a warning for each that differs (pure). */
export function versionsView(client: string, manager: string, workloads: WorkloadInfo[]): VersionsView {
  const byVersion = new Map<string, number>();
  for (const w of workloads)
    for (const a of w.agents) byVersion.set(a.version, (byVersion.get(a.version) ?? 0) + 1);
  const agents = [...byVersion]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([version, pods]) => ({ version, pods }));
  const mismatches: string[] = [];
  if (manager && manager !== client)
    mismatches.push(
      `tp-manager ${manager} is not this tp's version ${client}: tp helm upgrade installs the manager of this tp (or use tp ${manager})`,
    );
  for (const a of agents)
    if (manager && a.version !== manager)
      mismatches.push(
        `${a.pods} agent${a.pods === 1 ? '' : 's'} run${a.pods === 1 ? 's' : ''} ${a.version}, not the manager's ${manager}: they update when their pods roll (kubectl rollout restart)`,
      );
  return { client, manager, agents, mismatches };
}

export function statusView(info: ConnectInfo | undefined, versions?: VersionsView): StatusView {
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
    lastOutage: info.lastOutage,
    daemon: { pid: info.daemonPid, logFile: info.logFile, logLevel: info.logLevel },
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
          kernelNat: r.kernelNat ?? null,
        }
      : null,
    intercepts: info.intercepts.map(interceptView),
    ...(versions ? { versions } : {}),
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
  if (v.lastOutage) lines.push(`  last outage: ${v.lastOutage}`);
  if (v.sessionId) lines.push(`  session:     ${v.sessionId}`);
  if (v.namespace) lines.push(`  namespace:   ${v.namespace}`);
  const c = v.cluster;
  if (c && c.podSubnets.length + c.serviceSubnets.length > 0)
    lines.push(
      `  cluster:     pods ${c.podSubnets.join(', ') || '-'}; services ${c.serviceSubnets.join(', ') || '-'}; DNS ${c.dnsIps.join(', ') || '-'} (${c.clusterDomain})`,
    );
  lines.push(...vifLines(v.vif, '  '));
  lines.push(
    `  daemon:      pid ${v.daemon.pid}, log ${v.daemon.logFile}${v.daemon.logLevel ? ` (level ${v.daemon.logLevel})` : ''}`,
  );
  if (v.versions) {
    const agents = v.versions.agents.map((a) => `${a.version} (${a.pods})`).join(', ') || 'none';
    lines.push(`  versions:    tp ${v.versions.client}, tp-manager ${v.versions.manager}, agents ${agents}`);
    for (const m of v.versions.mismatches) lines.push(`  WARNING:     ${m}`);
  }
  lines.push(...interceptLines(v.intercepts, ''));
  return `${lines.join('\n')}\n`;
}

/** `Intercepts:` and one line each (name, state, port, filter, owner), for tp status and tp describe. */
export function interceptLines(all: InterceptView[], indent: string): string[] {
  const intercepts = all.filter((i) => i.kind !== 'ingest');
  const ingests = all.filter((i) => i.kind === 'ingest');
  const lines =
    intercepts.length === 0
      ? [`${indent}Intercepts: none`]
      : [
          `${indent}Intercepts:`,
          ...intercepts.map(
            (i) =>
              `${indent}  ${i.name}: ${i.disposition}  ${i.namespace}/${i.workload} port ${i.remotePort} -> ${i.localAddress}, ${i.filter}, by ${i.client}` +
              (i.container ? ` (container ${i.container})` : '') +
              mountText(i) +
              pathText(i) +
              (i.message ? `  (${i.message})` : ''),
          ),
        ];
  if (ingests.length > 0)
    lines.push(
      `${indent}Ingests:`,
      ...ingests.map(
        (i) =>
          `${indent}  ${i.name}: ${i.disposition}  ${i.namespace}/${i.workload} container ${i.container || '(not chosen yet)'}, by ${i.client}` +
          mountText(i) +
          (i.message ? `  (${i.message})` : ''),
      ),
    );
  return lines;
}

/**
 * How the pods' connections reach the workstation, as the daemon says in each pod's message: straight from
 * their agents (a port-forward to the pod) or through the traffic manager; '' when it says nothing.
 */
function pathText(i: InterceptView): string {
  const said = i.pods.filter((p) => p.message.startsWith('connections '));
  if (said.length === 0) return '';
  const straight = said.filter((p) => p.message.startsWith('connections straight from the agent')).length;
  if (straight === 0) return ', connections through the traffic manager';
  if (straight === said.length)
    return `, connections straight from the agent${said.length > 1 ? ` (${said.length} pods)` : ''}`;
  return `, connections straight from the agent in ${straight} of ${said.length} pods (the others through the traffic manager)`;
}

const mountText = (i: InterceptView) => {
  if (!i.mount) return '';
  if (i.mount.localMountPort)
    return `, volumes over SFTP on 127.0.0.1:${i.mount.localMountPort} (${i.mount.access})`;
  return `, volumes at ${i.mount.mountPoint} (${i.mount.access})`;
};

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
      // As the agent last reported them to the manager (every 10 s while they change); null before that.
      counters: a.counters ? { ports: a.counters.ports, probes: a.counters.probes } : null,
    })),
    intercepts: w.intercepts.map(interceptView),
  };
}

export function listText(workloads: ReturnType<typeof workloadView>[]): string {
  if (workloads.length === 0)
    return 'No workloads (standalone mode lists the workloads whose agents have arrived)\n';
  const rows = [['NAMESPACE', 'WORKLOAD', 'KIND', 'AGENT', 'PORTS (APP->AGENT)', 'INTERCEPTED / INGESTED']];
  for (const w of workloads)
    rows.push([
      w.namespace,
      w.name,
      w.kind,
      `${w.agentState} (${w.agents.length} pod${w.agents.length === 1 ? '' : 's'})`,
      w.ports.map((p) => `${p.appPort}->${p.agentPort}`).join(',') || '-',
      w.intercepts
        .map((i) =>
          i.kind === 'ingest'
            ? `ingest ${i.container || '?'} by ${i.client} (${i.disposition})${mountText(i)}`
            : `${i.remotePort} by ${i.client} [${i.filter}] (${i.disposition})${mountText(i)}`,
        )
        .join(', ') || '-',
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
