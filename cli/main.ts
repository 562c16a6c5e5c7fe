// tp: the command line. Every command talks to the user daemon over its unix socket (Connector API);
// `tp connect` starts the daemon when it is not running.
import * as os from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { Command, InvalidArgumentError, Option } from 'commander';
import { startRootDaemon } from '../daemons/root/launch.js';
import { logDir } from '../logging/logger.js';
import { parseHostPort, parsePort, UsageError } from '../netaddr/parse.js';
import { runDir } from '../rpc/connector-socket.js';
import type { WorkloadInfoSnapshot } from '../rpc/gen/manager.js';
import { errorDetails, hasStatus } from '../rpc/unary-call.js';
import { TUNNEL_VERSION, VERSION } from '../version/version.js';
import type { CommandSpec } from './completion.js';
import { DaemonClient, waitForExit } from './daemon-client.js';
import {
  checkEnvOutput,
  ENV_SYNTAXES,
  type EnvSyntax,
  parseEnvSyntax,
  renderEnv,
  writeSecretFile,
} from './env-file.js';
import { httpFilterOf, parseInterceptPort } from './intercept-port.js';
import { addKubeCommands, type KubeConnectFlags, kubeConnectSettings } from './kube-commands.js';
import { logLevelText, parseDurationSeconds, parseLogLevel } from './log-level.js';
import { mountedText, parseMountFlag, withLocalMountPort } from './mount-flag.js';
import { checkLabel, checkSubdomain } from './names.js';
import {
  interceptView,
  listText,
  type OutputFormat,
  parseOutputFormat,
  print,
  statusText,
  statusView,
  versionsView,
  vifLines,
  workloadView,
} from './output.js';
import { commandAfterDashes, commandEnvironment, findProgram, runCommand } from './run-command.js';
import { collectCidrs, vifFlags } from './vif-flags.js';

// Progress goes to stdout with the result; stderr carries only the one-line error of a failure. With -o
// json|yaml, stdout is the document alone.
const progress = (line: string) => process.stdout.write(`${line}\n`);
const quiet = () => {};

/** `--mapped-namespaces a,b` (repeatable). */
function collectNamespaces(value: string, previous: string[]): string[] {
  const names = value
    .split(',')
    .map((n) => n.trim())
    .filter(Boolean);
  for (const n of names)
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(n) || n.length > 63)
      throw new InvalidArgumentError(`"${n}" is not a namespace name (lowercase letters, digits and dashes)`);
  return [...previous, ...names.filter((n) => !previous.includes(n))];
}

/** The namespace a command names, else the one `tp connect` chose. */
async function namespaceOf(daemon: DaemonClient, requested: string | undefined): Promise<string> {
  return requested || (await daemon.status()).namespace || 'default';
}

type ListOutputFormat = OutputFormat | 'json-stream';

function listOutputOption(): Option {
  return new Option(
    '-o, --output <format>',
    'json, yaml or json-stream (one JSON line per change)',
  ).argParser((v) => {
    if (v === 'json-stream') return v;
    try {
      return parseOutputFormat(v);
    } catch {
      throw new InvalidArgumentError(`invalid output format "${v}": use json, yaml or json-stream`);
    }
  });
}

/** --env-syntax: how --env-file writes the environment (cli/env-file.ts). */
function envSyntaxOption(): Option {
  return new Option('--env-syntax <syntax>', `the syntax of --env-file: ${ENV_SYNTAXES.join(', ')}`)
    .default('compose')
    .argParser((v) => {
      try {
        return parseEnvSyntax(v);
      } catch (e) {
        throw new InvalidArgumentError((e as Error).message);
      }
    });
}

function outputOption(): Option {
  return new Option('-o, --output <format>', 'json or yaml').argParser((v) => {
    try {
      return parseOutputFormat(v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  });
}

/** A command's action: its errors become one line and exit 1; it may return its own exit status. */
function action<A extends unknown[]>(
  name: string,
  body: (...args: A) => Promise<unknown>,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      const status = await body(...args);
      process.exit(typeof status === 'number' ? status : 0);
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
  .option(
    '--mapped-namespaces <namespaces>',
    'work only in these namespaces (comma-separated; repeatable): tp list and intercepts stay inside them',
    collectNamespaces,
    [],
  )
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
          mappedNamespaces: string[];
        } & KubeConnectFlags,
      ) => {
        const vif = vifFlags(opts);
        if (opts.namespace) checkLabel(opts.namespace, 'namespace');
        checkLabel(opts.managerNamespace, 'manager namespace');
        if (
          opts.namespace &&
          opts.mappedNamespaces.length > 0 &&
          !opts.mappedNamespaces.includes(opts.namespace)
        )
          throw new UsageError(
            `-n ${opts.namespace} is not among --mapped-namespaces ${opts.mappedNamespaces.join(',')}: add it, or pick one of them`,
          );
        // Without an address the daemon port-forwards through the API server with these credentials. The
        // kubeconfig is read while the daemon starts (each loads the Kubernetes client or the daemon's code,
        // ~1 s of CPU: in parallel, not one after the other; docs/faults.md); a mistake in it stops a daemon
        // started for this connect again.
        const kubeSettings = opts.managerAddress
          ? Promise.resolve({ namespace: opts.namespace })
          : kubeConnectSettings(opts);
        // The daemon's progress waits for the kubeconfig: a mistake in it is the only thing the user sees.
        const held: string[] = [];
        let kubeRead = false;
        const launchProgress = (line: string) => (kubeRead ? progress(line) : held.push(line));
        kubeSettings.then(
          () => {
            kubeRead = true;
            for (const line of held.splice(0)) progress(line);
          },
          () => {},
        );
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
          daemon = await DaemonClient.launch(launchProgress);
          launched = true;
        } else wasConnected = (await daemon.status()).state !== 'DISCONNECTED';
        try {
          const kube = await kubeSettings;
          const request = { ...kube, mappedNamespaces: opts.mappedNamespaces };
          let info = await daemon.connect(target, request, vif);
          if (info.rootDaemonNeeded) {
            // Only this process has the user's terminal, where sudo can ask for the password.
            progress('Starting the root daemon for the VIF (it creates a network interface and routes)');
            const root = await startRootDaemon({ interactive: process.stdin.isTTY === true });
            root.close();
            info = await daemon.connect(target, request, vif);
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
  .option('-n, --namespace <namespace>', "the workloads' namespace (default: the connected one)")
  .addHelpText('after', '\nExample:\n  tp uninstall --agent echo -n shop')
  .action(
    action('uninstall', async (opts: { agent: string[]; allAgents?: boolean; namespace?: string }) => {
      if (opts.agent.length === 0 && !opts.allAgents)
        throw new UsageError('say what to uninstall: --agent WORKLOAD (repeatable) or --all-agents');
      if (opts.agent.length > 0 && opts.allAgents)
        throw new UsageError('--agent and --all-agents exclude each other: use one');
      for (const a of opts.agent) checkSubdomain(a, 'workload name');
      if (opts.namespace) checkLabel(opts.namespace, 'namespace');
      const daemon = await DaemonClient.require();
      const namespace = opts.allAgents ? '' : await namespaceOf(daemon, opts.namespace);
      progress(
        opts.allAgents
          ? 'Removing the agent from every workload'
          : `Removing the agent from ${opts.agent.map((a) => `${namespace}/${a}`).join(', ')}`,
      );
      await daemon.uninstall(opts.agent, namespace, Boolean(opts.allAgents));
      progress('Done: the pods rolled without the agent');
    }),
  );

program
  .command('revoke')
  .description("end other users' intercepts of a workload (needs RBAC delete on intercepts.tp.dev there)")
  .argument('<workload>', 'the intercepted workload')
  .option('-n, --namespace <namespace>', "the workload's namespace (default: the connected one)")
  .option('--port <port>', 'only the intercept of this app port', (v: string) => parsePort(v, '--port'), 0)
  .addHelpText('after', '\nExample:\n  tp revoke echo -n shop --port 8080')
  .action(
    action('revoke', async (workload: string, opts: { namespace?: string; port: number }) => {
      checkSubdomain(workload, 'workload name');
      if (opts.namespace) checkLabel(opts.namespace, 'namespace');
      const daemon = await DaemonClient.require();
      const namespace = await namespaceOf(daemon, opts.namespace);
      const ended = await daemon.revoke(workload, namespace, opts.port);
      if (ended.length === 0) process.stdout.write(`No intercept of ${namespace}/${workload} to revoke\n`);
      for (const i of ended)
        process.stdout.write(
          `Revoked intercept ${i.spec!.name} of ${i.spec!.client} (port ${i.spec!.remotePort} of ${namespace}/${workload})\n`,
        );
    }),
  );

addKubeCommands(program, action, outputOption);

program
  .command('status')
  .description("show the connection, the intercepts, and tp's, the manager's and the agents' versions")
  .addHelpText('after', '\nExamples:\n  tp status\n  tp status -o json')
  .addOption(outputOption())
  .action(
    action('status', async (opts: { output?: OutputFormat }) => {
      const daemon = await DaemonClient.find();
      const info = daemon ? await daemon.status() : undefined;
      // Connected: the agents' versions from every namespace this connection may list.
      const listed =
        info?.state === 'CONNECTED'
          ? await daemon!
              .list({
                namespace: '',
                interceptsOnly: false,
                agentsOnly: true,
                allNamespaces: true,
                includeSystem: true,
              })
              .catch(() => undefined)
          : undefined;
      const view = statusView(
        info,
        listed ? versionsView(VERSION, info!.managerVersion, listed.workloads) : undefined,
      );
      print(opts.output ?? 'text', view, () => statusText(view));
    }),
  );

program
  .command('list')
  .description(
    'list the workloads that can be intercepted: the connected namespace by default, without system namespaces',
  )
  .option('-n, --namespace <namespace>', 'this namespace (default: the connected one)', '')
  .option('-A, --all-namespaces', 'every namespace tp maps (without kube-system & co. and tp-system)')
  .option('--system', "with -A: also Kubernetes' own namespaces and the traffic manager's")
  .option('--intercepts', 'only workloads with intercepts')
  .option('-w, --watch', 'show the list again on every change, until interrupted')
  .addOption(listOutputOption())
  .addHelpText(
    'after',
    '\nExamples:\n  tp list\n  tp list -A -o json\n  tp list -n shop --watch -o json-stream   # one JSON document per line, per change',
  )
  .action(
    action(
      'list',
      async (opts: {
        namespace: string;
        allNamespaces?: boolean;
        system?: boolean;
        intercepts?: boolean;
        watch?: boolean;
        output?: ListOutputFormat;
      }) => {
        if (opts.namespace) checkLabel(opts.namespace, 'namespace');
        if (opts.system && !opts.allNamespaces && !opts.namespace)
          throw new UsageError('--system goes with -A (--all-namespaces): tp list -A --system');
        if (opts.namespace && opts.allNamespaces)
          throw new UsageError('-n and -A exclude each other: use one');
        const daemon = await DaemonClient.require();
        const request = {
          namespace: opts.namespace,
          interceptsOnly: Boolean(opts.intercepts),
          agentsOnly: false,
          allNamespaces: Boolean(opts.allNamespaces),
          includeSystem: Boolean(opts.system),
        };
        const format = opts.output ?? 'text';
        const show = (snapshot: WorkloadInfoSnapshot) => {
          const workloads = snapshot.workloads.map(workloadView);
          if (format === 'json-stream') process.stdout.write(`${JSON.stringify({ workloads })}\n`);
          else print(format, { workloads }, () => listText(workloads));
        };
        if (!opts.watch) {
          show(await daemon.list(request));
          return;
        }
        // Until interrupted (Ctrl-C) or the daemon ends the stream; text redraws as a block per change.
        await daemon.watchList(request, (snapshot) => {
          if (format === 'text' && process.stdout.isTTY) process.stdout.write('\x1b[2J\x1b[H');
          else if (format === 'text') process.stdout.write(`--- ${new Date().toISOString()}\n`);
          show(snapshot);
        });
      },
    ),
  );

program
  .command('intercept')
  .description('send the traffic of a workload port to a local port')
  .argument('<workload>', 'the workload to intercept')
  .usage('[options] <workload> [-- command...]')
  .argument(
    '[command...]',
    "after --: a command to run with the container's environment; the intercept ends when it exits, and tp exits with its status",
  )
  .requiredOption(
    '--port <LOCAL[:REMOTE]>',
    "the local port, and the workload's port when it has several: a container port or a Service port, by number or name",
  )
  .option('--service <name>', 'resolve REMOTE through this Service (when several select the workload)')
  .option('--mechanism <mechanism>', 'how to intercept: tcp', 'tcp')
  .option('-n, --namespace <namespace>', "the workload's namespace (default: the connected one)")
  .option('--name <name>', 'the intercept name (default: the workload name)')
  .option('--address <host>', 'the local host to send the traffic to', '127.0.0.1')
  .option(
    '--env-file <path>',
    "write the intercepted container's environment to this file (see --env-syntax)",
  )
  .option('--env-json <path>', "write the intercepted container's environment to this file as JSON")
  .addOption(envSyntaxOption())
  .option(
    '--mount [dir]',
    "mount the container's volumes (at DIR; :rw writable where the volume allows, :ro by default; =false: do not); TP_ROOT in the env",
  )
  .option(
    '--local-mount-port <port>',
    "serve the container's volumes as SFTP on 127.0.0.1:PORT for your own mounter instead (PORT:rw writable where the volume allows)",
  )
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
  .addHelpText(
    'after',
    "\nExamples:\n  tp intercept echo --port 8080            # the only port of echo\n  tp intercept echo --port 8080:http       # a container port or Service port named http\n  tp intercept echo --port 8080:80 --service echo-public\n  tp intercept echo --port 8080 -- npm start   # until npm exits, with the container's environment",
  )
  .action(
    action(
      'intercept',
      async (
        workload: string,
        operands: string[],
        opts: {
          port: string;
          mechanism: string;
          namespace?: string;
          service?: string;
          name?: string;
          address: string;
          envFile?: string;
          envJson?: string;
          envSyntax: EnvSyntax;
          mount?: string | boolean;
          localMountPort?: string;
          httpHeader: string[];
          httpPathPrefix?: string;
          httpPathEqual?: string;
          httpPathRegex?: string;
          output?: OutputFormat;
        },
      ) => {
        // Everything the user typed is checked before anything is printed or sent to the daemon.
        checkSubdomain(workload, 'workload name');
        const name = checkSubdomain(opts.name ?? workload, 'intercept name');
        if (opts.namespace) checkLabel(opts.namespace, 'namespace');
        const port = parseInterceptPort(opts.port);
        const httpFilter = httpFilterOf(opts);
        if (opts.mechanism !== 'tcp')
          throw new UsageError(`mechanism "${opts.mechanism}" is not supported: use --mechanism tcp`);
        if (opts.envFile) checkEnvOutput(opts.envFile, '--env-file');
        if (opts.envJson) checkEnvOutput(opts.envJson, '--env-json');
        const mount = withLocalMountPort(parseMountFlag(opts.mount), opts.localMountPort);
        const command = commandAfterDashes('intercept', operands, process.argv.slice(2));
        if (command) findProgram(command[0]!);
        const daemon = await DaemonClient.require();
        const result = await daemon.createIntercept(
          {
            name,
            workload,
            namespace: opts.namespace ?? '',
            workloadKind: '',
            mechanism: opts.mechanism,
            remotePort: port.remote,
            portName: port.remoteName,
            targetHost: opts.address,
            targetPort: port.local,
            client: '',
            serviceName: opts.service ?? '',
            ingest: false,
            container: '',
            httpFilter,
          },
          opts.output ? quiet : progress,
          mount,
        );
        writeEnvironment(result.environment, opts);
        const view = interceptView(result);
        print(
          opts.output ?? 'text',
          view,
          () =>
            `Intercepting ${view.namespace}/${view.workload} port ${view.remotePort} -> ${view.localAddress}, ${view.filter} (intercept "${view.name}", ${view.disposition})\n` +
            mountedText(result.mountPoint, result.mountReadWrite, result.localMountPort),
        );
        if (command) return runThenLeave(daemon, command, result.environment, name, 'intercept');
      },
    ),
  );

program
  .command('ingest')
  .description("get a container's environment without taking any traffic")
  .argument('<workload>', 'the workload to ingest')
  .usage('[options] <workload> [-- command...]')
  .argument(
    '[command...]',
    "after --: a command to run with the container's environment; the ingest ends when it exits, and tp exits with its status",
  )
  .option('-c, --container <name>', 'the container (needed when the pod has several)', '')
  .option('-n, --namespace <namespace>', "the workload's namespace (default: the connected one)")
  .option('--name <name>', 'the ingest name (default: the workload name)')
  .option('--env-file <path>', "write the container's environment to this file (see --env-syntax)")
  .option('--env-json <path>', "write the container's environment to this file as JSON")
  .addOption(envSyntaxOption())
  .option(
    '--mount [dir]',
    "mount the container's volumes (at DIR; :rw writable where the volume allows, :ro by default; =false: do not); TP_ROOT in the env",
  )
  .option(
    '--local-mount-port <port>',
    "serve the container's volumes as SFTP on 127.0.0.1:PORT for your own mounter instead (PORT:rw writable where the volume allows)",
  )
  .addOption(outputOption())
  .action(
    action(
      'ingest',
      async (
        workload: string,
        operands: string[],
        opts: {
          container: string;
          namespace?: string;
          name?: string;
          envFile?: string;
          envJson?: string;
          envSyntax: EnvSyntax;
          mount?: string | boolean;
          localMountPort?: string;
          output?: OutputFormat;
        },
      ) => {
        checkSubdomain(workload, 'workload name');
        const name = checkSubdomain(opts.name ?? workload, 'ingest name');
        if (opts.namespace) checkLabel(opts.namespace, 'namespace');
        if (opts.container) checkLabel(opts.container, 'container name');
        if (opts.envFile) checkEnvOutput(opts.envFile, '--env-file');
        if (opts.envJson) checkEnvOutput(opts.envJson, '--env-json');
        const mount = withLocalMountPort(parseMountFlag(opts.mount), opts.localMountPort);
        const command = commandAfterDashes('ingest', operands, process.argv.slice(2));
        if (command) findProgram(command[0]!);
        const daemon = await DaemonClient.require();
        const result = await daemon.createIntercept(
          {
            name,
            workload,
            namespace: opts.namespace ?? '',
            workloadKind: '',
            mechanism: '',
            remotePort: 0,
            portName: '',
            targetHost: '',
            targetPort: 0,
            client: '',
            serviceName: '',
            ingest: true,
            container: opts.container,
            httpFilter: undefined,
          },
          opts.output ? quiet : progress,
          mount,
        );
        writeEnvironment(result.environment, opts);
        const view = interceptView(result);
        print(
          opts.output ?? 'text',
          view,
          () =>
            `Ingesting ${view.namespace}/${view.workload} container ${view.container} (ingest "${view.name}", ${view.disposition})\n` +
            mountedText(result.mountPoint, result.mountReadWrite, result.localMountPort),
        );
        if (command) return runThenLeave(daemon, command, result.environment, name, 'ingest');
      },
    ),
  );

program
  .command('leave')
  .description('end an intercept (traffic goes back to the workload) or an ingest')
  .argument('<name>', 'the intercept or ingest name')
  .action(
    action('leave', async (name: string) => {
      checkSubdomain(name, 'intercept name');
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
  .command('loglevel')
  .description(
    "change the log level of the user daemon and the root daemon (until they stop, or for --duration); the manager's and agents' is the chart's logLevel",
  )
  .argument('<level>', 'error, warn, info, debug or trace')
  .option(
    '-d, --duration <duration>',
    'go back to the level before after this long (90s, 30m, 1h30m; at most 24h)',
  )
  .action(
    action('loglevel', async (value: string, opts: { duration?: string }) => {
      const level = parseLogLevel(value);
      const seconds = opts.duration === undefined ? 0 : parseDurationSeconds(opts.duration);
      const daemon = await DaemonClient.find();
      if (!daemon)
        throw new UsageError(
          `tp is not running: tp connect starts the daemons (TP_LOG_LEVEL=${level} tp connect starts them at that level)`,
        );
      const result = await daemon.setLogLevel(level, seconds);
      process.stdout.write(logLevelText(level, seconds, result));
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

program
  .command('config')
  .description("tp's client settings")
  .command('view')
  .description('show the effective client settings and where each came from')
  .addOption(outputOption())
  .addHelpText('after', '\nExamples:\n  tp config view\n  tp config view -o json')
  .action(
    action('config view', async (opts: { output?: OutputFormat }) => {
      const { configText, configView } = await import('./config-view.js');
      const daemon = await DaemonClient.find();
      const info = await daemon?.status().catch(() => undefined);
      daemon?.close();
      const entries = configView(process.env, info, {
        runDir: runDir(),
        logDir: logDir(),
        homedir: os.homedir(),
      });
      print(opts.output ?? 'text', { config: entries }, () => configText(entries));
    }),
  );

program
  .command('completion')
  .description("print a shell script that completes tp's commands and flags")
  .argument('<shell>', 'bash, zsh or fish')
  .addHelpText(
    'after',
    '\nExamples:\n  source <(tp completion bash)\n  source <(tp completion zsh)\n  tp completion fish > ~/.config/fish/completions/tp.fish',
  )
  .action(
    action('completion', async (shell: string) => {
      const { completionScript, parseShell } = await import('./completion.js');
      const spec = (c: Command): CommandSpec => ({
        name: c.name(),
        flags: [...c.options.map((o) => o.long ?? o.short ?? ''), '--help'].filter(Boolean),
        subcommands: c.commands.map(spec),
      });
      process.stdout.write(completionScript(parseShell(shell), program.commands.map(spec)));
    }),
  );

/** --env-file (in --env-syntax) and --env-json; owner-only files (the values may be secrets). */
/**
 * `-- COMMAND`: runs it with the container's environment, then leaves the intercept (or ingest). Returns
 * the command's exit status; when leaving fails, says so with the fix, and returns 1 if the command itself
 * succeeded.
 */
async function runThenLeave(
  daemon: DaemonClient,
  command: string[],
  environment: Record<string, string>,
  name: string,
  what: 'intercept' | 'ingest',
): Promise<number> {
  const status = await runCommand(command, commandEnvironment(process.env, environment));
  try {
    await daemon.removeIntercept(name);
    process.stderr.write(`tp: ${command[0]} exited (status ${status}); left ${what} ${name}\n`);
    return status;
  } catch (e) {
    if (hasStatus(e, grpc.status.NOT_FOUND)) {
      process.stderr.write(
        `tp: ${command[0]} exited (status ${status}); the ${what} ${name} had already ended\n`,
      );
      return status;
    }
    process.stderr.write(
      `tp ${what}: ${command[0]} exited (status ${status}), but leaving ${what} ${name} failed: ${errorDetails(e)}; it may still be active: see tp status, end it with tp leave ${name}\n`,
    );
    return status === 0 ? 1 : status;
  }
}

function writeEnvironment(
  env: Record<string, string>,
  opts: { envFile?: string; envJson?: string; envSyntax: EnvSyntax },
): void {
  if (opts.envFile) {
    const { text, skipped } = renderEnv(env, opts.envSyntax);
    writeSecretFile(opts.envFile, text);
    for (const s of skipped)
      process.stderr.write(
        `tp: ${s.name} left out of ${opts.envFile}: ${s.reason} (--env-syntax sh or json keep it)\n`,
      );
  }
  if (opts.envJson) writeSecretFile(opts.envJson, renderEnv(env, 'json').text);
}

await program.parseAsync();
