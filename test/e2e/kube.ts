// What the scenarios do to a cluster: kubectl (the real one), apply manifests, wait for conditions,
// run commands on the workstation (tplab-ws for the lab) or in a client pod.
import { type ChildProcess, spawn } from 'node:child_process';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { waitFor as pollFor } from '../../command/wait.js';
import {
  DEFAULT_MANAGER_NAMESPACE,
  INJECT_ANNOTATION,
  INJECT_ENABLED,
  INJECTED_ANNOTATION,
  NOT_INJECTED_ANNOTATION,
} from '../../kube/annotations.js';
import { cachedBinDir } from '../../lab/binaries.js';
import { type CommandResult, runCommand } from '../../lab/command.js';
import { type Cluster, repoRoot } from './cluster.js';

/**
 * testbed's waitFor with the cluster's pace (every second, up to two minutes) and any falsy answer
 * (null, '', 0) counting as not yet.
 */
export function waitFor<T>(
  what: string | (() => string),
  probe: () => Promise<T | null | undefined | false> | T | null | undefined | false,
  timeoutMs = 120_000,
  intervalMs = 1_000,
): Promise<T> {
  return pollFor(what, async () => (await probe()) || undefined, timeoutMs, intervalMs) as Promise<T>;
}

export function kubectl(
  c: Cluster,
  args: string[],
  options: { input?: string; check?: boolean; timeoutMs?: number } = {},
): Promise<CommandResult> {
  return runCommand([c.kubectl, ...args], {
    ...options,
    timeoutMs: options.timeoutMs ?? 120_000,
    env: { ...process.env, KUBECONFIG: c.kubeconfig },
  });
}

export async function kubectlJson<T>(c: Cluster, args: string[]): Promise<T> {
  const r = await kubectl(c, [...args, '-o', 'json']);
  return JSON.parse(r.stdout) as T;
}

/** kubectl apply -f - with the objects as one YAML stream. */
export async function apply(c: Cluster, objects: object[], namespace?: string): Promise<void> {
  const yaml = objects.map((o) => stringify(o)).join('---\n');
  await kubectl(c, ['apply', ...(namespace ? ['-n', namespace] : []), '-f', '-'], { input: yaml });
}

/** A fresh namespace for one test file (deleted first if a previous run left it). */
export async function freshNamespace(c: Cluster, name: string): Promise<void> {
  await kubectl(c, ['delete', 'namespace', name, '--ignore-not-found', '--wait=true', '--timeout=180s']);
  await kubectl(c, ['create', 'namespace', name]);
  // Pods need the namespace's default ServiceAccount, which a controller creates asynchronously.
  await waitFor(`the default ServiceAccount in ${name}`, async () => {
    const r = await kubectl(c, ['get', 'serviceaccount', 'default', '-n', name], { check: false });
    return r.code === 0;
  });
}

/** Runs a command on the workstation: in tplab-ws through `tp-lab exec`, or on this host. */
export function onWorkstation(
  c: Cluster,
  argv: string[],
  options: { check?: boolean; timeoutMs?: number } = {},
): Promise<CommandResult> {
  return runCommand([...c.workstationPrefix, ...argv], {
    ...options,
    timeoutMs: options.timeoutMs ?? 60_000,
    env: c.kind === 'external' ? { ...process.env, KUBECONFIG: c.kubeconfig } : process.env,
  });
}

export type TpRunner = (
  args: string[],
  opts?: { check?: boolean; timeoutMs?: number },
) => Promise<CommandResult>;

/**
 * `tp` run on the workstation as one simulated workstation: its own run and log directories (so two
 * of them can be connected at once), the lab's helm (not on the workstation's PATH; elsewhere helm
 * comes from PATH or TP_HELM), and any further environment.
 */
export function tpOnWorkstation(c: Cluster, scratchDir: string, env: Record<string, string> = {}): TpRunner {
  const argv = tpArgv(c, scratchDir, env);
  return (args, opts = {}) =>
    onWorkstation(c, argv(args), { timeoutMs: opts.timeoutMs ?? 180_000, check: opts.check });
}

/**
 * The command line of `tp ARGS` as tpOnWorkstation runs it (for startOnWorkstation: a tp that keeps
 * running, such as `tp intercept … -- COMMAND`).
 */
export function tpArgv(
  c: Cluster,
  scratchDir: string,
  env: Record<string, string> = {},
): (args: string[]) => string[] {
  const vars = {
    TP_RUN_DIR: `${scratchDir}/run`,
    TP_LOG_DIR: `${scratchDir}/logs`,
    ...(c.kind === 'lab' ? { TP_HELM: path.join(cachedBinDir(), 'helm') } : {}),
    ...env,
  };
  const tpMain = path.join(repoRoot, 'dist', 'cli', 'main.js');
  return (args) => [
    'env',
    ...Object.entries(vars).map(([k, v]) => `${k}=${v}`),
    process.execPath,
    '--',
    tpMain,
    ...args,
  ];
}

export interface Background {
  child: ChildProcess;
  output(): string;
  /** Resolves when the combined output matches; rejects if the process exits first. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** Resolves with its exit code once it has ended by itself; rejects after timeoutMs. */
  exited(timeoutMs?: number): Promise<number | null>;
  stop(): Promise<void>;
}

/** Starts a long-running command on the workstation (e.g. kubectl port-forward). */
export function startOnWorkstation(c: Cluster, argv: string[]): Background {
  const full = [...c.workstationPrefix, ...argv];
  const child = spawn(full[0]!, full.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: c.kind === 'external' ? { ...process.env, KUBECONFIG: c.kubeconfig } : process.env,
  });
  let out = '';
  let exited = false;
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
  });
  const closed = new Promise<void>((resolve) =>
    child.on('close', () => {
      exited = true;
      resolve();
    }),
  );
  return {
    child,
    output: () => out,
    waitForOutput: (pattern, timeoutMs = 60_000) =>
      waitFor(
        `\`${argv.join(' ')}\` to print ${pattern}`,
        () => {
          if (pattern.test(out)) return true;
          if (exited) throw new Error(`it exited: ${out.trim()}`);
          return false;
        },
        timeoutMs,
        200,
      ).then(() => undefined),
    exited: async (timeoutMs = 60_000) => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(new Error(`\`${argv.join(' ')}\` still runs after ${timeoutMs / 1000} s: ${out.trim()}`)),
          timeoutMs,
        );
      });
      try {
        await Promise.race([closed, late]);
      } finally {
        clearTimeout(timer);
      }
      return child.exitCode;
    },
    stop: async () => {
      if (exited) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await closed;
      clearTimeout(t);
    },
  };
}

/** Runs a command in a pod's container through `kubectl exec` (the API server -> node streaming path). */
export function execInPod(
  c: Cluster,
  namespace: string,
  pod: string,
  argv: string[],
  options: { check?: boolean; container?: string } = {},
): Promise<CommandResult> {
  const { container, ...rest } = options;
  return kubectl(
    c,
    ['exec', '-n', namespace, pod, ...(container ? ['-c', container] : []), '--', ...argv],
    rest,
  );
}

/**
 * Waits until the Service has `count` ready endpoints. A Deployment's rollout can finish before the
 * EndpointSlice controller (and then kube-proxy) catch up, on any cluster.
 */
export async function waitForEndpoints(
  c: Cluster,
  namespace: string,
  service: string,
  count: number,
  addresses?: string[],
) {
  const what = addresses ? `exactly ${addresses.join(', ')}` : `${count} ready endpoints`;
  await waitFor(`${what} behind Service ${namespace}/${service}`, async () => {
    const slices = await kubectlJson<{
      items: { endpoints?: { addresses: string[]; conditions?: { ready?: boolean } }[] }[];
    }>(c, ['get', 'endpointslices', '-n', namespace, '-l', `kubernetes.io/service-name=${service}`]);
    const all = slices.items.flatMap((s) => s.endpoints ?? []);
    const ready = all.filter((e) => e.conditions?.ready);
    if (ready.length !== count) return false;
    // With addresses: no other endpoint at all, not even a terminating one kube-proxy may still use.
    if (!addresses) return true;
    const ips = all.flatMap((e) => e.addresses).sort();
    return ips.join(',') === [...addresses].sort().join(',');
  });
}

/**
 * Waits until the API server calls tp's injection webhook again (after the webhook Service was without
 * endpoints): a server-side dry run of a pod that asks for the agent comes back with tp's answer on it
 * (injected, or refused with a reason). Endpoints alone are not enough: on kind the API server reaches the
 * webhook through the Service's ClusterIP, which kube-proxy programs some seconds later.
 */
export async function waitForWebhook(c: Cluster, namespace: string): Promise<void> {
  await waitFor('the API server to reach the injection webhook again', async () => {
    const pod = await kubectlJson<{
      metadata: { annotations?: Record<string, string> };
      spec: { containers: { name: string }[] };
    }>(c, [
      'run',
      'tp-webhook-probe',
      '-n',
      namespace,
      '--image=lab/echo:1',
      '--restart=Never',
      '--dry-run=server',
      `--annotations=${INJECT_ANNOTATION}=${INJECT_ENABLED}`,
    ]);
    const answered = Object.keys(pod.metadata.annotations ?? {}).some(
      (k) => k === INJECTED_ANNOTATION || k === NOT_INJECTED_ANNOTATION,
    );
    return answered || pod.spec.containers.length > 1;
  });
}

/** The chart's namespace in the e2e files, and the label of its manager pods. */
export const MANAGER_NS = DEFAULT_MANAGER_NAMESPACE;
export const MANAGER_SELECTOR = 'app.kubernetes.io/name=traffic-manager';

/** `kubectl delete pod` of the manager pods, not waiting for them to go (the Deployment makes new ones). */
export async function deleteManagerPods(c: Cluster): Promise<void> {
  await kubectl(c, ['delete', 'pod', '-n', MANAGER_NS, '-l', MANAGER_SELECTOR, '--wait=false']);
}

/** `kubectl rollout status` of a Deployment, with a bound. */
export async function rolloutStatus(c: Cluster, namespace: string, deployment: string): Promise<void> {
  await kubectl(c, ['rollout', 'status', '-n', namespace, `deploy/${deployment}`, '--timeout=180s'], {
    timeoutMs: 200_000,
  });
}

/** A lab/shell pod named `name` that sleeps, for requests from inside the cluster; waits until Ready. */
export async function startClientPod(c: Cluster, namespace: string, name = 'client'): Promise<void> {
  await kubectl(c, [
    'run',
    name,
    '-n',
    namespace,
    `--image=${c.images.shell}`,
    '--restart=Never',
    '--',
    'sh',
    '-c',
    // PID 1 ignores SIGTERM unless it handles it: end at once when the pod is deleted.
    'trap "exit 0" TERM; sleep 3600 & wait',
  ]);
  await kubectl(c, ['wait', '-n', namespace, '--for=condition=Ready', `pod/${name}`, '--timeout=120s'], {
    timeoutMs: 130_000,
  });
}

export interface PodSummary {
  name: string;
  phase: string;
  ip: string;
  ready: boolean;
  deleting: boolean;
}

interface PodJson {
  metadata: { name: string; deletionTimestamp?: string };
  status?: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[] };
}

export async function listPods(c: Cluster, namespace: string, selector: string): Promise<PodSummary[]> {
  const list = await kubectlJson<{ items: PodJson[] }>(c, ['get', 'pods', '-n', namespace, '-l', selector]);
  return list.items.map((p) => ({
    name: p.metadata.name,
    phase: p.status?.phase ?? '',
    ip: p.status?.podIP ?? '',
    ready: p.status?.conditions?.some((x) => x.type === 'Ready' && x.status === 'True') ?? false,
    deleting: Boolean(p.metadata.deletionTimestamp),
  }));
}

/**
 * `tp helm install` into tp-system unless the chart is already there, then waits for the traffic manager.
 * True when this call installed it: the caller uninstalls it again at the end.
 */
export async function ensureChart(c: Cluster, tp: TpRunner): Promise<boolean> {
  const install = await tp(['helm', 'install'], { check: false, timeoutMs: 360_000 });
  if (install.code !== 0 && !/already installed/.test(install.stderr))
    throw new Error(`tp helm install failed: ${install.stderr.trim()}`);
  await rolloutStatus(c, MANAGER_NS, 'traffic-manager');
  return install.code === 0;
}
