// The CLI commands that talk to the Kubernetes API with the user's own credentials, not through the
// user daemon: `tp helm install|upgrade|uninstall` (the chart shipped with tp) and `tp describe`
// (works even when the traffic manager is down, which is when an admin needs it most).
//
// The kube/ modules are imported when a command needs them, not when tp starts: loading the Kubernetes
// client takes about half a second, which every other tp command would pay.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command, Option } from 'commander';
import type { HelmAction } from '../kube/helm.js';
import { logDir } from '../logging/logger.js';
import { UsageError } from '../netaddr/parse.js';
import type { WorkloadInfo } from '../rpc/gen/manager.js';
import { VERSION } from '../version/version.js';
import { DaemonClient } from './daemon-client.js';
import { interceptLines, interceptView, type OutputFormat, print, statusView } from './output.js';

type KubeconfigModule = typeof import('../kube/kubeconfig.js');
let kubeconfigModule: KubeconfigModule | undefined;

async function loadKubeconfigModule(): Promise<KubeconfigModule> {
  kubeconfigModule ??= await import('../kube/kubeconfig.js');
  return kubeconfigModule;
}

type Action = <A extends unknown[]>(
  name: string,
  body: (...args: A) => Promise<void>,
) => (...args: A) => Promise<void>;

const collect = (value: string, previous: string[]) => [...previous, value];

function kubeOptions(command: Command, namespaceHelp: string): Command {
  return command
    .option('--kubeconfig <file>', 'the kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config)')
    .option('--context <name>', 'the kubeconfig context to use')
    .option('-n, --namespace <namespace>', namespaceHelp);
}

interface HelmFlags {
  kubeconfig?: string;
  context?: string;
  namespace?: string;
  set: string[];
  values: string[];
  wait: boolean;
  timeout?: string;
}

export function addKubeCommands(program: Command, action: Action, outputOption: () => Option): void {
  const helm = program
    .command('helm')
    .description(
      'install, upgrade or uninstall the traffic manager (runs helm with the chart shipped with tp)',
    );
  for (const [verb, description] of [
    ['install', 'install the traffic manager into the cluster'],
    ['upgrade', "upgrade the traffic manager to this tp's chart, keeping your values"],
    ['uninstall', 'remove the agents from every workload, then the traffic manager'],
  ] as const) {
    const cmd = kubeOptions(
      helm.command(verb).description(description),
      "the traffic manager's namespace (default: tp-system)",
    );
    if (verb !== 'uninstall') {
      cmd
        .option('--set <key=value>', 'a chart value (repeatable), e.g. --set logLevel=debug', collect, [])
        .option('-f, --values <file>', 'a values file (repeatable)', collect, []);
    }
    cmd
      .option('--no-wait', 'return without waiting for the manager (or the uninstall hook)')
      .option('--timeout <duration>', "how long helm waits, in helm's syntax (default 5m)")
      .action(
        action(`helm ${verb}`, async (opts: HelmFlags) => {
          const { runHelm } = await import('../kube/helm.js');
          await runHelm(verb as HelmAction, {
            kubeconfig: opts.kubeconfig,
            context: opts.context,
            namespace: opts.namespace,
            set: opts.set,
            valuesFiles: opts.values,
            wait: opts.wait,
            timeout: opts.timeout,
          });
        }),
      );
  }

  kubeOptions(
    program
      .command('describe')
      .description(
        'show a workload as tp sees it: pods, captured ports, mechanism, agent state, capture rules',
      )
      .argument('<workload>', 'a Deployment, StatefulSet or ReplicaSet'),
    "the workload's namespace (default: the connected one, else the context's)",
  )
    .addHelpText('after', '\nExamples:\n  tp describe echo\n  tp describe echo -n shop -o json')
    .option('--no-live', 'skip the live check of the rules in each pod (tp-init status through exec)')
    .addOption(outputOption())
    .action(
      action(
        'describe',
        async (
          workload: string,
          opts: {
            kubeconfig?: string;
            context?: string;
            namespace?: string;
            live: boolean;
            output?: OutputFormat;
          },
        ) => {
          const { loadKubeConfig } = await loadKubeconfigModule();
          const { describeWorkload, renderDescription } = await import('../kube/describe.js');
          // Connected: the connected namespace is the default, and the manager knows the agents' counters.
          const daemon = await DaemonClient.find();
          const connected = await daemon?.status().catch(() => undefined);
          const viaManager = connected?.state === 'CONNECTED' ? daemon : undefined;
          const { kc, namespace } = loadKubeConfig({
            ...opts,
            namespace: opts.namespace ?? (viaManager ? connected?.namespace : undefined),
          });
          const d = await describeWorkload(kc, namespace, workload, { live: opts.live });
          const managed = await managerView(viaManager, namespace, workload);
          daemon?.close();
          for (const pod of d.pods) {
            const counters = managed?.agents.find((a) => a.podName === pod.pod.name)?.counters;
            if (counters) pod.agentCounters = counters;
          }
          // The intercepts live in the traffic manager: shown when tp is connected.
          const intercepts = viaManager ? (managed?.intercepts ?? []).map(interceptView) : undefined;
          print(opts.output ?? 'text', { ...d, intercepts: intercepts ?? null }, () => {
            const held =
              intercepts === undefined
                ? ['  intercepts:   unknown (tp is not connected)']
                : interceptLines(intercepts, '  ');
            return `${renderDescription(d).trimEnd()}\n${held.join('\n')}\n`;
          });
        },
      ),
    );

  kubeOptions(
    program
      .command('gather-logs')
      .description(
        "one .tar.gz with the workstation daemons' logs, the traffic manager's and the agents' logs (through the API server) and an index; secret-looking values redacted",
      ),
    "the namespace of the agents (default: the connected one, else the context's)",
  )
    .option('-o, --output-file <file>', 'the archive: FILE.tar.gz (default: tp-logs-<time>.tar.gz here)')
    .option('-A, --all-namespaces', 'the agents of every namespace')
    .option('--daemons <which>', 'the workstation daemons: all, user, root or none', 'all')
    .option('--no-traffic-manager', "leave out the traffic manager's logs")
    .option('--no-traffic-agents', "leave out the agents' (and tp-init's) logs")
    .option(
      '--manager-namespace <namespace>',
      "the traffic manager's namespace (default: the connected one's, else tp-system)",
    )
    .addHelpText(
      'after',
      '\nExamples:\n  tp gather-logs\n  tp gather-logs -o /tmp/tp.tar.gz -A\n  tp gather-logs --daemons none --no-traffic-agents   # the manager only',
    )
    .action(
      action(
        'gather-logs',
        async (opts: {
          kubeconfig?: string;
          context?: string;
          namespace?: string;
          outputFile?: string;
          allNamespaces?: boolean;
          daemons: string;
          trafficManager: boolean;
          trafficAgents: boolean;
          managerNamespace?: string;
        }) => {
          const g = await import('./gather-logs.js');
          const now = new Date();
          const choice = g.parseDaemonChoice(opts.daemons);
          const file = g.archivePath(opts.outputFile, now);
          if (opts.allNamespaces && opts.namespace)
            throw new UsageError('-n and -A exclude each other: use one');
          const files: import('./gather-logs.js').ArchiveFile[] = [];
          const errors: string[] = [];
          // The workstation: the daemons' logs, tp status and the TP_* settings.
          for (const f of g.daemonLogFiles(logDir(), choice))
            files.push({
              name: `daemons/${path.basename(f)}`,
              source: f,
              content: fs.readFileSync(f, 'utf8'),
            });
          if (choice !== 'none' && files.length === 0) errors.push(`no daemon logs in ${logDir()}`);
          const daemon = await DaemonClient.find();
          const info = await daemon?.status().catch(() => undefined);
          daemon?.close();
          if (info)
            files.push({
              name: 'workstation/status.json',
              source: 'tp status -o json',
              content: `${JSON.stringify(statusView(info), null, 2)}\n`,
            });
          const env = Object.entries(process.env)
            .filter(([k]) => k.startsWith('TP_') || k === 'KUBECONFIG')
            .map(([k, v]) => [k, v ?? ''] as [string, string])
            .sort(([a], [b]) => a.localeCompare(b));
          files.push({
            name: 'workstation/env.txt',
            source: 'the environment of tp (TP_*, KUBECONFIG)',
            content: g.redactEnv(env),
          });
          // The cluster, with the user's own credentials.
          if (opts.trafficManager || opts.trafficAgents) {
            const { loadKubeConfig } = await loadKubeconfigModule();
            const connected = info?.state === 'CONNECTED' ? info : undefined;
            const { kc, namespace } = loadKubeConfig({
              ...opts,
              namespace: opts.namespace ?? (connected?.namespace || undefined),
            });
            const { gatherPodLogs } = await import('../kube/pod-logs.js');
            const pods = await gatherPodLogs(kc, {
              managerNamespace: opts.managerNamespace ?? (connected?.managerNamespace || 'tp-system'),
              manager: opts.trafficManager,
              agents: opts.trafficAgents,
              agentNamespaces: opts.allNamespaces ? 'all' : [namespace],
            });
            errors.push(...pods.errors);
            for (const l of pods.logs) {
              const where = `${l.namespace}/${l.pod}/${l.container}`;
              if (l.error) errors.push(`log of ${where}: ${l.error}`);
              else
                files.push({
                  name: `cluster/${where}.log`,
                  source: `kubectl logs -n ${l.namespace} ${l.pod} -c ${l.container}`,
                  content: g.redactLog(l.text ?? ''),
                });
            }
            for (const e of pods.envs)
              files.push({
                name: `cluster/${e.namespace}/${e.pod}/${e.container}.env`,
                source: `the ${e.container} container's env in the pod spec`,
                content: g.redactEnv(e.env),
              });
          }
          const index = await g.writeArchive(file, files, errors, { now, version: VERSION });
          process.stdout.write(
            `Wrote ${file}: ${index.files.length + 1} files (index.json lists them)\n` +
              errors.map((e) => `  not gathered: ${e}\n`).join(''),
          );
        },
      ),
    );
}

/** The manager's view of a workload (its agents' counters), or undefined when tp is not connected. */
async function managerView(
  daemon: DaemonClient | undefined,
  namespace: string,
  workload: string,
): Promise<WorkloadInfo | undefined> {
  if (!daemon) return undefined;
  try {
    const snapshot = await daemon.list({
      namespace,
      interceptsOnly: false,
      agentsOnly: false,
      allNamespaces: false,
      includeSystem: false,
    });
    return snapshot.workloads.find((w) => w.name === workload);
  } catch {
    return undefined; // e.g. a namespace outside --mapped-namespaces: describe reads the cluster anyway
  }
}

export interface KubeConnectFlags {
  kubeconfig?: string;
  context?: string;
  namespace?: string;
  managerNamespace: string;
}

/**
 * What the user daemon needs to port-forward to the manager: the kubeconfig as absolute paths (the
 * daemon runs elsewhere and may outlive this shell's KUBECONFIG), the context, the namespaces. Loading
 * it here reports a bad kubeconfig or context before any daemon starts.
 */
export async function kubeConnectSettings(flags: KubeConnectFlags): Promise<{
  kubeconfig: string;
  context: string;
  namespace: string;
  managerNamespace: string;
}> {
  const { kc, namespace, source } = (await loadKubeconfigModule()).loadKubeConfig(flags);
  const kubeconfig =
    source === 'in-cluster'
      ? ''
      : source
          .split(path.delimiter)
          .map((f) => path.resolve(f))
          .join(path.delimiter);
  return { kubeconfig, context: kc.getCurrentContext(), namespace, managerNamespace: flags.managerNamespace };
}
