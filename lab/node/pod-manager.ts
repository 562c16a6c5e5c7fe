// The pods bound to this node: watches them (field selector spec.nodeName, resynced every 10 s),
// runs one PodWorker per pod UID, adopts or cleans up what an earlier run of the node agent left in
// the state directory, and stops everything on shutdown.
import { type KubeConfig, ListWatch, type V1Pod, type V1Service, Watch } from '@kubernetes/client-node';
import type { Logger } from '../../logging/logger.js';
import { apiErrorMessage } from './kube-api.js';
import { netnsPids, podNetworkNames, teardownPodNetwork } from './pod-network.js';
import { type NodeContext, PodWorker } from './pod-worker.js';
import type { PodRecord } from './state-dir.js';

const RESYNC_MS = 10_000;
const RELIST_DELAY_MS = 2_000;

export class PodManager {
  private readonly workers = new Map<string, PodWorker>();
  private readonly pods: ListWatch<V1Pod>;
  private readonly servicesCache: ListWatch<V1Service>;
  private readonly log: Logger;
  private leftovers = new Map<string, PodRecord>();
  private resyncTimer: NodeJS.Timeout | undefined;
  private stopping = false;

  constructor(
    private readonly ctx: NodeContext,
    kubeConfig: KubeConfig,
  ) {
    this.log = ctx.log.child('pods');
    const watch = new Watch(kubeConfig);
    const fieldSelector = `spec.nodeName=${ctx.nodeName}`;
    this.pods = new ListWatch<V1Pod>(
      '/api/v1/pods',
      watch,
      () => ctx.api.core.listPodForAllNamespaces({ fieldSelector }),
      false,
      undefined,
      fieldSelector,
    );
    this.servicesCache = new ListWatch<V1Service>(
      '/api/v1/services',
      watch,
      () => ctx.api.core.listServiceForAllNamespaces(),
      false,
    );
    this.pods.on('add', (pod) => this.podChanged(pod));
    this.pods.on('update', (pod) => this.podChanged(pod));
    this.pods.on('delete', (pod) => this.podDeleted(pod));
    for (const [name, informer] of [
      ['pods', this.pods],
      ['services', this.servicesCache],
    ] as const) {
      informer.on('error', (err: unknown) => {
        if (this.stopping) return;
        this.log.warn(`watching ${name} failed; listing again`, { error: apiErrorMessage(err) });
        setTimeout(() => {
          if (!this.stopping) void informer.start().catch(() => {});
        }, RELIST_DELAY_MS).unref();
      });
    }
  }

  /** Services for pod env (service links); empty until the first list. */
  services(): readonly V1Service[] {
    return this.servicesCache.list();
  }

  /**
   * Cleans up after an earlier run, then starts watching. Pods that still exist get their sandbox
   * back (same namespace, same IP) and their containers restarted; everything else is removed.
   */
  async start(): Promise<void> {
    const records = this.ctx.state.readPodRecords();
    // Only what the state directory names is ours: another node agent on this host (a test's) has
    // its own pods under the same prefix.
    for (const uid of this.ctx.addresses.pool.owners()) {
      if (!records.some((r) => r.uid === uid))
        records.push({ uid, namespace: '', name: '', hostNetwork: false });
    }
    // The containers of the last run died with it (parent-death signal); end any stragglers.
    for (const record of records) {
      for (const pid of await netnsPids(this.ctx.tools, record.netns ?? podNetworkNames(record.uid).netns)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
    this.leftovers = new Map(records.map((r) => [r.uid, r]));
    await this.servicesCache.start();
    await this.pods.start();
    // Whatever the first list did not claim belongs to pods that are gone.
    const unclaimed = [...this.leftovers.values()];
    this.leftovers.clear();
    for (const record of unclaimed) await this.cleanUp(record);
    this.resyncTimer = setInterval(() => this.resync(), RESYNC_MS);
    this.log.info('watching pods', {
      node: this.ctx.nodeName,
      adopted: records.length - unclaimed.length,
      cleanedUp: unclaimed.length,
    });
  }

  private async cleanUp(record: PodRecord): Promise<void> {
    this.log.info('cleaning up a pod of an earlier run', {
      pod: `${record.namespace}/${record.name}`,
      uid: record.uid,
    });
    const names = podNetworkNames(record.uid);
    try {
      await teardownPodNetwork(this.ctx.tools, {
        netns: record.netns ?? names.netns,
        hostVeth: record.hostVeth ?? names.hostVeth,
      });
    } catch (err) {
      this.log.warn('cleanup of a pod network failed', { error: err });
    }
    this.ctx.addresses.release(record.uid);
    this.ctx.state.removePod(record.uid);
  }

  private podChanged(pod: V1Pod): void {
    const uid = pod.metadata?.uid;
    if (!uid || this.stopping) return;
    let worker = this.workers.get(uid);
    if (!worker) {
      const adopted = this.leftovers.get(uid);
      this.leftovers.delete(uid);
      worker = new PodWorker(this.ctx, pod, adopted);
      this.workers.set(uid, worker);
      this.log.info(adopted ? 'adopting pod' : 'new pod', {
        pod: `${pod.metadata?.namespace}/${pod.metadata?.name}`,
      });
    }
    worker.update(pod);
  }

  private podDeleted(pod: V1Pod): void {
    const uid = pod.metadata?.uid;
    if (!uid) return;
    const worker = this.workers.get(uid);
    if (!worker) return;
    if (worker.isStopped) {
      this.workers.delete(uid);
      return;
    }
    void worker.terminate('orphaned').finally(() => this.workers.delete(uid));
  }

  private resync(): void {
    const present = new Set(this.pods.list().map((p) => p.metadata?.uid));
    for (const [uid, worker] of this.workers) {
      if (worker.isStopped && !present.has(uid)) this.workers.delete(uid);
      else worker.kick();
    }
  }

  findPod(namespace: string, name: string): PodWorker | undefined {
    for (const w of this.workers.values()) {
      if (!w.isStopped && w.namespace === namespace && w.name === name) return w;
    }
    return undefined;
  }

  list(): V1Pod[] {
    return [...this.workers.values()].filter((w) => !w.isStopped).map((w) => w.object);
  }

  /** Stops every pod (bounded grace) and removes their sandboxes; API objects stay. */
  async shutdown(): Promise<void> {
    this.stopping = true;
    clearInterval(this.resyncTimer);
    await Promise.allSettled([this.pods.stop(), this.servicesCache.stop()]);
    await Promise.allSettled([...this.workers.values()].map((w) => w.terminate('shutdown')));
    this.workers.clear();
    this.ctx.createdPaths.removeAll();
  }
}
