// Installing and removing agents: the manager never edits pods. It marks the workload's pod template
// (the inject annotation, the mechanism, a restartedAt stamp) and lets the workload's own controller
// roll the pods; the webhook injects the new ones. Removal is the same patch in reverse. A bare
// ReplicaSet does not roll on a template change, so its pods are deleted for it to recreate.
import {
  AppsV1Api,
  CoreV1Api,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import {
  AGENT_MECHANISM_ANNOTATION,
  CAPTURE_PORTS_ANNOTATION,
  INJECT_ANNOTATION,
  INJECT_ENABLED,
  type Mechanism,
  RESTARTED_AT_ANNOTATION,
} from '../../kube/annotations.js';
import { apiErrorMessage } from '../../kube/kubeconfig.js';
import {
  undeclaredServicePorts,
  type Workload,
  type WorkloadKind,
  type WorkloadObject,
} from '../../kube/workload-state.js';
import type { Logger } from '../../logging/logger.js';
import type { KubeWorkloadSource } from './workload-source.js';

/** A failure the client shows the user as it is (not found, no ports, injection failed, timeout). */
export class AgentInstallError extends Error {
  override name = 'AgentInstallError';
  constructor(
    readonly code: 'not-found' | 'failed-precondition' | 'deadline-exceeded' | 'unavailable',
    message: string,
  ) {
    super(message);
  }
}

/** The pod-template annotations that ask for the agent, or (mechanism undefined) remove it. */
export function templateAnnotationPatch(
  request: { mechanism: Mechanism; capturePorts: number[] } | undefined,
  now: Date,
): { spec: { template: { metadata: { annotations: Record<string, string | null> } } } } {
  const annotations: Record<string, string | null> = request
    ? {
        [INJECT_ANNOTATION]: INJECT_ENABLED,
        [AGENT_MECHANISM_ANNOTATION]: request.mechanism,
        [CAPTURE_PORTS_ANNOTATION]: request.capturePorts.length ? request.capturePorts.join(',') : null,
      }
    : { [INJECT_ANNOTATION]: null, [AGENT_MECHANISM_ANNOTATION]: null, [CAPTURE_PORTS_ANNOTATION]: null };
  annotations[RESTARTED_AT_ANNOTATION] = now.toISOString();
  return { spec: { template: { metadata: { annotations } } } };
}

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** Patches a workload's pod template (merge patch); bare ReplicaSets also get their pods deleted. */
export async function patchWorkloadTemplate(
  kc: KubeConfig,
  kind: WorkloadKind,
  namespace: string,
  name: string,
  body: object,
  log: Logger,
): Promise<void> {
  const apps = kc.makeApiClient(AppsV1Api);
  const args = { name, namespace, body };
  let patched: WorkloadObject;
  if (kind === 'Deployment') patched = await apps.patchNamespacedDeployment(args, mergePatch);
  else if (kind === 'StatefulSet') patched = await apps.patchNamespacedStatefulSet(args, mergePatch);
  else patched = await apps.patchNamespacedReplicaSet(args, mergePatch);
  if (kind !== 'ReplicaSet') return;
  // A ReplicaSet only applies its template to pods it creates: replace the existing ones.
  const selector = patched.spec?.selector?.matchLabels ?? {};
  const labelSelector = Object.entries(selector)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  if (!labelSelector) return;
  const core = kc.makeApiClient(CoreV1Api);
  const pods = await core.listNamespacedPod({ namespace, labelSelector });
  for (const pod of pods.items) {
    if (!pod.metadata?.ownerReferences?.some((r) => r.kind === 'ReplicaSet' && r.name === name)) continue;
    log.info('deleting a pod of a bare ReplicaSet so it is recreated', { namespace, pod: pod.metadata.name });
    await core.deleteNamespacedPod({ name: pod.metadata.name!, namespace });
  }
}

export interface AgentInstallerOptions {
  kc: KubeConfig;
  /** Also the chart's default mechanism, applied to workloads that do not name one. */
  source: KubeWorkloadSource;
  /** How long EnsureAgent waits for the rolled pods' agents. */
  arrivalTimeoutMs: number;
  /** The pods of a workload whose agents have a session with the manager. */
  arrivedPods: (namespace: string, name: string) => Set<string>;
  log: Logger;
  now?: () => Date;
  /** How long after the last pod without the agent is gone EnsureAgent still waits (SERVICE_RULES_SETTLE_MS). */
  serviceRulesSettleMs?: number;
}

/**
 * A pod without the agent is gone from the API before every node has stopped sending it Service traffic:
 * kube-proxy applies Service changes on its own schedule, at most once a second by default
 * (--iptables-min-sync-period). An app that exits at SIGTERM leaves its address dead in between, and a
 * request sent there waits for its connect timeout (seen in the demo: `curl --max-time 5` right after `tp
 * intercept` returned, 2 runs in 5). So after a rollout EnsureAgent waits this much longer.
 */
export const SERVICE_RULES_SETTLE_MS = 2_000;

/**
 * Installed means more than pods with a sidecar: each live injected pod's agent has arrived, and no pod
 * without the agent is left (a terminating one included: until it is gone, its endpoint may still be in
 * a node's Service rules and take a request that should have been intercepted).
 */
export function agentsReady(
  w: Workload,
  arrived: Set<string>,
): { ready: boolean; waitingFor: string[]; oldPods: string[] } {
  if (w.agentState !== 'INSTALLED') return { ready: false, waitingFor: [], oldPods: [] };
  const waitingFor = w.pods
    .filter((p) => p.hasAgent && !p.terminating && !arrived.has(p.name))
    .map((p) => p.name);
  const oldPods = w.pods
    .filter((p) => !p.hasAgent && p.phase !== 'Succeeded' && p.phase !== 'Failed')
    .map((p) => p.name);
  return { ready: waitingFor.length === 0 && oldPods.length === 0, waitingFor, oldPods };
}

/** What an installing workload waits for, in words. */
export function describeWaiting(waitingFor: string[], oldPods: string[]): string {
  const parts: string[] = [];
  if (waitingFor.length)
    parts.push(`the agents of ${waitingFor.join(', ')} to connect to the traffic manager`);
  if (oldPods.length)
    parts.push(
      `${oldPods.join(', ')} (without the agent) to terminate: the Service may still send requests there`,
    );
  return `waiting for ${parts.join(', and for ')}`;
}

export class AgentInstaller {
  private readonly inflight = new Map<string, Promise<Workload>>();
  private readonly now: () => Date;

  constructor(private readonly opts: AgentInstallerOptions) {
    this.now = opts.now ?? (() => new Date());
  }

  /** Why a name is not a workload tp can intercept, for the error the user reads. */
  describeMissing(name: string, namespace: string): string {
    const source = this.opts.source;
    if (!source.manages(namespace)) {
      return `namespace "${namespace}" is not managed by this traffic manager (it manages ${source.namespaces.join(', ')}): add it to the chart value managedNamespaces`;
    }
    const pod = source.pod(namespace, name);
    if (pod && !pod.metadata?.ownerReferences?.some((r) => r.controller)) {
      return `pod "${name}" in namespace "${namespace}" has no owning Deployment, ReplicaSet or StatefulSet: tp intercepts workloads, not bare pods`;
    }
    const names = source.list(namespace).map((w) => w.name);
    const known = names.length ? `the workloads there are ${names.join(', ')}` : 'it has no workloads';
    return `no Deployment, ReplicaSet or StatefulSet named "${name}" in namespace "${namespace}": ${known}`;
  }

  /**
   * Makes sure every pod of the workload runs an agent with the given mechanism, rolling the workload
   * if needed; resolves when the agents have arrived, throws AgentInstallError with the reason otherwise.
   * Concurrent calls for one workload share the same rollout.
   */
  ensureAgent(namespace: string, name: string, mechanism?: Mechanism): Promise<Workload> {
    const key = `${namespace}/${name}`;
    const running = this.inflight.get(key);
    if (running) return running;
    const p = this.install(namespace, name, mechanism).finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private async install(namespace: string, name: string, wanted?: Mechanism): Promise<Workload> {
    const { source, log } = this.opts;
    const w = source.get(namespace, name);
    if (!w) throw new AgentInstallError('not-found', this.describeMissing(name, namespace));
    if (w.ports.length === 0) {
      throw new AgentInstallError(
        'failed-precondition',
        `${w.kind} ${name} exposes no TCP port: declare one in its container's ports (or give it a Service) to intercept it`,
      );
    }
    // Without an explicit request, keep what is there: w.mechanism is the installed agent's mechanism,
    // else the owner's tp.dev/mechanism on the pod template (to select ebpf per workload), else the
    // chart default.
    const mechanism = wanted ?? w.mechanism;
    const arrived = () => this.opts.arrivedPods(namespace, name);
    const current = w.agentRequested && w.mechanism === mechanism;
    // Roll unless the agents are there with the right mechanism, or a rollout toward them is under way.
    // An earlier failure (webhook unreachable, tp-init failed) is retried with a fresh rollout.
    let rollout = w.rollout;
    if (!current || w.agentState === 'ERROR') {
      log.info('installing the agent', { namespace, workload: name, kind: w.kind, mechanism });
      const capturePorts = undeclaredServicePorts(
        source.template(namespace, w.kind, name),
        source.services(namespace),
      );
      const patch = templateAnnotationPatch({ mechanism, capturePorts }, this.now());
      rollout = patch.spec.template.metadata.annotations[RESTARTED_AT_ANNOTATION] as string;
      try {
        await patchWorkloadTemplate(this.opts.kc, w.kind, namespace, name, patch, log);
      } catch (err) {
        throw new AgentInstallError(
          'unavailable',
          `cannot roll out the agent to ${w.kind} ${name}: ${apiErrorMessage(err)}`,
        );
      }
    } else if (agentsReady(w, arrived()).ready) {
      return w;
    }
    let sawOldPods = false;
    const installed = await this.waitFor(namespace, name, (x) => {
      // Until the cache shows our stamp, the state still describes the previous template.
      if (x.rollout !== rollout || !x.agentRequested) return false;
      if (x.agentState === 'ERROR') throw new AgentInstallError('failed-precondition', x.agentMessage);
      const r = agentsReady(x, arrived());
      if (r.oldPods.length > 0) sawOldPods = true;
      return r.ready;
    });
    const settleMs = this.opts.serviceRulesSettleMs ?? SERVICE_RULES_SETTLE_MS;
    if (sawOldPods && settleMs > 0) {
      log.info("the pods without the agent are gone: waiting for the nodes' Service rules to drop them", {
        namespace,
        workload: name,
        ms: settleMs,
      });
      await new Promise((r) => setTimeout(r, settleMs));
    }
    return installed;
  }

  /** Removes the agent from the named workloads (or all that have it); resolves when their pods rolled. */
  async uninstall(namespace: string, names: string[], all: boolean): Promise<string[]> {
    const { source, log } = this.opts;
    const targets = all
      ? source.list(namespace || undefined).filter((w) => w.agentRequested || w.pods.some((p) => p.hasAgent))
      : names.map((n) => {
          const w = source.get(namespace, n);
          if (!w) throw new AgentInstallError('not-found', this.describeMissing(n, namespace));
          return w;
        });
    for (const w of targets) {
      if (!w.agentRequested && !w.pods.some((p) => p.hasAgent)) {
        if (!all) log.info('no agent to remove', { namespace: w.namespace, workload: w.name });
        continue;
      }
      log.info('removing the agent', { namespace: w.namespace, workload: w.name, kind: w.kind });
      try {
        await patchWorkloadTemplate(
          this.opts.kc,
          w.kind,
          w.namespace,
          w.name,
          templateAnnotationPatch(undefined, this.now()),
          log,
        );
      } catch (err) {
        throw new AgentInstallError(
          'unavailable',
          `cannot remove the agent from ${w.kind} ${w.name}: ${apiErrorMessage(err)}`,
        );
      }
    }
    await Promise.all(
      targets.map((w) =>
        this.waitFor(
          w.namespace,
          w.name,
          (x) => !x.agentRequested && !x.pods.some((p) => p.hasAgent && !p.terminating),
        ),
      ),
    );
    return targets.map((w) => w.name);
  }

  /** Waits until done(workload) is true; done may throw to fail early. */
  private waitFor(namespace: string, name: string, done: (w: Workload) => boolean): Promise<Workload> {
    const { source } = this.opts;
    return new Promise<Workload>((resolve, reject) => {
      let finished = false;
      const finish = (err?: unknown, w?: Workload) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        clearInterval(poll);
        unsubscribe();
        if (err) reject(err);
        else resolve(w!);
      };
      const check = () => {
        const w = source.get(namespace, name);
        if (!w)
          return finish(
            new AgentInstallError('not-found', `workload ${name} in namespace ${namespace} was deleted`),
          );
        try {
          if (done(w)) finish(undefined, w);
        } catch (err) {
          finish(err);
        }
      };
      const unsubscribe = source.onChange(check);
      // Agent arrivals are not Kubernetes events: look again now and then.
      const poll = setInterval(check, 500);
      const timer = setTimeout(() => {
        const w = source.get(namespace, name);
        const state = w ? `${w.agentState}${w.agentMessage ? `: ${w.agentMessage}` : ''}` : 'gone';
        const r = w ? agentsReady(w, this.opts.arrivedPods(namespace, name)) : undefined;
        const agents =
          r && (r.waitingFor.length || r.oldPods.length)
            ? `; ${describeWaiting(r.waitingFor, r.oldPods)}`
            : '';
        finish(
          new AgentInstallError(
            'deadline-exceeded',
            `timed out after ${Math.round(this.opts.arrivalTimeoutMs / 1000)}s waiting for the agents of ${name} (${state}${agents}); see kubectl get pods -n ${namespace} and kubectl logs -n ${namespace} POD -c tp-agent`,
          ),
        );
      }, this.opts.arrivalTimeoutMs);
      check();
    });
  }
}

/**
 * One-shot removal for `helm uninstall` (the chart's pre-delete hook) and for clusters where the manager
 * is gone: every workload whose template asks for the agent gets the removal patch. Returns
 * "Kind namespace/name" of each workload patched.
 */
export async function uninstallAllAgents(
  kc: KubeConfig,
  namespaces: string[],
  log: Logger,
): Promise<string[]> {
  const apps = kc.makeApiClient(AppsV1Api);
  const scopes = namespaces.length ? namespaces : [''];
  const found: { kind: WorkloadKind; obj: WorkloadObject }[] = [];
  for (const namespace of scopes) {
    const all = namespace === '';
    const [d, s, r] = await Promise.all([
      all ? apps.listDeploymentForAllNamespaces() : apps.listNamespacedDeployment({ namespace }),
      all ? apps.listStatefulSetForAllNamespaces() : apps.listNamespacedStatefulSet({ namespace }),
      all ? apps.listReplicaSetForAllNamespaces() : apps.listNamespacedReplicaSet({ namespace }),
    ]);
    for (const obj of d.items) found.push({ kind: 'Deployment', obj });
    for (const obj of s.items) found.push({ kind: 'StatefulSet', obj });
    for (const obj of r.items)
      if (!obj.metadata?.ownerReferences?.some((o) => o.controller)) found.push({ kind: 'ReplicaSet', obj });
  }
  const done: string[] = [];
  const failures: string[] = [];
  for (const { kind, obj } of found) {
    if (!obj.spec?.template?.metadata?.annotations?.[INJECT_ANNOTATION]) continue;
    const namespace = obj.metadata?.namespace ?? '';
    const name = obj.metadata?.name ?? '';
    try {
      await patchWorkloadTemplate(
        kc,
        kind,
        namespace,
        name,
        templateAnnotationPatch(undefined, new Date()),
        log,
      );
      log.info('agent removed', { kind, namespace, workload: name });
      done.push(`${kind} ${namespace}/${name}`);
    } catch (err) {
      failures.push(`${kind} ${namespace}/${name}: ${apiErrorMessage(err)}`);
    }
  }
  if (failures.length) throw new Error(`cannot remove the agent from ${failures.join('; ')}`);
  return done;
}
