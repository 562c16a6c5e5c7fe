// The two ways tp-manager runs against Kubernetes, as tp-manager's main calls them:
// - the traffic manager (the chart's Deployment): configuration from the chart's env, credentials from
//   the pod's service account (or --kubeconfig when run outside the cluster, for development);
// - `tp-manager uninstall-agents` (the chart's pre-delete hook): removes the agent from every workload
//   in the managed namespaces, then exits.

import { loadKubeConfig } from '../../kube/kubeconfig.js';
import type { Logger } from '../../logging/logger.js';
import type { CredentialAuthority } from '../credentials.js';
import { uninstallAllAgents } from './agent-installer.js';
import { type KubeManagerConfig, kubeManagerConfigFromEnv } from './manager-config.js';
import { type KubeIntegration, startKubeIntegration } from './manager-integration.js';

export interface InClusterManager {
  config: KubeManagerConfig;
  integration: KubeIntegration;
}

export async function startInClusterManager(
  flags: { kubeconfig?: string; context?: string },
  log: Logger,
  credentials: CredentialAuthority,
  env: NodeJS.ProcessEnv = process.env,
): Promise<InClusterManager> {
  const config = kubeManagerConfigFromEnv(env);
  const { kc, source } = loadKubeConfig({ kubeconfig: flags.kubeconfig, context: flags.context });
  log.info('starting against Kubernetes', {
    credentials: source,
    namespace: config.namespace,
    managedNamespaces: config.managedNamespaces.join(',') || 'all',
    security: config.securityMode,
  });
  const integration = await startKubeIntegration(kc, config, log, credentials);
  return { config, integration };
}

/** The pre-delete hook: returns the process exit code. */
export async function runUninstallAgents(
  flags: { kubeconfig?: string; context?: string },
  log: Logger,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const config = kubeManagerConfigFromEnv(env);
  const { kc } = loadKubeConfig({ kubeconfig: flags.kubeconfig, context: flags.context });
  try {
    const done = await uninstallAllAgents(kc, config.managedNamespaces, log);
    process.stdout.write(
      done.length ? `removed the agent from ${done.join(', ')}\n` : 'no workload had the agent\n',
    );
    return 0;
  } catch (err) {
    process.stderr.write(`tp-manager uninstall-agents: ${(err as Error).message}\n`);
    return 1;
  }
}
