// The manager's view of the workloads it manages: informers (list + watch) on Deployments,
// ReplicaSets, StatefulSets, their pods and the Services in front of them, in each managed namespace
// (or cluster-wide). Consumers read whole snapshots (list/get) and are told when anything changed.
import {
  AppsV1Api,
  CoreV1Api,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  makeInformer,
  type V1OwnerReference,
  type V1Pod,
  type V1PodTemplateSpec,
  type V1ReplicaSet,
  type V1Service,
} from '@kubernetes/client-node';
import type { Mechanism } from '../../kube/annotations.js';
import { apiErrorCode, apiErrorMessage } from '../../kube/kubeconfig.js';
import {
  buildWorkload,
  ownerFromRefs,
  type Workload,
  type WorkloadKind,
  type WorkloadObject,
} from '../../kube/workload-state.js';
import type { Logger } from '../../logging/logger.js';
import type { OwnerWorkload } from './injection.js';

export interface WorkloadSourceOptions {
  kc: KubeConfig;
  /** The namespaces to watch; empty: all of them. */
  namespaces: string[];
  defaultMechanism: Mechanism;
  log: Logger;
}

type Resource = 'deployments' | 'replicasets' | 'statefulsets' | 'pods' | 'services';

interface Watched<T extends KubernetesObject> {
  resource: Resource;
  namespace: string;
  informer: ReturnType<typeof makeInformer<T>>;
  synced: boolean;
  lastError: string;
}

const kindOfResource: Partial<Record<Resource, WorkloadKind>> = {
  deployments: 'Deployment',
  replicasets: 'ReplicaSet',
  statefulsets: 'StatefulSet',
};

export class KubeWorkloadSource {
  private readonly apps: AppsV1Api;
  private readonly core: CoreV1Api;
  private readonly watched: Watched<KubernetesObject>[] = [];
  private readonly listeners = new Set<() => void>();
  private notifyTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(private readonly opts: WorkloadSourceOptions) {
    this.apps = opts.kc.makeApiClient(AppsV1Api);
    this.core = opts.kc.makeApiClient(CoreV1Api);
  }

  /** The namespaces it watches; empty means all. */
  get namespaces(): string[] {
    return this.opts.namespaces;
  }

  manages(namespace: string): boolean {
    return this.opts.namespaces.length === 0 || this.opts.namespaces.includes(namespace);
  }

  /** Starts every informer and waits until each has listed once (or reports why it cannot). */
  async start(timeoutMs = 30_000): Promise<void> {
    const scopes = this.opts.namespaces.length === 0 ? [''] : this.opts.namespaces;
    const resources: Resource[] = ['deployments', 'replicasets', 'statefulsets', 'pods', 'services'];
    for (const namespace of scopes) for (const r of resources) this.watch(r, namespace);
    const deadline = Date.now() + timeoutMs;
    while (this.watched.some((w) => !w.synced)) {
      if (Date.now() > deadline) {
        const failing = this.watched.filter((w) => !w.synced);
        const why = failing.map(
          (w) => `${w.resource}${w.namespace ? ` in ${w.namespace}` : ''}: ${w.lastError || 'no answer'}`,
        );
        throw new Error(`cannot watch the cluster's workloads (${why.join('; ')})`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    this.opts.log.info('watching workloads', {
      namespaces: this.opts.namespaces.length ? this.opts.namespaces.join(',') : 'all',
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.notifyTimer);
    await Promise.all(this.watched.map((w) => w.informer.stop()));
  }

  /** Called (debounced) after any watched object changed. Returns the unsubscribe function. */
  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private listFn(
    resource: Resource,
    namespace: string,
  ): () => Promise<KubernetesListObject<KubernetesObject>> {
    const a = this.apps;
    const c = this.core;
    const all = namespace === '';
    const fns: Record<Resource, () => Promise<KubernetesListObject<KubernetesObject>>> = {
      deployments: () =>
        all ? a.listDeploymentForAllNamespaces() : a.listNamespacedDeployment({ namespace }),
      replicasets: () =>
        all ? a.listReplicaSetForAllNamespaces() : a.listNamespacedReplicaSet({ namespace }),
      statefulsets: () =>
        all ? a.listStatefulSetForAllNamespaces() : a.listNamespacedStatefulSet({ namespace }),
      pods: () => (all ? c.listPodForAllNamespaces() : c.listNamespacedPod({ namespace })),
      services: () => (all ? c.listServiceForAllNamespaces() : c.listNamespacedService({ namespace })),
    };
    return fns[resource];
  }

  private watch(resource: Resource, namespace: string): void {
    const group = resource === 'pods' || resource === 'services' ? '/api/v1' : '/apis/apps/v1';
    const path = namespace ? `${group}/namespaces/${namespace}/${resource}` : `${group}/${resource}`;
    const list = this.listFn(resource, namespace);
    const informer = makeInformer<KubernetesObject>(this.opts.kc, path, async () => {
      const result = await list();
      w.synced = true;
      w.lastError = '';
      return result;
    });
    const w: Watched<KubernetesObject> = { resource, namespace, informer, synced: false, lastError: '' };
    for (const verb of ['add', 'update', 'delete'] as const) informer.on(verb, () => this.changed());
    let backoffMs = 500;
    informer.on('connect', () => {
      backoffMs = 500;
    });
    informer.on('error', (err: unknown) => {
      if (this.stopped) return;
      w.lastError = apiErrorMessage(err);
      const code = apiErrorCode(err);
      const hint =
        code === 403 ? ' (the manager lacks RBAC permission: check the chart’s managedNamespaces)' : '';
      this.opts.log.warn(`watch of ${resource} failed, retrying${hint}`, {
        namespace: namespace || 'all',
        error: w.lastError,
        retryMs: backoffMs,
      });
      setTimeout(() => {
        if (!this.stopped) informer.start().catch(() => {});
      }, backoffMs).unref();
      backoffMs = Math.min(backoffMs * 2, 30_000);
    });
    this.watched.push(w);
    informer.start().catch((err: unknown) => {
      w.lastError = apiErrorMessage(err);
    });
  }

  private changed(): void {
    if (this.notifyTimer || this.stopped) return;
    // Coalesce bursts (a rollout changes dozens of objects) into one notification.
    this.notifyTimer = setTimeout(() => {
      this.notifyTimer = undefined;
      for (const l of this.listeners) l();
    }, 50);
  }

  private objects<T extends KubernetesObject>(resource: Resource, namespace?: string): T[] {
    const out: T[] = [];
    for (const w of this.watched) {
      if (w.resource !== resource) continue;
      if (namespace && w.namespace && w.namespace !== namespace) continue;
      out.push(...(w.informer as unknown as { list(ns?: string): T[] }).list(namespace));
    }
    return out;
  }

  replicaSet(namespace: string, name: string): V1ReplicaSet | undefined {
    return this.objects<V1ReplicaSet>('replicasets', namespace).find((r) => r.metadata?.name === name);
  }

  /** Every pod of the managed namespaces. */
  pods(namespace?: string): V1Pod[] {
    return this.objects<V1Pod>('pods', namespace);
  }

  pod(namespace: string, name: string): V1Pod | undefined {
    return this.objects<V1Pod>('pods', namespace).find((p) => p.metadata?.name === name);
  }

  /** The pod template of a workload, as the cache holds it. */
  template(namespace: string, kind: WorkloadKind, name: string): V1PodTemplateSpec | undefined {
    const resource =
      kind === 'Deployment' ? 'deployments' : kind === 'StatefulSet' ? 'statefulsets' : 'replicasets';
    return this.objects<WorkloadObject>(resource, namespace).find((o) => o.metadata?.name === name)?.spec
      ?.template;
  }

  services(namespace: string): V1Service[] {
    return this.objects<V1Service>('services', namespace);
  }

  /** The workload that owns a pod, for the webhook: from the cache, else (a brand-new ReplicaSet) the API. */
  async resolveOwner(
    namespace: string,
    refs: V1OwnerReference[] | undefined,
  ): Promise<OwnerWorkload | undefined> {
    const cached = ownerFromRefs(namespace, refs, (ns, n) => this.replicaSet(ns, n));
    if (cached) return cached;
    const rsRef = refs?.find((r) => r.controller && r.kind === 'ReplicaSet');
    if (!rsRef) return undefined;
    try {
      const rs = await this.apps.readNamespacedReplicaSet({ name: rsRef.name, namespace });
      return ownerFromRefs(namespace, refs, () => rs);
    } catch (err) {
      this.opts.log.warn('cannot read the ReplicaSet that owns a new pod', {
        namespace,
        replicaSet: rsRef.name,
        error: apiErrorMessage(err),
      });
      return undefined;
    }
  }

  /** Every workload (in one namespace, or all managed ones), with its pods and agent state. */
  list(namespace?: string): Workload[] {
    const podsByOwner = new Map<string, V1Pod[]>();
    for (const pod of this.objects<V1Pod>('pods', namespace)) {
      const ns = pod.metadata?.namespace ?? '';
      const owner = ownerFromRefs(ns, pod.metadata?.ownerReferences, (n, name) => this.replicaSet(n, name));
      if (!owner) continue;
      const key = `${ns}/${owner.kind}/${owner.name}`;
      const list = podsByOwner.get(key) ?? [];
      list.push(pod);
      podsByOwner.set(key, list);
    }
    const servicesByNs = new Map<string, V1Service[]>();
    for (const s of this.objects<V1Service>('services', namespace)) {
      const ns = s.metadata?.namespace ?? '';
      servicesByNs.set(ns, [...(servicesByNs.get(ns) ?? []), s]);
    }
    const out: Workload[] = [];
    for (const resource of ['deployments', 'replicasets', 'statefulsets'] as const) {
      const kind = kindOfResource[resource]!;
      for (const obj of this.objects<WorkloadObject>(resource, namespace)) {
        // ReplicaSets managed by a Deployment are part of it, not workloads of their own.
        if (kind === 'ReplicaSet' && obj.metadata?.ownerReferences?.some((r) => r.controller)) continue;
        const ns = obj.metadata?.namespace ?? '';
        const pods = podsByOwner.get(`${ns}/${kind}/${obj.metadata?.name}`) ?? [];
        out.push(buildWorkload(kind, obj, pods, servicesByNs.get(ns) ?? [], this.opts.defaultMechanism));
      }
    }
    return out.sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
  }

  /** One workload by name; a name shared by kinds resolves Deployment, then StatefulSet, then ReplicaSet. */
  get(namespace: string, name: string): Workload | undefined {
    const matches = this.list(namespace).filter((w) => w.name === name);
    const order: WorkloadKind[] = ['Deployment', 'StatefulSet', 'ReplicaSet'];
    return matches.sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind))[0];
  }
}
