// The CLI commands that talk to the Kubernetes API with the user's own credentials, not through the
// user daemon: `tp helm install|upgrade|uninstall` (the chart shipped with tp) and `tp describe`
// (works even when the traffic manager is down, which is when an admin needs it most).
//
// The kube/ modules are imported when a command needs them, not when tp starts: loading the Kubernetes
// client takes about half a second, which every other tp command would pay.
import * as path from 'node:path';
import type { Command, Option } from 'commander';
import type { HelmAction } from '../kube/helm.js';
import { DaemonClient } from './daemon-client.js';
import { type InterceptView, interceptLines, interceptView, type OutputFormat, print } from './output.js';

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
    "the workload's namespace (default: the context's)",
  )
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
          const { kc, namespace } = loadKubeConfig(opts);
          const d = await describeWorkload(kc, namespace, workload, { live: opts.live });
          // The intercepts live in the traffic manager: shown when tp is connected.
          const intercepts = await workloadIntercepts(namespace, workload);
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

  // `tp connect` without --manager-address calls kubeConnectSettings, which is synchronous: load the
  // kubeconfig reader before that action runs. (Once its caller awaits an async kubeConnectSettings,
  // this hook can go.)
  program.hook('preAction', async (_program, command) => {
    if (command.name() === 'connect' && !command.opts().managerAddress) await loadKubeconfigModule();
  });
}

/** The workload's intercepts as the manager has them (filter and owner each), or undefined when not connected. */
async function workloadIntercepts(namespace: string, workload: string): Promise<InterceptView[] | undefined> {
  const daemon = await DaemonClient.find();
  if (!daemon) return undefined;
  try {
    const snapshot = await daemon.list({ namespace, interceptsOnly: false, agentsOnly: false });
    return (snapshot.workloads.find((w) => w.name === workload)?.intercepts ?? []).map(interceptView);
  } catch {
    return undefined;
  } finally {
    daemon.close();
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
export function kubeConnectSettings(flags: KubeConnectFlags): {
  kubeconfig: string;
  context: string;
  namespace: string;
  managerNamespace: string;
} {
  if (!kubeconfigModule) throw new Error('kubeConnectSettings ran before the kubeconfig reader was loaded');
  const { kc, namespace, source } = kubeconfigModule.loadKubeConfig(flags);
  const kubeconfig =
    source === 'in-cluster'
      ? ''
      : source
          .split(path.delimiter)
          .map((f) => path.resolve(f))
          .join(path.delimiter);
  return { kubeconfig, context: kc.getCurrentContext(), namespace, managerNamespace: flags.managerNamespace };
}
