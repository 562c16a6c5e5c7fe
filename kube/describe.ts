// `tp describe WORKLOAD`: what an admin needs to see about one workload, read straight from the API
// server with the user's own credentials (it works even when the traffic manager is down): its pods,
// the ports the agent captures, the mechanism, the agent state, and the capture rules as installed in
// each pod — the tp-init container's log (it prints the rules it applied) and, where the cluster lets
// us exec into the pod with the rights to read them, a live `tp-init status` with packet counters.
import { PassThrough } from 'node:stream';
import {
  AppsV1Api,
  CoreV1Api,
  Exec,
  type KubeConfig,
  type V1LabelSelector,
  type V1Pod,
  type V1ReplicaSet,
  type V1Status,
} from '@kubernetes/client-node';
import { ENV } from '../agentconfig/env.js';
import { UsageError } from '../netaddr/parse.js';
import type { AgentCounters } from '../rpc/gen/manager.js';
import {
  AGENT_CONTAINER,
  INIT_CONTAINER,
  PROBES_NOT_REWRITTEN_ANNOTATION,
  PROBES_REWRITTEN_ANNOTATION,
} from './annotations.js';
import { apiErrorCode, apiErrorMessage } from './kubeconfig.js';
import {
  buildWorkload,
  ownerOfPod,
  type Workload,
  type WorkloadKind,
  type WorkloadObject,
  type WorkloadPod,
} from './workload-state.js';

export interface PodCapture {
  pod: WorkloadPod;
  /** The tp-init container's args: the ports and agent settings the rules were rendered from. */
  initArgs: string[];
  /** The tp-init container's output: the rules as it installed them. */
  initLog: string;
  /** The kubelet probes the webhook rewrote to the agent's probe port, and the ones it left (with why). */
  probes: PodProbes;
  /** `tp-init status -o json` run in the pod now, when the cluster allowed it. */
  liveStatus?: unknown;
  /** Why the live check could not run. */
  liveStatusError?: string;
  /** The agent's counters as it last reported them to the manager (only when tp is connected). */
  agentCounters?: AgentCounters;
}

export interface WorkloadDescription {
  workload: Workload;
  services: { name: string; ports: { port: number; targetPort: string }[] }[];
  pods: PodCapture[];
}

export interface PodProbes {
  /** The agent's probe port (its TP_PROBE_PORT), or 0 when the pod has no agent. */
  port: number;
  /** `container/kind` of each rewritten probe. */
  rewritten: string[];
  /** `container/kind: why` of each network probe left as written. */
  notRewritten: string[];
}

/** What the webhook recorded on an injected pod about its probes. */
export function podProbes(pod: V1Pod | undefined): PodProbes {
  const annotations = pod?.metadata?.annotations ?? {};
  const agent = pod?.spec?.containers.find((c) => c.name === AGENT_CONTAINER);
  const port = Number(agent?.env?.find((e) => e.name === ENV.probePort)?.value ?? 0);
  const list = (value: string | undefined, separator: string) =>
    (value ?? '').split(separator).filter((x) => x !== '');
  return {
    port,
    rewritten: list(annotations[PROBES_REWRITTEN_ANNOTATION], ','),
    notRewritten: list(annotations[PROBES_NOT_REWRITTEN_ANNOTATION], '; '),
  };
}

export function labelSelectorString(selector: V1LabelSelector | undefined): string {
  const parts = Object.entries(selector?.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const e of selector?.matchExpressions ?? []) {
    const values = (e.values ?? []).join(',');
    if (e.operator === 'In') parts.push(`${e.key} in (${values})`);
    else if (e.operator === 'NotIn') parts.push(`${e.key} notin (${values})`);
    else if (e.operator === 'Exists') parts.push(e.key);
    else if (e.operator === 'DoesNotExist') parts.push(`!${e.key}`);
  }
  return parts.join(',');
}

async function readWorkload(
  kc: KubeConfig,
  namespace: string,
  name: string,
): Promise<{ kind: WorkloadKind; obj: WorkloadObject }> {
  const apps = kc.makeApiClient(AppsV1Api);
  const attempts: [WorkloadKind, () => Promise<WorkloadObject>][] = [
    ['Deployment', () => apps.readNamespacedDeployment({ name, namespace })],
    ['StatefulSet', () => apps.readNamespacedStatefulSet({ name, namespace })],
    ['ReplicaSet', () => apps.readNamespacedReplicaSet({ name, namespace })],
  ];
  for (const [kind, read] of attempts) {
    try {
      const obj = await read();
      if (kind === 'ReplicaSet' && obj.metadata?.ownerReferences?.some((r) => r.controller)) {
        const owner = obj.metadata.ownerReferences.find((r) => r.controller)!;
        throw new UsageError(
          `ReplicaSet ${name} belongs to ${owner.kind} ${owner.name}: describe that instead`,
        );
      }
      return { kind, obj };
    } catch (err) {
      if (err instanceof UsageError) throw err;
      if (apiErrorCode(err) !== 404)
        throw new UsageError(
          `cannot read ${kind} ${name} in namespace ${namespace}: ${apiErrorMessage(err)}`,
        );
    }
  }
  throw new UsageError(
    `no Deployment, StatefulSet or ReplicaSet named "${name}" in namespace "${namespace}": see tp list`,
  );
}

/** Runs a command in a container and collects its output; rejects with the reason it could not. */
export async function execInPod(
  kc: KubeConfig,
  namespace: string,
  pod: string,
  container: string,
  command: string[],
  timeoutMs = 15_000,
): Promise<{ stdout: string; stderr: string; exitCode: number }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  stderr.on('data', (d: Buffer) => {
    err += d.toString();
  });
  return new Promise((resolve, reject) => {
    let status: V1Status | undefined;
    const timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs / 1000}s`)), timeoutMs);
    new Exec(kc)
      .exec(namespace, pod, container, command, stdout, stderr, null, false, (s) => {
        status = s;
      })
      .then((ws) => {
        ws.on('close', () => {
          clearTimeout(timer);
          // NonZeroExitCode carries the code in details.causes[reason=ExitCode].
          const code =
            status?.status === 'Success'
              ? 0
              : Number(status?.details?.causes?.find((c) => c.reason === 'ExitCode')?.message ?? 1);
          if (status?.status === 'Failure' && status.reason !== 'NonZeroExitCode')
            reject(new Error(status.message ?? 'exec failed'));
          else resolve({ stdout: out, stderr: err, exitCode: code });
        });
        ws.on('error', (e: Error) => {
          clearTimeout(timer);
          reject(e);
        });
      })
      .catch((e: unknown) => {
        clearTimeout(timer);
        reject(new Error(apiErrorMessage(e)));
      });
  });
}

/** `tp-init status` takes the same capture flags `apply` got. */
export function statusCommand(initArgs: string[]): string[] {
  const flags = initArgs[0] === 'apply' ? initArgs.slice(1) : initArgs;
  return ['tp-init', 'status', '-o', 'json', ...flags.filter((f) => f !== '--dry-run')];
}

export async function describeWorkload(
  kc: KubeConfig,
  namespace: string,
  name: string,
  opts: { live?: boolean; defaultMechanism?: 'iptables' | 'ebpf' } = {},
): Promise<WorkloadDescription> {
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);
  const { kind, obj } = await readWorkload(kc, namespace, name);
  const selector = labelSelectorString(obj.spec?.selector);
  const [podList, serviceList, rsList] = await Promise.all([
    core.listNamespacedPod({ namespace, labelSelector: selector || undefined }),
    core.listNamespacedService({ namespace }),
    kind === 'Deployment'
      ? apps.listNamespacedReplicaSet({ namespace })
      : Promise.resolve({ items: [] as V1ReplicaSet[] }),
  ]);
  const replicaSets = new Map(rsList.items.map((r) => [r.metadata?.name ?? '', r]));
  const pods = podList.items.filter((p) => {
    const owner = ownerOfPod(
      p,
      (_ns, n) =>
        replicaSets.get(n) ?? (kind === 'ReplicaSet' && n === name ? (obj as V1ReplicaSet) : undefined),
    );
    return owner?.kind === kind && owner.name === name;
  });
  const workload = buildWorkload(kind, obj, pods, serviceList.items, opts.defaultMechanism ?? 'iptables');
  const services = serviceList.items
    .filter((s) => workload.ports.some((p) => p.services.includes(s.metadata?.name ?? '')))
    .map((s) => ({
      name: s.metadata?.name ?? '',
      ports: (s.spec?.ports ?? []).map((p) => ({ port: p.port, targetPort: String(p.targetPort ?? p.port) })),
    }));
  const byName = new Map<string, V1Pod>(pods.map((p) => [p.metadata?.name ?? '', p]));
  const captures = await Promise.all(
    workload.pods.map(async (pod): Promise<PodCapture> => {
      const spec = byName.get(pod.name);
      const init = spec?.spec?.initContainers?.find((c) => c.name === INIT_CONTAINER);
      const capture: PodCapture = {
        pod,
        initArgs: init?.args ?? [],
        initLog: '',
        probes: podProbes(spec),
      };
      if (!init) return capture;
      try {
        capture.initLog = await core.readNamespacedPodLog({
          name: pod.name,
          namespace,
          container: INIT_CONTAINER,
        });
      } catch (err) {
        capture.initLog = `(log unavailable: ${apiErrorMessage(err)})`;
      }
      if (opts.live && pod.phase === 'Running' && pod.hasAgent) {
        try {
          const r = await execInPod(
            kc,
            namespace,
            pod.name,
            AGENT_CONTAINER,
            statusCommand(capture.initArgs),
          );
          try {
            capture.liveStatus = JSON.parse(r.stdout);
          } catch {
            capture.liveStatusError = `tp-init status exited ${r.exitCode}: ${(r.stderr || r.stdout).trim().split('\n').slice(-2).join(' ')}`;
          }
        } catch (err) {
          capture.liveStatusError = (err as Error).message;
        }
      }
      return capture;
    }),
  );
  return { workload, services, pods: captures };
}

function indent(text: string, by: string): string {
  return text
    .trimEnd()
    .split('\n')
    .map((l) => `${by}${l}`)
    .join('\n');
}

interface LiveFamily {
  family: number;
  backend: string;
  inPlace: boolean;
  rules: { line: string; present: boolean; packets?: number }[];
  problems: string[];
}

/** The human-readable form. */
export function renderDescription(d: WorkloadDescription): string {
  const w = d.workload;
  const lines: string[] = [];
  lines.push(`${w.kind} ${w.namespace}/${w.name}`);
  lines.push(`  replicas:     ${w.readyReplicas}/${w.replicas} ready`);
  lines.push(`  agent:        ${w.agentState}${w.agentMessage ? ` (${w.agentMessage})` : ''}`);
  lines.push(`  mechanism:    ${w.mechanism}`);
  const ports = w.ports.map((p) => {
    const via = p.services.length ? ` via Service ${p.services.join(', ')}` : '';
    return `${p.port}/${p.protocol}${p.name ? ` (${p.name})` : ''} in container ${p.container}${via}`;
  });
  lines.push(`  ports:        ${ports.length ? ports.join('\n                ') : 'none'}`);
  for (const s of d.services) {
    lines.push(`  service:      ${s.name} ${s.ports.map((p) => `${p.port}->${p.targetPort}`).join(', ')}`);
  }
  lines.push('  pods:');
  if (d.pods.length === 0) lines.push('    (none)');
  for (const c of d.pods) {
    const p = c.pod;
    const agent = p.hasAgent ? `agent ${p.agentReady ? 'ready' : 'not ready'}` : 'no agent';
    lines.push(
      `    ${p.name}  ${p.ip || '-'}  ${p.phase}${p.ready ? ' ready' : ''}${p.terminating ? ' terminating' : ''}  ${agent}`,
    );
    if (p.capturedPorts)
      lines.push(
        `      captured:  ${p.capturedPorts
          .split(',')
          .map((m) => m.replace(':', ' -> agent '))
          .join(', ')} (${p.mechanism || w.mechanism})`,
      );
    if (p.notInjected) lines.push(`      not injected: ${p.notInjected}`);
    if (p.failure) lines.push(`      failure:   ${p.failure}`);
    if (c.initArgs.length) lines.push(`      tp-init:   ${c.initArgs.join(' ')}`);
    if (c.probes.rewritten.length)
      lines.push(
        `      probes:    ${c.probes.rewritten.join(', ')} -> agent probe port ${c.probes.port || '?'} (the agent checks the app on loopback)`,
      );
    for (const why of c.probes.notRewritten) lines.push(`      probe left as written: ${why}`);
    if (c.agentCounters) lines.push(`      counters:  ${countersLine(c.agentCounters)}`);
    if (c.initLog.trim()) {
      lines.push('      rules as installed (kubectl logs -c tp-init):');
      lines.push(indent(c.initLog, '        '));
    }
    if (c.liveStatus) {
      const families = (c.liveStatus as { families?: LiveFamily[] }).families ?? [];
      for (const f of families) {
        lines.push(`      live check IPv${f.family} (${f.backend}): ${f.inPlace ? 'in place' : 'DRIFT'}`);
        for (const r of f.rules)
          lines.push(`        ${r.present ? 'ok     ' : 'MISSING'} ${r.packets ?? 0} pkts  ${r.line}`);
        for (const problem of f.problems) lines.push(`        problem: ${problem}`);
      }
    } else if (c.liveStatusError) {
      lines.push(`      live check: unavailable (${c.liveStatusError})`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/**
 * An agent's counters in one line, e.g. "app port 8080: 12 passed through, 3 intercepted, 0 dial failures;
 * probes: echo/readiness 40 (2 failed)" (the agent's own SIGUSR2 line, from what it reported).
 */
export function countersLine(c: AgentCounters): string {
  const ports = c.ports.map(
    (p) =>
      `app port ${p.appPort}: ${p.passedThrough} passed through, ${p.intercepted} intercepted, ${p.dialFailures} dial failures`,
  );
  const probes = c.probes.map((p) => `${p.probe} ${p.performed} (${p.failed} failed)`);
  return [...ports, ...(probes.length ? [`probes: ${probes.join(', ')}`] : [])].join('; ') || 'none';
}
