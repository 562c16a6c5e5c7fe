// Starts the traffic manager's gRPC server (used by main.ts and by tests that need a manager in-process).
import * as grpc from '@grpc/grpc-js';
import { createLogger } from '../logging/logger.js';
import { formatHostPort } from '../netaddr/parse.js';
import { managerServerOptions } from '../rpc/grpc-options.js';
import { ManagerServiceDefinition } from '../rpc/manager-service.js';
import { duplicate } from '../sys/descriptor.js';
import { listenForFlowsAndGrpc } from '../tunnel/flow-listener.js';
import { AccessControl } from './access-control.js';
import type { ClusterIntegration } from './cluster.js';
import { CredentialAuthority } from './credentials.js';
import { ManagerCore, managerService } from './service.js';
import type { SessionTtls } from './sessions.js';
import { AgentWorkloads } from './workloads.js';

export interface ManagerOptions extends SessionTtls {
  host: string;
  port: number;
  /** Kubernetes mode: the cluster's workloads, agent installation, cluster info and DNS (kube/). */
  cluster?: ClusterIntegration;
  /** Signs identity tokens (shared with the session API) and session credentials; default: a fresh key. */
  credentials?: CredentialAuthority;
  /** Replaces the access control the cluster integration implies (tests: enforcing without a cluster). */
  access?: AccessControl;
}

/**
 * How long a stopping manager (SIGTERM) lets the flows in progress finish by default (chart value
 * timeouts.drain): well within a pod's 30 s termination grace period.
 */
export const DEFAULT_DRAIN_MS = 10_000;

export interface RunningManager {
  port: number;
  core: ManagerCore;
  /**
   * Stops serving. With `drainMs` (SIGTERM, manager/main.ts): sessions are told to go and no new flow
   * starts, but the flows in progress may finish for up to `drainMs` before the rest are reset, so a
   * manager restart fails no request that was on its way. Without: every flow is reset at once.
   */
  stop(drainMs?: number): Promise<void>;
}

export async function startManager(options: ManagerOptions): Promise<RunningManager> {
  const log = createLogger('manager');
  const cluster = options.cluster;
  // Standalone mode has no Kubernetes to authenticate anyone with: access control is off.
  const access =
    options.access ??
    new AccessControl({
      mode: cluster?.access.mode ?? 'off',
      credentials: options.credentials ?? new CredentialAuthority(),
      log: log.child('access'),
      authorizer: cluster?.access.authorizer,
      agents: cluster?.access.agents,
      reachable: cluster ? () => cluster.access.reachable() : undefined,
    });
  const core = new ManagerCore(options, cluster?.workloads ?? new AgentWorkloads(), log, cluster, access);
  const server = new grpc.Server(managerServerOptions());
  server.addService(ManagerServiceDefinition, managerService(core));
  // The port takes the gRPC API and flow connections (the root daemon's TCP flows, without HTTP/2).
  const listener = await listenForFlowsAndGrpc({
    server,
    host: options.host,
    port: options.port,
    log,
    // Flow connections (the root daemon's, through a port-forward or directly) read large messages
    // straight into their memory (tunnel/README.md).
    duplicate,
    onFlowConnection: (socket, peer) => core.router.handleFlowConnection(socket, peer),
  }).catch((e: Error) => {
    core.stop();
    throw e;
  });
  const port = listener.port;
  log.info('traffic manager listening', {
    address: formatHostPort(options.host, port),
    mode: options.cluster ? 'kubernetes' : 'standalone',
    security: access.mode,
  });
  return {
    port,
    core,
    stop: (drainMs = 0) =>
      new Promise<void>((resolve) => {
        let stopped = false;
        const finish = () => {
          if (stopped) return;
          stopped = true;
          clearTimeout(timer);
          core.stop();
          listener.close();
          server.forceShutdown();
          resolve();
        };
        if (drainMs > 0) {
          log.info('draining: new flows are refused, those in progress may finish', {
            flows: core.router.openStreams,
            forMs: drainMs,
          });
          core.drain();
        } else core.stop();
        // New connections are refused at once (clients look for the next manager), as new calls are.
        listener.stopListening();
        const timer = setTimeout(finish, Math.max(drainMs, 2000));
        // Refuses new calls; calls back once every call in progress has ended. The flows on flow
        // connections are no calls: the router says when they have ended.
        let waiting = 2;
        const ended = () => {
          if (--waiting === 0) finish();
        };
        server.tryShutdown(ended);
        void core.router.flowConnectionsSettled().then(ended);
      }),
  };
}
