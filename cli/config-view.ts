// `tp config view`: the client's effective settings and where each came from (an environment variable, a
// flag of tp connect, the kubeconfig, or the default). Pure: the caller passes the environment and, when
// the daemon runs, its ConnectInfo.
import * as path from 'node:path';
import type { ConnectInfo } from '../rpc/gen/connector.js';

export interface ConfigEntry {
  key: string;
  value: string | string[];
  source: string;
}

export function configView(
  env: NodeJS.ProcessEnv,
  info: ConnectInfo | undefined,
  /** runDir() and logDir() as tp computes them (rpc/connector-socket.ts, logging/), and the home directory. */
  where: { runDir: string; logDir: string; homedir: string },
): ConfigEntry[] {
  const connected = info && info.state !== 'DISCONNECTED' ? info : undefined;
  const fromEnv = (key: string, name: string, fallback: () => ConfigEntry): ConfigEntry =>
    env[name] ? { key, value: env[name]!, source: `$${name}` } : fallback();
  const entries: ConfigEntry[] = [
    {
      key: 'runDir',
      value: where.runDir,
      source: env.TP_RUN_DIR ? '$TP_RUN_DIR' : env.XDG_RUNTIME_DIR ? '$XDG_RUNTIME_DIR/tp' : 'default',
    },
    {
      key: 'logDir',
      value: where.logDir,
      source: env.TP_LOG_DIR ? '$TP_LOG_DIR' : env.XDG_STATE_HOME ? '$XDG_STATE_HOME/tp' : 'default',
    },
    fromEnv('logLevel', 'TP_LOG_LEVEL', () => ({ key: 'logLevel', value: 'info', source: 'default' })),
    fromEnv('helm', 'TP_HELM', () => ({ key: 'helm', value: 'helm', source: 'default (on PATH)' })),
    connected?.kubeconfig
      ? { key: 'kubeconfig', value: connected.kubeconfig, source: 'tp connect --kubeconfig' }
      : fromEnv('kubeconfig', 'KUBECONFIG', () => ({
          key: 'kubeconfig',
          value: path.join(where.homedir, '.kube', 'config'),
          source: 'default',
        })),
  ];
  if (!connected) {
    entries.push({ key: 'connection', value: 'none', source: 'tp connect sets the rest' });
    return entries;
  }
  entries.push(
    {
      key: 'context',
      value: connected.context,
      source: connected.context ? 'tp connect --context, else the kubeconfig current-context' : 'none',
    },
    { key: 'namespace', value: connected.namespace, source: "tp connect -n, else the context's namespace" },
    {
      key: 'managerNamespace',
      value: connected.managerNamespace,
      source: 'tp connect --manager-namespace (default tp-system)',
    },
    connected.mappedNamespaces.length
      ? {
          key: 'mappedNamespaces',
          value: connected.mappedNamespaces,
          source: 'tp connect --mapped-namespaces',
        }
      : { key: 'mappedNamespaces', value: [], source: 'default: every namespace the manager manages' },
    {
      key: 'managerAddress',
      value: connected.managerAddress,
      source:
        connected.kubeconfig || connected.context ? 'port-forward through the API server' : 'tp connect',
    },
  );
  return entries;
}

export function configText(entries: ConfigEntry[]): string {
  const width = Math.max(...entries.map((e) => e.key.length));
  return entries
    .map((e) => {
      const value = Array.isArray(e.value) ? e.value.join(',') || '-' : e.value || '-';
      return `${e.key.padEnd(width)}  ${value}  (${e.source})\n`;
    })
    .join('');
}
