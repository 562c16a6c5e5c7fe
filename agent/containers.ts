// The pod's app containers as the agent knows them (TP_CONTAINERS, written by the injector) and which one
// an intercept or an ingest means: the container that owns the intercepted port, or the one an ingest
// names (-c), or the only one. Pure, except appContainers reading the environment it is given.
import { UsageError } from '../netaddr/parse.js';
import type { InterceptSpec } from '../rpc/gen/manager.js';

export interface AppContainer {
  name: string;
  /** The app ports this container owns (captured by the agent). */
  appPorts: number[];
  environment: Record<string, string>;
}

interface InjectedContainer {
  name: string;
  envPrefix: string;
  ports: { appPort: number }[];
}

/**
 * The app containers: from TP_CONTAINERS (each one's environment under its TP_APPENV_<n>_ prefix), or, in
 * standalone mode (no TP_CONTAINERS), one container "app" owning every captured port with `fallback` as
 * its environment (TP_APP_ENV_FILE or the agent's own environment).
 */
export function appContainers(
  own: NodeJS.ProcessEnv,
  capturedAppPorts: number[],
  fallback: () => Record<string, string>,
): AppContainer[] {
  const text = own.TP_CONTAINERS?.trim();
  if (!text) return [{ name: 'app', appPorts: capturedAppPorts, environment: fallback() }];
  let injected: InjectedContainer[];
  try {
    injected = JSON.parse(text) as InjectedContainer[];
    if (!Array.isArray(injected)) throw new Error('not a JSON array');
    for (const c of injected)
      if (typeof c?.name !== 'string' || typeof c.envPrefix !== 'string' || !Array.isArray(c.ports))
        throw new Error('each entry needs name, envPrefix and ports');
  } catch (e) {
    throw new UsageError(
      `TP_CONTAINERS is not valid (${(e as Error).message}): it is written by tp's injector; re-inject the agent`,
    );
  }
  return injected.map((c) => ({
    name: c.name,
    appPorts: c.ports.map((p) => p.appPort),
    environment: Object.fromEntries(
      Object.entries(own)
        .filter(([k]) => k.startsWith(c.envPrefix))
        .map(([k, v]) => [k.slice(c.envPrefix.length), v ?? '']),
    ),
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
