// tp's pods' logs through the API server, for `tp gather-logs`: the traffic manager's, and of each injected
// pod the agent's and tp-init's, with the agent container's environment (values that look secret are
// redacted by the caller). What cannot be read (RBAC, a pod gone) is an entry with its error, not a failure.
import { CoreV1Api, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { AGENT_LABEL, AGENT_LABEL_VALUE } from './annotations.js';
import { apiErrorMessage } from './kubeconfig.js';

export interface PodLog {
  namespace: string;
  pod: string;
  container: string;
  /** The log, or undefined with `error`. */
  text?: string;
  error?: string;
}

export interface PodEnv {
  namespace: string;
  pod: string;
  container: string;
  /** NAME=value, or NAME=<from …> for a reference (its value is not in the spec). */
  env: [string, string][];
}

export interface GatheredPods {
  logs: PodLog[];
  envs: PodEnv[];
  /** What could not be listed at all. */
  errors: string[];
}

const MANAGER_SELECTOR = 'app.kubernetes.io/name=traffic-manager';
const AGENT_SELECTOR = `${AGENT_LABEL}=${AGENT_LABEL_VALUE}`;

function envOf(pod: V1Pod, container: string): PodEnv | undefined {
  const c = pod.spec?.containers.find((x) => x.name === container);
  if (!c) return undefined;
  return {
    namespace: pod.metadata?.namespace ?? '',
    pod: pod.metadata?.name ?? '',
    container,
    env: (c.env ?? []).map((e) => {
      if (e.value !== undefined) return [e.name, e.value];
      const from = e.valueFrom;
      const ref = from?.fieldRef
        ? `fieldRef ${from.fieldRef.fieldPath}`
        : from?.secretKeyRef
          ? `secret ${from.secretKeyRef.name}/${from.secretKeyRef.key}`
          : from?.configMapKeyRef
            ? `configMap ${from.configMapKeyRef.name}/${from.configMapKeyRef.key}`
            : 'a reference';
      return [e.name, `<from ${ref}>`];
    }),
  };
}

/**
 * The logs of the manager's pods in `managerNamespace` (when `manager`) and of the injected pods in
 * `agentNamespaces` ('all': every namespace; when `agents`).
 */
export async function gatherPodLogs(
  kc: KubeConfig,
  opts: { managerNamespace: string; manager: boolean; agents: boolean; agentNamespaces: string[] | 'all' },
): Promise<GatheredPods> {
  const core = kc.makeApiClient(CoreV1Api);
  const out: GatheredPods = { logs: [], envs: [], errors: [] };
  const read = async (pod: V1Pod, container: string) => {
    const namespace = pod.metadata?.namespace ?? '';
    const name = pod.metadata?.name ?? '';
    try {
      const text = await core.readNamespacedPodLog({ name, namespace, container });
      out.logs.push({ namespace, pod: name, container, text: String(text ?? '') });
    } catch (e) {
      out.logs.push({ namespace, pod: name, container, error: apiErrorMessage(e) });
    }
  };
  const list = async (what: string, fetch: () => Promise<{ items: V1Pod[] }>): Promise<V1Pod[]> => {
    try {
      return (await fetch()).items;
    } catch (e) {
      out.errors.push(`listing ${what}: ${apiErrorMessage(e)}`);
      return [];
    }
  };
  if (opts.manager) {
    const pods = await list(`the traffic manager's pods in ${opts.managerNamespace}`, () =>
      core.listNamespacedPod({ namespace: opts.managerNamespace, labelSelector: MANAGER_SELECTOR }),
    );
    if (pods.length === 0 && !out.errors.length)
      out.errors.push(`no traffic manager pod in ${opts.managerNamespace} (label ${MANAGER_SELECTOR})`);
    for (const pod of pods) await read(pod, 'manager');
  }
  if (opts.agents) {
    const namespaces = opts.agentNamespaces;
    const pods =
      namespaces === 'all'
        ? await list('the injected pods of every namespace', () =>
            core.listPodForAllNamespaces({ labelSelector: AGENT_SELECTOR }),
          )
        : (
            await Promise.all(
              namespaces.map((namespace) =>
                list(`the injected pods in ${namespace}`, () =>
                  core.listNamespacedPod({ namespace, labelSelector: AGENT_SELECTOR }),
                ),
              ),
            )
          ).flat();
    for (const pod of pods) {
      for (const c of ['tp-init', 'tp-agent']) {
        const present =
          pod.spec?.containers.some((x) => x.name === c) ||
          pod.spec?.initContainers?.some((x) => x.name === c);
        if (present) await read(pod, c);
      }
      const env = envOf(pod, 'tp-agent');
      if (env) out.envs.push(env);
    }
  }
  return out;
}
