// Events about pods and the node, as `kubectl describe` shows them (Scheduled comes from the
// scheduler; Pulled, Created, Started, Killing, BackOff, Unhealthy, FailedMount come from here).
// Repeats of the same event within ten minutes bump its count instead of adding a new one, like the
// kubelet's event correlator. Best effort: an event that cannot be written is only logged.
import { randomBytes } from 'node:crypto';
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { Logger } from '../../logging/logger.js';
import { apiErrorMessage, type EventTarget, type NodeApi } from './kube-api.js';

const AGGREGATION_WINDOW_MS = 10 * 60_000;

interface Recorded {
  name: string;
  count: number;
  at: number;
}

export class EventRecorder {
  private readonly recent = new Map<string, Recorded>();

  constructor(
    private readonly api: NodeApi,
    private readonly nodeName: string,
    private readonly log: Logger,
  ) {}

  record(target: EventTarget, type: 'Normal' | 'Warning', reason: string, message: string): void {
    void this.write(target, type, reason, message).catch((err) =>
      this.log.debug('event not recorded', { reason, error: apiErrorMessage(err) }),
    );
  }

  private async write(target: EventTarget, type: string, reason: string, message: string): Promise<void> {
    const key = `${target.uid}|${target.fieldPath ?? ''}|${type}|${reason}|${message}`;
    const now = Date.now();
    const nowText = new Date(now).toISOString().replace(/\.\d+Z$/, 'Z');
    if (this.recent.size > 2000) {
      for (const [k, r] of this.recent) if (now - r.at > AGGREGATION_WINDOW_MS) this.recent.delete(k);
    }
    const previous = this.recent.get(key);
    if (previous && now - previous.at < AGGREGATION_WINDOW_MS) {
      previous.count++;
      previous.at = now;
      await this.api.core.patchNamespacedEvent(
        {
          name: previous.name,
          namespace: target.namespace,
          body: { count: previous.count, lastTimestamp: nowText },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      return;
    }
    const name = `${target.name}.${randomBytes(8).toString('hex')}`;
    this.recent.set(key, { name, count: 1, at: now });
    await this.api.core.createNamespacedEvent({
      namespace: target.namespace,
      body: {
        metadata: { name, namespace: target.namespace },
        involvedObject: {
          apiVersion: 'v1',
          kind: target.kind,
          name: target.name,
          namespace: target.kind === 'Pod' ? target.namespace : undefined,
          uid: target.uid,
          fieldPath: target.fieldPath,
        },
        reason,
        message,
        type,
        count: 1,
        firstTimestamp: new Date(now),
        lastTimestamp: new Date(now),
        source: { component: 'kubelet', host: this.nodeName },
        reportingComponent: 'kubelet',
        reportingInstance: this.nodeName,
      },
    });
  }
}
