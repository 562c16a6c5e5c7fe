// The node agent's calls to the API server, as the node's identity (system:node:<name>, under the
// Node authorizer and NodeRestriction): read what its pods reference, request their tokens, publish
// their status, delete them when they are done, record events. One place for the client library.
import {
  ApiException,
  CoordinationV1Api,
  CoreV1Api,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1ConfigMap,
  type V1Node,
  type V1Pod,
  type V1Secret,
  VersionApi,
} from '@kubernetes/client-node';

export function isNotFound(err: unknown): boolean {
  return err instanceof ApiException && err.code === 404;
}

export function isConflict(err: unknown): boolean {
  return err instanceof ApiException && err.code === 409;
}

/** A one-line description of an API error (the Status message, not the whole response). */
export function apiErrorMessage(err: unknown): string {
  if (err instanceof ApiException) {
    let message = '';
    try {
      const body = typeof err.body === 'string' ? JSON.parse(err.body) : err.body;
      message = body?.message ?? '';
    } catch {
      message = String(err.body ?? '');
    }
    return `HTTP ${err.code}${message ? `: ${message}` : ''}`;
  }
  return err instanceof Error ? err.message : String(err);
}

/** Microsecond RFC 3339, what Lease times (metav1.MicroTime) must look like. */
export function microTime(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

export interface EventTarget {
  namespace: string;
  kind: 'Pod' | 'Node';
  name: string;
  uid: string;
  fieldPath?: string;
}

export class NodeApi {
  readonly core: CoreV1Api;
  readonly coordination: CoordinationV1Api;
  private readonly version: VersionApi;

  constructor(
    readonly kubeConfig: KubeConfig,
    private readonly nodeName: string,
  ) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    this.coordination = kubeConfig.makeApiClient(CoordinationV1Api);
    this.version = kubeConfig.makeApiClient(VersionApi);
  }

  async serverVersion(): Promise<string> {
    const info = await this.version.getCode();
    return info.gitVersion;
  }

  async configMap(namespace: string, name: string): Promise<V1ConfigMap | null> {
    try {
      return await this.core.readNamespacedConfigMap({ name, namespace });
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async secret(namespace: string, name: string): Promise<V1Secret | null> {
    try {
      return await this.core.readNamespacedSecret({ name, namespace });
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  /** A service-account token bound to the pod (what the projected token volume holds). */
  async podToken(
    pod: V1Pod,
    audience: string,
    expirationSeconds: number,
  ): Promise<{ token: string; expiresAt: Date }> {
    const namespace = pod.metadata!.namespace!;
    const serviceAccount = pod.spec?.serviceAccountName || 'default';
    const result = await this.core.createNamespacedServiceAccountToken({
      name: serviceAccount,
      namespace,
      body: {
        spec: {
          audiences: audience ? [audience] : [],
          expirationSeconds,
          boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: pod.metadata!.name, uid: pod.metadata!.uid },
        },
      },
    });
    const expiresAt = result.status?.expirationTimestamp
      ? new Date(result.status.expirationTimestamp)
      : new Date(Date.now() + expirationSeconds * 1000);
    return { token: result.status!.token, expiresAt };
  }

  /** Strategic merge: conditions merge by type, so other writers' conditions stay. */
  async patchPodStatus(namespace: string, name: string, status: Record<string, unknown>): Promise<V1Pod> {
    return this.core.patchNamespacedPodStatus(
      { name, namespace, body: { status } },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
    );
  }

  /** The final delete of a terminated pod: grace 0, only if it is still the same pod. */
  async deletePod(namespace: string, name: string, uid: string): Promise<void> {
    try {
      await this.core.deleteNamespacedPod({
        name,
        namespace,
        gracePeriodSeconds: 0,
        body: { gracePeriodSeconds: 0, preconditions: { uid } },
      });
    } catch (err) {
      if (isNotFound(err) || isConflict(err)) return; // gone, or a new pod of the same name
      throw err;
    }
  }

  async readNode(): Promise<V1Node | null> {
    try {
      return await this.core.readNode({ name: this.nodeName });
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async createNode(node: V1Node): Promise<V1Node> {
    return this.core.createNode({ body: node });
  }

  async patchNodeStatus(status: Record<string, unknown>): Promise<V1Node> {
    return this.core.patchNodeStatus(
      { name: this.nodeName, body: { status } },
      setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch),
    );
  }

  /** Creates or renews the node's Lease in kube-node-lease (the heartbeat the node controller watches). */
  async renewLease(nodeUid: string, durationSeconds: number): Promise<void> {
    const namespace = 'kube-node-lease';
    const renewTime = microTime(new Date());
    try {
      await this.coordination.patchNamespacedLease(
        { name: this.nodeName, namespace, body: { spec: { holderIdentity: this.nodeName, renewTime } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      return;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    await this.coordination.createNamespacedLease({
      namespace,
      body: {
        metadata: {
          name: this.nodeName,
          namespace,
          ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: this.nodeName, uid: nodeUid }],
        },
        spec: { holderIdentity: this.nodeName, leaseDurationSeconds: durationSeconds },
      },
    });
    await this.coordination.patchNamespacedLease(
      { name: this.nodeName, namespace, body: { spec: { renewTime } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }
}
