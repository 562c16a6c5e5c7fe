// tp-lab's node agent: the lab's kubelet. It registers the Node, keeps its Lease fresh, and runs
// every pod bound to it as a network namespace on the node's bridge with local processes (the image
// table in lab/README.md), and serves the kubelet API for logs, exec and port-forward.
//
// Runs as root inside the node's network namespace (tplab-node), started by `tp-lab up`:
//
//   node dist/lab/node/main.js
//     --kubeconfig FILE        the node's credentials (system:node:<name>, group system:nodes)   required
//     --node-name NAME         the Node to register, e.g. tplab-node                             required
//     --node-ip IP             InternalIP and kubelet API address, e.g. 172.30.0.1               required
//     --state-dir DIR          pod state (volumes, logs, IP allocations), e.g. $TP_LAB_DIR/node  required
//     --tls-cert F --tls-key F the kubelet API's serving certificate (SAN: the node IP)          required
//     --client-ca F            CA of the API server's kubelet client certificate                 required
//                              (--ca-file F is accepted as the same flag)
//     [--port 10250]           kubelet API port
//     [--cluster-dns 10.96.0.10] [--cluster-domain cluster.local]
//     [--tp-root DIR]          the tp checkout the tp/tp image runs from (default: this checkout)
//     [--bridge tplab0]        the pod bridge; it gets the first address of the node's podCIDR
//     [--lab-bin DIR]          the lab's binaries (coredns for lab/coredns): last line of lab/build.sh
//     [--register-with-taints key[=value]:Effect,…]   taints the Node is created with
//     [--log-file F] [--log-level info]
//
// SIGTERM/SIGINT: stops every pod (bounded grace), removes their namespaces, the bridge and the
// mount points it created, then exits 0. Pod objects stay in the API.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { createLogger, logToFile, setLevel } from '../../logging/logger.js';
import { UsageError } from '../../netaddr/parse.js';
import { findHostTools } from './container-process.js';
import { EventRecorder } from './events.js';
import { type NodeAgentConfig, parseNodeAgentFlags } from './flags.js';
import { PersistentAddressPool } from './ipam.js';
import { NodeApi } from './kube-api.js';
import { startKubeletServer } from './kubelet-server.js';
import { NodeRegistration, nodeResources } from './node-registration.js';
import { PodManager } from './pod-manager.js';
import { ensureBridge, removeBridge } from './pod-network.js';
import type { NodeContext } from './pod-worker.js';
import { CreatedPaths, NodeStateDir } from './state-dir.js';

const log = createLogger('tp-lab-node');

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Probes come from the node's IP when it is on an interface here (then it is status.hostIP too). */
function probeSource(nodeIP: string): string | undefined {
  const local = Object.values(os.networkInterfaces())
    .flat()
    .some((a) => a?.address === nodeIP);
  return local ? nodeIP : undefined;
}

function tpBins(tpRoot: string): Record<string, string> {
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(tpRoot, 'package.json'), 'utf8')) as {
      bin?: Record<string, string>;
    };
    return pkg.bin ?? {};
  } catch {
    return {};
  }
}

async function run(config: NodeAgentConfig): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new UsageError('the node agent must run as root: it creates network namespaces and mounts');
  }
  const tools = findHostTools();
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(config.kubeconfig);
  const api = new NodeApi(kubeConfig, config.nodeName);
  const state = new NodeStateDir(config.stateDir);
  fs.mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });

  const stop = new AbortController();
  let shuttingDown = false;
  let shutdown: () => Promise<void> = async () => {};
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      log.info(`${signal}: stopping`);
      stop.abort();
      if (shuttingDown) return;
      shuttingDown = true;
      void shutdown().then(
        () => process.exit(0),
        (err) => {
          log.error('shutdown failed', { error: err });
          process.exit(1);
        },
      );
    });
  }

  const registration = new NodeRegistration(
    api,
    {
      name: config.nodeName,
      ip: config.nodeIP,
      kubeletPort: config.port,
      stateDir: config.stateDir,
      taints: config.taints,
    },
    log,
  );
  await registration.register();
  registration.startHeartbeats();
  shutdown = async () => registration.stop();

  const podCidr = await registration.waitForPodCidr(stop.signal);
  const addresses = PersistentAddressPool.open(state.ipamFile, podCidr);
  const pool = addresses.pool;
  await ensureBridge(tools, config.bridge, pool.gateway, pool.prefix);
  log.info('pod network ready', { podCIDR: podCidr, bridge: config.bridge, gateway: pool.gateway });

  const kubeletVersion = (await api.serverVersion().catch(() => 'v1.34.0')).replace(/^v(\d+\.\d+).*$/, '$1');
  const ctx: NodeContext = {
    nodeName: config.nodeName,
    nodeIP: config.nodeIP,
    bridge: config.bridge,
    gateway: pool.gateway,
    podPrefix: pool.prefix,
    clusterDns: { servers: config.clusterDns, domain: config.clusterDomain },
    hostResolvConf: readText('/etc/resolv.conf'),
    hostHosts: readText('/etc/hosts'),
    nodeAllocatable: nodeResources(config.stateDir),
    tools,
    images: {
      nodePath: process.execPath,
      tpRoot: config.tpRoot,
      tpBins: tpBins(config.tpRoot),
      labBinDir: config.labBin,
    },
    state,
    addresses,
    createdPaths: new CreatedPaths(state.createdPathsFile),
    api,
    events: new EventRecorder(api, config.nodeName, log.child('events')),
    services: () => manager.services(),
    probeUserAgent: `kube-probe/${kubeletVersion}`,
    probeSourceIP: probeSource(config.nodeIP),
    log,
  };
  const manager = new PodManager(ctx, kubeConfig);
  shutdown = async () => {
    registration.stop();
    await manager.shutdown();
    await removeBridge(tools, config.bridge).catch((err) =>
      log.warn('removing the bridge failed', { error: err }),
    );
  };
  await manager.start();

  const server = await startKubeletServer({
    address: config.nodeIP,
    port: config.port,
    cert: fs.readFileSync(config.tlsCert),
    key: fs.readFileSync(config.tlsKey),
    clientCa: fs.readFileSync(config.clientCa),
    pods: manager,
    tools,
    log: log.child('api'),
  });
  const stopPods = shutdown;
  shutdown = async () => {
    server.close();
    server.closeAllConnections();
    await stopPods();
  };
  log.info('node agent ready', {
    node: config.nodeName,
    kubeletAPI: `${config.nodeIP}:${config.port}`,
    probeSource: ctx.probeSourceIP ?? pool.gateway,
  });
}

function main(): void {
  let config: NodeAgentConfig;
  try {
    config = parseNodeAgentFlags(process.argv.slice(2));
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'commander.helpDisplayed') process.exit(0);
    process.stderr.write(`tp-lab-node: ${(err as Error).message}\n`);
    process.exit(2);
  }
  setLevel(config.logLevel);
  if (config.logFile) logToFile(config.logFile);
  // A bug in one pod's handling must not take every pod down with the agent.
  process.on('unhandledRejection', (err) => log.error('unhandled rejection', { error: err }));
  process.on('uncaughtException', (err) => log.error('uncaught exception', { error: err, stack: err.stack }));
  run(config).catch((err) => {
    if (err instanceof UsageError) process.stderr.write(`tp-lab-node: ${err.message}\n`);
    log.error('the node agent cannot run', { error: err });
    process.exit(1);
  });
}

main();
