// The node agent's command line, parsed and checked before anything touches the host.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Command, Option } from 'commander';
import { type Level, parseLevel } from '../../logging/logger.js';
import { parsePort, UsageError } from '../../netaddr/parse.js';

export interface NodeAgentConfig {
  kubeconfig: string;
  nodeName: string;
  nodeIP: string;
  stateDir: string;
  tlsCert: string;
  tlsKey: string;
  clientCa: string;
  port: number;
  clusterDns: string[];
  clusterDomain: string;
  tpRoot: string;
  bridge: string;
  labBin: string | undefined;
  logFile: string | undefined;
  logLevel: Level;
  /** Taints the Node is registered with (the kubelet's --register-with-taints). */
  taints: NodeTaint[];
}

export interface NodeTaint {
  key: string;
  value?: string;
  effect: 'NoSchedule' | 'PreferNoSchedule' | 'NoExecute';
}

/** key[=value]:Effect[,…], as the kubelet's --register-with-taints. */
export function parseTaints(value: string): NodeTaint[] {
  if (value.trim() === '') return [];
  return value.split(',').map((part) => {
    const m = /^([^=:\s]+)(?:=([^:\s]*))?:(NoSchedule|PreferNoSchedule|NoExecute)$/.exec(part.trim());
    if (!m) {
      throw new UsageError(
        `--register-with-taints: invalid taint "${part}": expected key[=value]:Effect, e.g. dedicated=test:NoSchedule`,
      );
    }
    return { key: m[1]!, ...(m[2] ? { value: m[2] } : {}), effect: m[3] as NodeTaint['effect'] };
  });
}

/** This checkout: dist/lab/node/main.js lives three levels below it. */
export function defaultTpRoot(): string {
  return path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..', '..');
}

function readableFile(value: string, flag: string): string {
  try {
    fs.accessSync(value, fs.constants.R_OK);
  } catch {
    throw new UsageError(`${flag} ${value}: the file does not exist or is not readable`);
  }
  return path.resolve(value);
}

export function nodeAgentCommand(): Command {
  return new Command('tp-lab-node')
    .description("tp-lab's node agent: a kubelet that runs pods as network namespaces and local processes")
    .requiredOption('--kubeconfig <file>', "the node's credentials (system:node:<name>)")
    .requiredOption('--node-name <name>', 'the Node to register')
    .requiredOption('--node-ip <ip>', "the node's InternalIP; the kubelet API listens there")
    .requiredOption('--state-dir <dir>', 'pod state: volumes, logs, address allocations')
    .requiredOption('--tls-cert <file>', "the kubelet API's serving certificate")
    .requiredOption('--tls-key <file>', "the kubelet API's serving key")
    .option('--client-ca <file>', 'CA that signs the clients allowed on the kubelet API (the API server)')
    .addOption(new Option('--ca-file <file>', 'same as --client-ca').hideHelp())
    .option('--port <port>', 'kubelet API port', '10250')
    .option('--cluster-dns <ips>', 'cluster DNS server(s), comma-separated', '10.96.0.10')
    .option('--cluster-domain <domain>', 'cluster domain', 'cluster.local')
    .option('--tp-root <dir>', 'the tp checkout whose dist/ the tp/tp image runs (default: this one)')
    .option('--bridge <name>', 'pod bridge in the node namespace', 'tplab0')
    .option('--lab-bin <dir>', "the lab's binary directory (coredns), as printed by lab/build.sh")
    .option('--register-with-taints <taints>', 'taints for the Node: key[=value]:Effect[,…]', '')
    .option('--log-file <file>', 'log here instead of stderr')
    .option('--log-level <level>', 'error, warn, info, debug or trace', process.env.TP_LOG_LEVEL ?? 'info')
    .exitOverride()
    .configureOutput({ writeErr: () => {} });
}

export function parseNodeAgentFlags(argv: string[]): NodeAgentConfig {
  const command = nodeAgentCommand();
  try {
    command.parse(argv, { from: 'user' });
  } catch (err) {
    const e = err as { code?: string; message: string };
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') throw err;
    throw new UsageError(e.message.replace(/^error: /, ''));
  }
  const o = command.opts<Record<string, string | undefined>>();
  const clientCa = o.clientCa ?? o.caFile;
  if (!clientCa)
    throw new UsageError(
      "--client-ca is required: the CA that signs the API server's kubelet client certificate",
    );
  if (!net.isIPv4(o.nodeIp!))
    throw new UsageError(`--node-ip ${o.nodeIp}: expected an IPv4 address, e.g. 172.30.0.1`);
  const clusterDns = o
    .clusterDns!.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const ip of clusterDns) {
    if (!net.isIP(ip)) throw new UsageError(`--cluster-dns ${ip}: expected an IP address, e.g. 10.96.0.10`);
  }
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(o.nodeName!)) {
    throw new UsageError(`--node-name ${o.nodeName}: expected a DNS label (lower-case letters, digits, -)`);
  }
  if (o.bridge!.length > 15)
    throw new UsageError(`--bridge ${o.bridge}: interface names have at most 15 characters`);
  const tpRoot = path.resolve(o.tpRoot ?? defaultTpRoot());
  if (!fs.existsSync(path.join(tpRoot, 'package.json'))) {
    throw new UsageError(`--tp-root ${tpRoot}: no package.json there; pass the tp checkout`);
  }
  if (o.labBin !== undefined && !fs.existsSync(o.labBin)) {
    throw new UsageError(
      `--lab-bin ${o.labBin}: no such directory; pass the last line of lab/build.sh's output`,
    );
  }
  let logLevel: Level;
  try {
    logLevel = parseLevel(o.logLevel);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  return {
    kubeconfig: readableFile(o.kubeconfig!, '--kubeconfig'),
    nodeName: o.nodeName!,
    nodeIP: o.nodeIp!,
    stateDir: path.resolve(o.stateDir!),
    tlsCert: readableFile(o.tlsCert!, '--tls-cert'),
    tlsKey: readableFile(o.tlsKey!, '--tls-key'),
    clientCa: readableFile(clientCa, o.clientCa ? '--client-ca' : '--ca-file'),
    port: parsePort(o.port!, '--port'),
    clusterDns,
    clusterDomain: o.clusterDomain!.replace(/\.$/, ''),
    tpRoot,
    bridge: o.bridge!,
    labBin: o.labBin === undefined ? undefined : path.resolve(o.labBin),
    logFile: o.logFile === undefined ? undefined : path.resolve(o.logFile),
    logLevel,
    taints: parseTaints(o.registerWithTaints ?? ''),
  };
}
