// The pod's app containers as the agent knows them (TP_CONTAINERS, written by the injector) and which one
// an intercept or an ingest means: the container that owns the intercepted port, or the one an ingest
// names (-c), or the only one. Pure, except appContainers reading the environment it is given.
import { type AgentContainer, containerEnvironment } from '../agentconfig/env.js';
import type { InterceptSpec } from '../rpc/gen/manager.js';

export interface AppContainer {
  name: string;
  /** The app ports this container owns (captured by the agent). */
  appPorts: number[];
  environment: Record<string, string>;
}

/**
 * The app containers: those the injector listed (TP_CONTAINERS, decoded by agentconfig/; each one's
 * environment under its TP_APPENV_<n>_ prefix in `own`), or, in standalone mode (none listed), one
 * container "app" owning every captured port with `fallback` as its environment (TP_APP_ENV_FILE or the
 * agent's own environment).
 */
export function appContainers(
  injected: AgentContainer[] | undefined,
  own: Record<string, string | undefined>,
  capturedAppPorts: number[],
  fallback: () => Record<string, string>,
): AppContainer[] {
  if (!injected) return [{ name: 'app', appPorts: capturedAppPorts, environment: fallback() }];
  return injected.map((c) => ({
    name: c.name,
    appPorts: c.ports.map((p) => p.appPort),
    environment: containerEnvironment(own, c),
  }));
}

export type ContainerChoice = { container: AppContainer } | { error: string };

/**
 * The container whose environment (and, later, mounts) an intercept or ingest gets. An intercept: the
 * container that owns its port. An ingest: the one it names, or the only one; several and none named
 * is an error that lists them.
 */
export function chooseContainer(
  spec: InterceptSpec | undefined,
  containers: AppContainer[],
): ContainerChoice {
  const names = containers.map((c) => c.name).join(', ') || 'none';
  if (spec?.ingest) {
    if (spec.container) {
      const named = containers.find((c) => c.name === spec.container);
      return named
        ? { container: named }
        : { error: `the pod has no container "${spec.container}": its containers are ${names}` };
    }
    if (containers.length === 1) return { container: containers[0]! };
    return { error: `the pod has several containers (${names}): choose one with -c CONTAINER` };
  }
  const port = spec?.remotePort ?? 0;
  const owner = containers.find((c) => c.appPorts.includes(port));
  return owner
    ? { container: owner }
    : { error: `no container of the pod owns port ${port}: its containers are ${names}` };
}
