// tp: the command line. Every command talks to the user daemon over its unix socket (Connector API);
// `tp connect` starts the daemon when it is not running.
import * as fs from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { startRootDaemon } from '../daemons/root/launch.js';
import { parseHostPort, parsePort, UsageError } from '../netaddr/parse.js';
import { errorDetails } from '../rpc/unary-call.js';
import { TUNNEL_VERSION, VERSION } from '../version/version.js';
import { DaemonClient, waitForExit } from './daemon-client.js';
import { renderEnvFile } from './env-file.js';
import { httpFilterOf, parseInterceptPort } from './intercept-port.js';
import { addKubeCommands, type KubeConnectFlags, kubeConnectSettings } from './kube-commands.js';
import {
  interceptView,
  listText,
  type OutputFormat,
  parseOutputFormat,
  print,
  statusText,
  statusView,
  vifLines,
  workloadView,
} from './output.js';
import { collectCidrs, vifFlags } from './vif-flags.js';

// Progress goes to stdout with the result; stderr carries only the one-line error of a failure. With -o
// json|yaml, stdout is the document alone.
const progress = (line: string) => process.stdout.write(`${line}\n`);
const quiet = () => {};

function outputOption(): Option {
  return new Option('-o, --output <format>', 'json or yaml').argParser((v) => {
    try {
      return parseOutputFormat(v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  });
}

/** Runs a command body; a failure prints one line and exits non-zero. */
function action<A extends unknown[]>(
  name: string,
  body: (...args: A) => Promise<void>,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await body(...args);
      process.exit(0);
    } catch (e) {
      const message = e instanceof UsageError ? e.message : errorDetails(e);
      process.stderr.write(`tp ${name}: ${message}\n`);
      process.exit(1);
    }
  };
}

const program = new Command('tp')
  .description('run one service of a Kubernetes application on your workstation as if it ran in the cluster')
  .showHelpAfterError(false)
  .configureOutput({ outputError: (s, write) => write(s) });

program
  .command('connect')
  .description(
    'start the user daemon (if needed), connect to the traffic manager, and bring up the VIF: cluster addresses and names reach the cluster from this machine',
  )
  .option(
    '--manager-address <HOST:PORT>',
    'reach the traffic manager at this address (default: a port-forward through the Kubernetes API server)',
  )
  .option('--kubeconfig <file>', 'the kubeconfig to use (default: $KUBECONFIG, else ~/.kube/config)')
  .option('--context <name>', 'the kubeconfig context to use')
  .option('-n, --namespace <namespace>', "the namespace to work in (default: the context's)")
  .option('--manager-namespace <namespace>', "the traffic manager's namespace", 'tp-system')
  .option('--no-vif', 'no VIF: no cluster addresses or names on this machine (intercepts still work)')
  .option(
    '--also-proxy <CIDR>',
    'route this subnet to the cluster too (repeatable, or comma-separated)',
    collectCidrs,
    [],
  )
  .option(
    '--never-proxy <CIDR>',
    'never route this subnet to the cluster, whatever the cluster reports (repeatable, or comma-separated)',
    collectCidrs,
    [],
  )
  .option(
    '--allow-conflicting-subnets',
    "route cluster subnets that overlap this machine's routes anyway (the VIF wins for them)",
  )
  .action(
    action(
      'connect',
      async (
        opts: {
          managerAddress?: string;
          vif: boolean;
          alsoProxy: string[];
          neverProxy: string[];
          allowConflictingSubnets?: boolean;
        } & KubeConnectFlags,
      ) => {
        const vif = vifFlags(opts);
        // Without an address the daemon port-forwards through the API server with these credentials; the
        // kubeconfig is checked here so a mistake is reported before any daemon starts.
        const kube = opts.managerAddress ? { namespace: opts.namespace } : kubeConnectSettings(opts);
        let target = '';
        if (opts.managerAddress) {
          const address = parseHostPort(opts.managerAddress, '--manager-address');
          target = address.host.includes(':')
            ? `[${address.host}]:${address.port}`
            : `${address.host}:${address.port}`;
        }
        let daemon = await DaemonClient.find();
        let launched = false;
        let wasConnected = false;
        if (!daemon) {
          daemon = await DaemonClient.launch(progress);
          launched = true;
        } else wasConnected = (await daemon.status()).state !== 'DISCONNECTED';
        try {
          let info = await daemon.connect(target, kube, vif);
          if (info.rootDaemonNeeded) {
            // Only this process has the user's terminal, where sudo can ask for the password.
            progress('Starting the root daemon for the VIF (it creates a network interface and routes)');
            const root = await startRootDaemon({ interactive: process.stdin.isTTY === true });
            root.close();
            info = await daemon.connect(target, kube, vif);
            if (info.rootDaemonNeeded)
              throw new UsageError('the root daemon started, but the user daemon cannot reach its socket');
          }
          const view = statusView(info);
          process.stdout.write(
            `${wasConnected ? 'Already connected' : 'Connected'} to the traffic manager at ${info.managerAddress} (tp-manager ${info.managerVersion}, session ${info.sessionId})\n`,
          );
          if ('vif' in view) for (const line of vifLines(view.vif)) process.stdout.write(`${line}\n`);
        } catch (e) {
          // Leave nothing half-done: a daemon started just for this connect goes away again, and a
          // session this connect made is ended.
          if (launched) {
            const pid = (await daemon.status().catch(() => undefined))?.daemonPid;
            await daemon.quit().catch(() => {});
            if (pid) await waitForExit(pid, 5_000);
          } else if (!wasConnected) await daemon.disconnect().catch(() => {});
          throw e;
        }
      },
    ),
  );

program
  .command('uninstall')
  .description('remove the agent from workloads: their pods roll back to what was deployed')
  .option(
    '--agent <workload>',
    'a workload to remove the agent from (repeatable)',
    (v: string, p: string[]) => [...p, v],
    [],
  )
  .option('--all-agents', 'remove the agent from every workload that has it')
  .option('-n, --namespace <namespace>', "the workloads' namespace", 'default')
  .action(
    action('uninstall', async (opts: { agent: string[]; allAgents?: boolean; namespace: string }) => {
      if (opts.agent.length === 0 && !opts.allAgents)
        throw new UsageError('say what to uninstall: --agent WORKLOAD (repeatable) or --all-agents');
      if (opts.agent.length > 0 && opts.allAgents)
        throw new UsageError('--agent and --all-agents exclude each other: use one');
      const daemon = await DaemonClient.require();
      progress(
        opts.allAgents
          ? 'Removing the agent from every workload'
          : `Removing the agent from ${opts.agent.join(', ')}`,
      );
      await daemon.uninstall(opts.agent, opts.allAgents ? '' : opts.namespace, Boolean(opts.allAgents));
      progress('Done: the pods rolled without the agent');
    }),
  );

program
  .command('revoke')
  .description("end other users' intercepts of a workload (needs RBAC delete on intercepts.tp.dev there)")
  .argument('<workload>', 'the intercepted workload')
  .option('-n, --namespace <namespace>', "the workload's namespace", 'default')
  .option('--port <port>', 'only the intercept of this app port', (v: string) => parsePort(v, '--port'), 0)
  .action(
    action('revoke', async (workload: string, opts: { namespace: string; port: number }) => {
      const daemon = await DaemonClient.require();
      const ended = await daemon.revoke(workload, opts.namespace, opts.port);
      if (ended.length === 0)
        process.stdout.write(`No intercept of ${opts.namespace}/${workload} to revoke\n`);
      for (const i of ended)
        process.stdout.write(
          `Revoked intercept ${i.spec!.name} of ${i.spec!.client} (port ${i.spec!.remotePort} of ${opts.namespace}/${workload})\n`,
        );
    }),
  );

addKubeCommands(program, action, outputOption);

program
  .command('status')
  .description('show the connection and the intercepts')
  .addOption(outputOption())
  .action(
    action('status', async (opts: { output?: OutputFormat }) => {
      const daemon = await DaemonClient.find();
      const view = statusView(daemon ? await daemon.status() : undefined);
      print(opts.output ?? 'text', view, () => statusText(view));
    }),
  );

program
  .command('list')
  .description('list the workloads that can be intercepted')
  .option('-n, --namespace <namespace>', 'only this namespace (default: all)', '')
  .option('--intercepts', 'only workloads with intercepts')
  .addOption(outputOption())
  .action(
    action('list', async (opts: { namespace: string; intercepts?: boolean; output?: OutputFormat }) => {
      const daemon = await DaemonClient.require();
      const snapshot = await daemon.list({
        namespace: opts.namespace,
        interceptsOnly: Boolean(opts.intercepts),
        agentsOnly: false,
      });
      const workloads = snapshot.workloads.map(workloadView);
      print(opts.output ?? 'text', { workloads }, () => listText(workloads));
    }),
  );

program
  .command('intercept')
  .description('send the traffic of a workload port to a local port')
  .argument('<workload>', 'the workload to intercept')
  .requiredOption('--port <LOCAL[:REMOTE]>', 'the local port, and the workload port when it has several')
  .option('--mechanism <mechanism>', 'how to intercept: tcp', 'tcp')
  .option('-n, --namespace <namespace>', "the workload's namespace", 'default')
  .option('--name <name>', 'the intercept name (default: the workload name)')
  .option('--address <host>', 'the local host to send the traffic to', '127.0.0.1')
  .option('--env-file <path>', "write the intercepted container's environment to this file (KEY=VALUE lines)")
  .option('--env-json <path>', "write the intercepted container's environment to this file as JSON")
  .option(
    '--http-header <NAME=VALUE>',
    'personal intercept: take only HTTP requests with this header (repeat: all must match)',
    (v: string, all: string[]) => [...all, v],
    [] as string[],
  )
  .option('--http-path-prefix <path>', 'personal intercept: only requests whose path starts with this')
  .option('--http-path-equal <path>', 'personal intercept: only requests with exactly this path')
  .option(
    '--http-path-regex <regex>',
    'personal intercept: only requests whose path matches (JavaScript syntax)',
  )
  .addOption(outputOption())
  .action(
    action(
      'intercept',
      async (
        workload: string,
        opts: {
          port: string;
          mechanism: string;
          namespace: string;
          name?: string;
          address: string;
          envFile?: string;
          envJson?: string;
          httpHeader: string[];
          httpPathPrefix?: string;
          httpPathEqual?: string;
          httpPathRegex?: string;
          output?: OutputFormat;
        },
      ) => {
        const port = parseInterceptPort(opts.port);
        const httpFilter = httpFilterOf(opts);
        if (opts.mechanism !== 'tcp')
          throw new UsageError(`mechanism "${opts.mechanism}" is not supported: use --mechanism tcp`);
        const daemon = await DaemonClient.require();
        const result = await daemon.createIntercept(
          {
            name: opts.name ?? workload,
            workload,
            namespace: opts.namespace,
            workloadKind: '',
            mechanism: opts.mechanism,
            remotePort: port.remote,
            portName: '',
            targetHost: opts.address,
            targetPort: port.local,
            client: '',
            httpFilter,
          },
          opts.output ? quiet : progress,
        );
        if (opts.envFile) fs.writeFileSync(opts.envFile, renderEnvFile(result.environment), { mode: 0o600 });
        if (opts.envJson)
          fs.writeFileSync(opts.envJson, `${JSON.stringify(result.environment, null, 2)}\n`, { mode: 0o600 });
        const view = interceptView(result);
        print(
          opts.output ?? 'text',
          view,
          () =>
            `Intercepting ${view.namespace}/${view.workload} port ${view.remotePort} -> ${view.localAddress}, ${view.filter} (intercept "${view.name}", ${view.disposition})\n`,
        );
      },
    ),
  );

program
  .command('leave')
  .description('end an intercept: traffic goes back to the workload')
  .argument('<name>', 'the intercept name')
  .action(
    action('leave', async (name: string) => {
      const daemon = await DaemonClient.require();
      await daemon.removeIntercept(name);
      process.stdout.write(`Left intercept ${name}\n`);
    }),
  );

program
  .command('quit')
  .description('end the session and stop the user daemon')
  .action(
    action('quit', async () => {
      const daemon = await DaemonClient.find();
      if (!daemon) {
        process.stdout.write('tp is not running\n');
        return;
      }
      const { daemonPid, logFile } = await daemon.status();
      await daemon.quit();
      daemon.close();
      if (!(await waitForExit(daemonPid, 10_000)))
        throw new UsageError(`the user daemon (pid ${daemonPid}) did not exit within 10 s: see ${logFile}`);
      process.stdout.write('Disconnected; the tp user daemon has stopped\n');
    }),
  );

program
  .command('version')
  .description('show the versions of tp, the user daemon and the traffic manager')
  .addOption(outputOption())
  .action(
    action('version', async (opts: { output?: OutputFormat }) => {
      const daemon = await DaemonClient.find();
      const st = daemon ? await daemon.status().catch(() => undefined) : undefined;
      const daemonVersion = daemon ? (await daemon.version().catch(() => undefined))?.version : undefined;
      const view = {
        client: VERSION,
        tunnelProtocol: TUNNEL_VERSION,
        userDaemon: daemonVersion ?? null,
        trafficManager: st?.state === 'CONNECTED' ? st.managerVersion : null,
      };
      print(opts.output ?? 'text', view, () =>
        [
          `tp ${VERSION} (tunnel protocol ${TUNNEL_VERSION})`,
          `user daemon: ${daemonVersion ?? 'not running'}`,
          `traffic manager: ${view.trafficManager ?? (st?.state === 'RECONNECTING' ? 'unreachable (reconnecting)' : 'not connected')}`,
          '',
        ].join('\n'),
      );
    }),
  );

await program.parseAsync();
