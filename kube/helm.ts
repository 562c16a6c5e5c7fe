// `tp helm install|upgrade|uninstall`: runs the user's helm with the chart shipped in this package, so
// the chart always matches the tp version. Helm does the work (hooks, upgrades, history); tp only
// builds the command line and turns helm's common failures into messages that say what to do.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { findOnPath } from '../command/command.js';
import { UsageError } from '../netaddr/parse.js';
import { DEFAULT_MANAGER_NAMESPACE } from './annotations.js';
import type { KubeFlags } from './kubeconfig.js';

export const RELEASE_NAME = 'traffic-manager';
export type HelmAction = 'install' | 'upgrade' | 'uninstall';

export interface HelmOptions extends KubeFlags {
  /** Values files (-f), in order. */
  valuesFiles?: string[];
  /** --set KEY=VALUE, in order. */
  set?: string[];
  /** Wait for the manager to be ready (install, upgrade) or for the hooks to finish (uninstall). */
  wait?: boolean;
  /** Helm's --timeout, e.g. 5m. */
  timeout?: string;
  /** Install the chart from this directory instead of the one shipped with tp. */
  chart?: string;
}

/** The chart shipped in this package: <package root>/charts/tp (this file is dist/kube/helm.js). */
export function shippedChart(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const candidate of [path.resolve(here, '../../charts/tp'), path.resolve(here, '../charts/tp')]) {
    if (fs.existsSync(path.join(candidate, 'Chart.yaml'))) return candidate;
  }
  throw new Error(
    `the tp chart is missing from this installation (looked in ${path.resolve(here, '../../charts/tp')})`,
  );
}

/** The helm binary: $TP_HELM, else `helm` on PATH; a UsageError saying how to get it otherwise. */
export function findHelm(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TP_HELM) {
    if (!fs.existsSync(env.TP_HELM))
      throw new UsageError(`TP_HELM=${env.TP_HELM} does not exist: point it at a helm 3 binary`);
    return env.TP_HELM;
  }
  const helm = findOnPath('helm', env);
  if (helm) return helm;
  throw new UsageError(
    'helm is not installed: tp installs its traffic manager with helm 3. Install it (https://helm.sh/docs/intro/install/) or set TP_HELM to its path; with the lab, run eval "$(tp-lab env)"',
  );
}

/** The helm command line for an action; pure. */
export function helmArgs(action: HelmAction, opts: HelmOptions, chart: string): string[] {
  const namespace = opts.namespace || DEFAULT_MANAGER_NAMESPACE;
  const args: string[] = [action, RELEASE_NAME];
  if (action === 'install') args.push(chart, '--create-namespace');
  // A new chart version may add values: start from its defaults, then re-apply the user's.
  if (action === 'upgrade') args.push(chart, '--reset-then-reuse-values');
  args.push('--namespace', namespace);
  if (opts.kubeconfig) args.push('--kubeconfig', opts.kubeconfig);
  if (opts.context) args.push('--kube-context', opts.context);
  if (action !== 'uninstall') {
    for (const f of opts.valuesFiles ?? []) args.push('--values', f);
    for (const s of opts.set ?? []) args.push('--set', s);
  }
  if (opts.wait !== false) args.push('--wait');
  args.push('--timeout', opts.timeout ?? '5m');
  return args;
}

/** Helm's own words for the failures users meet, with the tp command that fixes them. */
export function explainHelmFailure(
  action: HelmAction,
  stderr: string,
  namespace: string,
): string | undefined {
  if (/cannot re-use a name that is still in use/.test(stderr))
    return `the traffic manager is already installed in namespace ${namespace}: use tp helm upgrade`;
  if (/has no deployed releases|release: not found/.test(stderr) && action !== 'install')
    return `no traffic manager is installed in namespace ${namespace}: use tp helm install (or pass -n NAMESPACE)`;
  if (/exists and cannot be imported into the current release/.test(stderr))
    return `a traffic manager from another Helm release is already in namespace ${namespace} (see helm list -n ${namespace}): use it, or helm uninstall that release first`;
  if (/Kubernetes cluster unreachable/.test(stderr))
    return 'the cluster is unreachable: check --kubeconfig/--context (kubectl get nodes must work)';
  if (/context deadline exceeded|timed out waiting for the condition/.test(stderr))
    return action === 'uninstall'
      ? 'helm timed out waiting for the uninstall hook that removes the agents: see kubectl logs -n NAMESPACE job/traffic-manager-uninstall-agents; helm uninstall --no-hooks skips it'
      : `helm timed out waiting for the traffic manager to be ready: see kubectl get pods -n ${namespace} and kubectl logs -n ${namespace} deploy/traffic-manager`;
  return undefined;
}

export interface HelmResult {
  status: number;
  stderr: string;
}

/**
 * Runs helm, passing its output through to the user (progress, NOTES) and keeping stderr to explain a
 * failure. Throws UsageError with the explanation when helm fails.
 */
export async function runHelm(
  action: HelmAction,
  opts: HelmOptions,
  io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream } = process,
): Promise<void> {
  const helm = findHelm();
  const chart = opts.chart ?? shippedChart();
  const args = helmArgs(action, opts, chart);
  const namespace = opts.namespace || DEFAULT_MANAGER_NAMESPACE;
  const result = await new Promise<HelmResult>((resolve, reject) => {
    const child = spawn(helm, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stdout.pipe(io.stdout, { end: false });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      io.stderr.write(d);
    });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status: status ?? 1, stderr }));
  });
  if (result.status !== 0) {
    const why = explainHelmFailure(action, result.stderr, namespace);
    throw new UsageError(
      `helm ${action} failed${why ? `: ${why}` : ` (exit ${result.status}); see helm's message above`}`,
    );
  }
}

/** Whether helm reports the release as installed in the namespace (for tp status and the tests). */
export function releaseInstalled(opts: KubeFlags): boolean {
  const helm = findHelm();
  const args = ['status', RELEASE_NAME, '--namespace', opts.namespace || DEFAULT_MANAGER_NAMESPACE];
  if (opts.kubeconfig) args.push('--kubeconfig', opts.kubeconfig);
  if (opts.context) args.push('--kube-context', opts.context);
  return spawnSync(helm, args, { stdio: 'ignore' }).status === 0;
}
