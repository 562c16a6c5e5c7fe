// One connected session of the root daemon: the VIF, the routes of the cluster's subnets, tp's DNS server
// and the system resolver pointing at it, all for one client session of the traffic manager.
//
// Bringing it up validates everything that can be wrong first (CIDRs, conflicts, the manager's address)
// and then takes each step with its undo; a failing step undoes the ones before, so a refused connect
// leaves no TUN, no route and the resolver as it was.
import * as dns from 'node:dns/promises';
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { clusterNameFor } from '../../dns/cluster-names.js';
import { parseResolvConf } from '../../dns/resolv-conf.js';
import { DnsResolver } from '../../dns/resolver.js';
import {
  configureSystemResolver,
  type DnsMode,
  type ResolverTarget,
  type SystemResolverConfig,
} from '../../dns/system-resolver.js';
import { importClusterAccess } from '../../kube/cluster-access.js';
import {
  type ApiAccess,
  forwardingListener,
  type ManagerForward,
  managerTarget,
  PodStreams,
} from '../../kube/port-forward.js';
import type { Logger } from '../../logging/logger.js';
import { type Cidr, formatHostPort, parseCidr, parseHostPort, UsageError } from '../../netaddr/parse.js';
import { bearerInterceptor } from '../../rpc/call-credentials.js';
import type { DaemonStatus } from '../../rpc/gen/connector.js';
import type { ConnectRequest } from '../../rpc/gen/daemon.js';
import { type ClusterInfo, ManagerClient } from '../../rpc/gen/manager.js';
import { workstationChannelOptions } from '../../rpc/grpc-options.js';
import { errorDetails, hasStatus, unary } from '../../rpc/unary-call.js';
import { type FlowConnectionPool, tcpFlowPool } from '../../tunnel/flow-pool.js';
import { FLOW_MAGIC, FlowWindowGroup } from '../../tunnel/framed-call.js';
import { VERSION } from '../../version/version.js';
import type { IpCommands } from '../../vif/ip-command.js';
import { type ProxiedSubnet, planRoutes, type RoutePlan, RouteTable, readRoutes } from '../../vif/routes.js';
import {
  chooseLinkSubnet,
  LINK_SUBNET_CANDIDATES_V4,
  LINK_SUBNET_CANDIDATES_V6,
  VirtualInterface,
} from '../../vif/vif.js';
import { TunnelFlowDialer } from './tunnel-dialer.js';

export interface DaemonSettings {
  vifName: string;
  mtu: number;
  /** Established TCP flows' packets rewritten in the kernel when it can (vif/kernel-nat.ts). */
  kernelNat: boolean;
  stateDir: string;
  resolvConfPath: string;
  dnsMode: DnsMode;
  /** Port of tp's DNS server (53: resolv.conf cannot name another). */
  dnsPort: number;
  run: IpCommands;
  log: Logger;
}

interface ValidatedRequest {
  managerHost: string;
  managerIp: string;
  managerPort: number;
  /** The client session and its credential: they change when the user daemon arrives again (follow()). */
  sessionId: string;
  credential: string;
  namespace: string;
  alsoProxy: Cidr[];
  neverProxy: Cidr[];
  allowConflicts: boolean;
  /** Addresses that keep their path (the API server a port-forward to the manager goes through). */
  keepOut: string[];
  /** The user's access to the cluster: TCP flows go on this daemon's own port-forward to the manager. */
  access: { api: ApiAccess; text: string; managerNamespace: string } | undefined;
}

const CLUSTER_DOMAIN_DEFAULT = 'cluster.local';
const LOOKUP_DNS_TIMEOUT_MS = 4_000;
/**
 * How long a cluster DNS query waits for a manager that cannot answer (restarting: UNAVAILABLE; restarted,
 * the session not back yet: NOT_FOUND) before the resolver gives an expired answer or SERVFAIL. Below a
 * stub resolver's 5 s timeout, so the client does not ask again meanwhile.
 */
const DNS_MANAGER_WAIT_MS = 3_000;
const WATCH_RETRY_MS = 2_000;

function parseList(values: string[], what: string): Cidr[] {
  return values.filter((v) => v.trim() !== '').map((v) => parseCidr(v, what));
}

/** Whether two lists hold the same strings in the same order. */
function sameList(x: string[], y: string[]): boolean {
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/**
 * Whether two cluster infos route and resolve alike: the same subnets, DNS domain, DNS servers and
 * namespaces. A standalone manager's empty subnets keep the ones Connect gave, so they count as the same.
 */
function sameNetworks(a: ClusterInfo, b: ClusterInfo): boolean {
  const keepsSubnets = b.podSubnets.length === 0 && b.serviceSubnets.length === 0;
  return (
    (keepsSubnets ||
      (sameList(a.podSubnets, b.podSubnets) && sameList(a.serviceSubnets, b.serviceSubnets))) &&
    a.clusterDomain === b.clusterDomain &&
    sameList(a.dnsIps, b.dnsIps) &&
    sameList(a.managedNamespaces, b.managedNamespaces)
  );
}

function clusterSubnets(info: ClusterInfo | undefined): ProxiedSubnet[] {
  if (!info) return [];
  return [
    ...info.podSubnets.map((s) => ({
      cidr: parseCidr(s, 'pod subnet reported by the traffic manager'),
      source: 'pod subnet',
    })),
    ...info.serviceSubnets.map((s) => ({
      cidr: parseCidr(s, 'service subnet reported by the traffic manager'),
      source: 'service subnet',
    })),
  ];
}

async function validate(req: ConnectRequest): Promise<ValidatedRequest> {
  if (!req.sessionId)
    throw new UsageError('Connect needs the session id of the client session with the traffic manager');
  const { host, port } = parseHostPort(req.managerAddress, 'traffic manager address');
  let managerIp = host;
  if (!net.isIP(host)) {
    try {
      managerIp = (await dns.lookup(host)).address;
    } catch (e) {
      throw new UsageError(`cannot resolve the traffic manager's host ${host}: ${(e as Error).message}`);
    }
  }
  return {
    managerHost: host,
    managerIp,
    managerPort: port,
    sessionId: req.sessionId,
    credential: req.sessionCredential,
    namespace: req.namespace || 'default',
    alsoProxy: parseList(req.alsoProxy, '--also-proxy CIDR'),
    neverProxy: parseList(req.neverProxy, '--never-proxy CIDR'),
    allowConflicts: req.allowConflictingSubnets,
    keepOut: req.keepOut.map((ip) => {
      if (!net.isIP(ip))
        throw new UsageError(
          `keep-out address "${ip}" is not an IP address (the user daemon resolves names)`,
        );
      return ip;
    }),
    access: validAccess(req),
  };
}

function validAccess(req: ConnectRequest): ValidatedRequest['access'] {
  const access = req.clusterAccess;
  if (!access?.kubeconfig) return undefined;
  if (!access.managerNamespace)
    throw new UsageError("Connect's cluster access names no traffic manager namespace");
  try {
    return {
      api: importClusterAccess(access.kubeconfig),
      text: access.kubeconfig,
      managerNamespace: access.managerNamespace,
    };
  } catch (e) {
    throw new UsageError(`Connect's cluster access cannot be used: ${(e as Error).message}`);
  }
}

/**
 * Where the VIF's TCP flows go: with the user's access, streams of this daemon's own port-forward to the
 * manager's pod (looked up again when the manager restarts; no user daemon in the path); else TCP
 * connections to the manager's address (the user daemon's forward, or --manager-address).
 */
interface FlowWay {
  pool: FlowConnectionPool<Duplex>;
  /** New credentials for the port-forwards still to open. */
  renew(access: ValidatedRequest['access']): void;
  close(): Promise<void>;
  /** For the status. */
  description: string;
  /**
   * With the user's access: a loopback listener (HOST:PORT) whose connections go to the manager's gRPC port
   * on this daemon's own port-forward, for the gRPC channel (chooseManagerClient()).
   */
  grpcAddress?: string;
  /** Closes that listener (the channel did not come up on it). */
  dropGrpc(): Promise<void>;
}

async function flowWay(req: ValidatedRequest, log: Logger): Promise<FlowWay> {
  const access = req.access;
  // The VIF's TCP flows share one way to the manager: their windows (tunnel/framed-call.ts).
  const windows = new FlowWindowGroup();
  if (!access) {
    const pool = tcpFlowPool(req.managerIp, req.managerPort, log, windows);
    return {
      pool,
      renew: () => {},
      close: async () => pool.close(),
      description: `TCP flows on connections to ${req.managerHost}:${req.managerPort}`,
      dropGrpc: async () => {},
    };
  }
  // The manager's pod is looked up with the credential of the moment (renew() replaces it), once for both.
  const target = managerTarget(() => streams.kc, access.managerNamespace);
  const streams: PodStreams = new PodStreams(
    access.api,
    log,
    access.managerNamespace,
    target,
    FLOW_MAGIC,
    windows,
  );
  let grpcForward: ManagerForward;
  try {
    grpcForward = await forwardingListener(
      () => streams.kc,
      log,
      access.managerNamespace,
      'the traffic manager',
      {
        target: () => target.resolve(),
        failed: () => target.failed(),
      },
    );
  } catch (e) {
    streams.close();
    throw e;
  }
  return {
    pool: streams.pool,
    renew: (next) => {
      if (next) streams.kc = next.api;
    },
    close: async () => {
      streams.close();
      await grpcForward.close();
    },
    description: `TCP flows on its own port-forward to the traffic manager in namespace ${access.managerNamespace}`,
    grpcAddress: grpcForward.address,
    dropGrpc: () => grpcForward.close(),
  };
}

/** How long the gRPC channel on the root daemon's own port-forward may take to come up at connect. */
const OWN_CHANNEL_WAIT_MS = 10_000;

/**
 * The gRPC client to the manager (UDP flows, DNS lookups, the cluster info watch, Tunnel calls): on this
 * daemon's own port-forward when it has the user's access and that channel comes up, so none of them
 * depends on the user daemon (its death leaves names resolving while a new one takes over); else, or when
 * that channel fails at connect, at the manager's address of the Connect (the user daemon's forward, or
 * --manager-address).
 */
async function chooseManagerClient(
  flows: FlowWay,
  req: ValidatedRequest,
  log: Logger,
): Promise<{ client: ManagerClient; own: boolean }> {
  const address = formatHostPort(req.managerIp, req.managerPort);
  if (flows.grpcAddress) {
    const own = managerClient(flows.grpcAddress, req);
    const failure = await channelFailure(own, OWN_CHANNEL_WAIT_MS);
    if (!failure) return { client: own, own: true };
    own.close();
    await flows.dropGrpc();
    log.warn(
      "the gRPC channel on this daemon's own port-forward does not come up: it goes to the manager's address",
      { error: failure, address },
    );
  }
  return { client: managerClient(address, req), own: false };
}

/** Resolves once the channel is ready (undefined) or what kept it from being so: a failure, or `ms` passed. */
function channelFailure(client: ManagerClient, ms: number): Promise<string | undefined> {
  const channel = client.getChannel();
  const deadline = Date.now() + ms;
  return new Promise((resolve) => {
    const check = () => {
      const state = channel.getConnectivityState(true);
      if (state === grpc.connectivityState.READY) return resolve(undefined);
      if (state === grpc.connectivityState.TRANSIENT_FAILURE) return resolve('the connection failed');
      if (state === grpc.connectivityState.SHUTDOWN) return resolve('the channel was closed');
      channel.watchConnectivityState(state, deadline, (err) =>
        err ? resolve(`not ready within ${ms / 1000} s`) : check(),
      );
    };
    check();
  });
}

/**
 * The gRPC client to the manager at `address` (HOST:PORT). Every call (tunnel streams, LookupDNS, the
 * cluster info watch) carries the session's credential; `session` holds the current one (follow() changes it).
 */
function managerClient(address: string, session: Pick<ValidatedRequest, 'credential'>): ManagerClient {
  return new ManagerClient(address, grpc.credentials.createInsecure(), {
    ...workstationChannelOptions(),
    interceptors: [bearerInterceptor(() => session.credential)],
  });
}

/** Whether a manager address (HOST:PORT) names a loopback host. */
function onLoopback(address: string): boolean {
  let host: string;
  try {
    host = parseHostPort(address).host;
  } catch {
    return false;
  }
  return host.startsWith('127.') || host === '::1' || host === 'localhost';
}

/** The nameservers of a resolv.conf (they must keep their path, whatever the cluster's subnets are). */
function currentNameservers(file: string): string[] {
  try {
    return parseResolvConf(fs.readFileSync(file, 'utf8')).nameservers;
  } catch {
    return [];
  }
}

export class ConnectedSession {
  private cluster: ClusterInfo | undefined;
  private health = 'connected';
  private watchCall: grpc.ClientReadableStream<ClusterInfo> | undefined;
  private watchTimer: NodeJS.Timeout | undefined;
  private stopped = false;

  private constructor(
    private readonly settings: DaemonSettings,
    private readonly req: ValidatedRequest,
    private client: ManagerClient,
    /** The client is on this daemon's own port-forward (chooseManagerClient()). */
    private readonly ownChannel: boolean,
    private readonly flows: FlowWay,
    private readonly dialer: TunnelFlowDialer,
    private readonly vif: VirtualInterface,
    private readonly routes: RouteTable,
    private readonly resolver: DnsResolver,
    private readonly system: SystemResolverConfig,
    /** The Connect this session answers (follow() replaces it). */
    private origin: ConnectRequest,
  ) {
    this.cluster = origin.cluster;
  }

  /**
   * Whether `request` asks for this very VIF under another session of the same user daemon: it arrived
   * at the manager again (a resume gives a new session id). Then follow() keeps the VIF, its routes, the
   * DNS configuration and the connections in progress, instead of a teardown and a new VIF.
   */
  follows(request: ConnectRequest): boolean {
    const a = this.origin;
    // A new user daemon (connect() refuses one while the owner lives: this one died) and its forward's new
    // address are followed too when the TCP flows go on this daemon's own port-forward, which neither
    // daemon carries, and both addresses are on loopback (neither routed nor kept out of the VIF).
    const sameDaemon = a.managerAddress === request.managerAddress && a.ownerPid === request.ownerPid;
    const takenOver =
      !!a.clusterAccess?.kubeconfig &&
      !!request.clusterAccess?.kubeconfig &&
      onLoopback(a.managerAddress) &&
      onLoopback(request.managerAddress);
    return (
      (sameDaemon || takenOver) &&
      a.namespace === request.namespace &&
      a.allowConflictingSubnets === request.allowConflictingSubnets &&
      sameList(a.alsoProxy, request.alsoProxy) &&
      sameList(a.neverProxy, request.neverProxy) &&
      sameList(a.keepOut, request.keepOut) &&
      // The same way to the manager (its own port-forward or not); a renewed credential is followed.
      (a.clusterAccess?.managerNamespace ?? '') === (request.clusterAccess?.managerNamespace ?? '') &&
      !a.clusterAccess?.kubeconfig === !request.clusterAccess?.kubeconfig
    );
  }

  /**
   * Carries on under the request's session (its flows, DNS lookups and cluster info watch) and with its
   * cluster access (renewed: the port-forwards still to open take it).
   */
  async follow(request: ConnectRequest): Promise<void> {
    if (!request.sessionId)
      throw new UsageError('Connect needs the session id of the client session with the traffic manager');
    const access = validAccess(request);
    const moved = request.managerAddress !== this.origin.managerAddress;
    const next = moved ? await validate(request) : undefined;
    if (request.ownerPid !== this.origin.ownerPid)
      this.settings.log.info('a new user daemon took the VIF over: the VIF stays', {
        pid: request.ownerPid,
        was: this.origin.ownerPid,
      });
    this.origin = request;
    if (next) {
      Object.assign(this.req, {
        managerHost: next.managerHost,
        managerIp: next.managerIp,
        managerPort: next.managerPort,
      });
      if (this.ownChannel)
        this.settings.log.info(
          "the traffic manager's address changed: the gRPC channel stays on this daemon's own port-forward",
          { address: request.managerAddress },
        );
      else {
        // The gRPC channel (UDP flows, DNS lookups, the cluster info watch) goes to the new daemon's forward.
        const old = this.client;
        this.client = managerClient(formatHostPort(next.managerIp, next.managerPort), this.req);
        this.dialer.replaceClient(this.client);
        old.close();
        this.settings.log.info("the traffic manager's address changed", { address: request.managerAddress });
      }
    }
    if (access && this.req.access && access.text !== this.req.access.text) {
      this.settings.log.info('the cluster credential was renewed');
      this.flows.renew(access);
      this.req.access = access;
    }
    if (request.sessionId !== this.req.sessionId || next) {
      if (request.sessionId !== this.req.sessionId)
        this.settings.log.info('following a new session: the VIF stays', {
          session: request.sessionId,
          was: this.req.sessionId,
        });
      this.req.sessionId = request.sessionId;
      this.req.credential = request.sessionCredential;
      // Arrived again: the flows waiting for the manager (their SYN held) need not finish their pause.
      this.dialer.tryAgainNow();
      clearTimeout(this.watchTimer);
      const watch = this.watchCall;
      this.watchCall = undefined;
      watch?.cancel();
      this.watchClusterInfo();
    }
    if (request.cluster) await this.applyClusterInfo(request.cluster);
  }

  /** Brings the session up, or throws with everything undone. */
  static async start(settings: DaemonSettings, request: ConnectRequest): Promise<ConnectedSession> {
    const { run, log } = settings;
    const req = await validate(request);
    const subnets = clusterSubnets(request.cluster);
    const existing = await readRoutes(run);
    const keepOut = [req.managerIp, ...req.keepOut, ...currentNameservers(settings.resolvConfPath)].filter(
      (ip) => !ip.startsWith('127.') && ip !== '::1',
    );
    // Planning checks the subnets against the namespace's routes before anything is touched.
    const plan = planRoutes({
      vifName: settings.vifName,
      clusterSubnets: subnets,
      alsoProxy: req.alsoProxy,
      neverProxy: req.neverProxy,
      keepOut,
      existing,
      allowConflicts: req.allowConflicts,
    });
    for (const c of plan.conflicts)
      log.warn('routing a conflicting subnet (--allow-conflicting-subnets)', { conflict: c });
    const wanted = [...plan.routes, ...subnets.map((s) => s.cidr)];
    const link4 = chooseLinkSubnet(LINK_SUBNET_CANDIDATES_V4, existing, wanted, settings.vifName);
    if (!link4)
      throw new UsageError(
        `every candidate subnet for the VIF's own address (${LINK_SUBNET_CANDIDATES_V4.join(', ')}) is in use in this network namespace`,
      );
    const link6 = wanted.some((c) => c.family === 6)
      ? chooseLinkSubnet(LINK_SUBNET_CANDIDATES_V6, existing, wanted, settings.vifName)
      : undefined;

    const undo: Array<() => Promise<void> | void> = [];
    try {
      // TCP flows on connections of their own to the manager's port, while it says it takes them.
      const flows = await flowWay(req, log.child('tunnel'));
      undo.push(() => flows.close());
      const { client, own } = await chooseManagerClient(flows, req, log);
      undo.push(() => client.close());
      log.info("the VIF's connections to the cluster", {
        way: flows.description,
        grpc: own ? "on this daemon's own port-forward" : formatHostPort(req.managerIp, req.managerPort),
      });
      let session: ConnectedSession | undefined;
      const dialer = new TunnelFlowDialer({
        client,
        sessionId: () => req.sessionId,
        log: log.child('tunnel'),
        flowConnections: {
          pool: flows.pool,
          enabled: () => (session?.cluster ?? request.cluster)?.flowConnections === true,
          windows: () => (session?.cluster ?? request.cluster)?.flowWindows === true,
          credential: () => req.credential,
        },
      });
      const vif = await VirtualInterface.create({
        name: settings.vifName,
        mtu: settings.mtu,
        kernelNat: settings.kernelNat,
        link4,
        link6,
        dialer,
        run,
        log: log.child('vif'),
      });
      undo.push(() => vif.close());
      const routes = new RouteTable(run, vif.name, { 4: vif.address4, 6: vif.address6 });
      undo.push(() => routes.removeAll());
      await routes.apply(plan);

      const resolver = new DnsResolver({
        listen: [{ address: vif.address4, port: settings.dnsPort }],
        // Until the session exists (a query may come in between), answer for the connected namespace.
        scope: () =>
          session?.dnsScope() ?? {
            clusterDomain: request.cluster?.clusterDomain || CLUSTER_DOMAIN_DEFAULT,
            namespace: req.namespace,
            namespaces: [req.namespace],
            subnets: plan.routes,
          },
        cluster: {
          lookup: async (fqdn, qtype) => {
            const until = Date.now() + DNS_MANAGER_WAIT_MS;
            for (let pause = 100; ; pause = Math.min(pause * 2, 500)) {
              try {
                return await unary<{ rcode: number; ips: string[]; ttlSeconds: number; raw: Buffer }>(
                  (md, opts, cb) =>
                    (session?.client ?? client).lookupDns(
                      { session: { sessionId: req.sessionId, remainIntervalMs: 0 }, name: fqdn, qtype },
                      md,
                      opts,
                      cb,
                    ),
                  LOOKUP_DNS_TIMEOUT_MS,
                );
              } catch (e) {
                const unavailable =
                  hasStatus(e, grpc.status.UNAVAILABLE) || hasStatus(e, grpc.status.NOT_FOUND);
                if (!unavailable || Date.now() + pause > until) throw e;
                await new Promise((r) => setTimeout(r, pause));
              }
            }
          },
        },
        upstream: () => session?.system.upstream ?? [],
        log: log.child('dns'),
      });
      await resolver.start();
      undo.push(() => resolver.stop());
      const system = await configureSystemResolver(
        { mode: settings.dnsMode, resolvConfPath: settings.resolvConfPath, stateDir: settings.stateDir, log },
        resolverTarget(vif.name, vif.address4, req.namespace, request.cluster),
      );
      session = new ConnectedSession(
        settings,
        req,
        client,
        own,
        flows,
        dialer,
        vif,
        routes,
        resolver,
        system,
        request,
      );
      session.watchClusterInfo();
      log.info('connected', {
        vif: vif.name,
        address: vif.address4,
        routes: plan.routes.map((c) => c.text).join(','),
        throws: plan.throws.map((c) => c.text).join(','),
        dns: system.description,
      });
      return session;
    } catch (e) {
      for (const step of undo.reverse()) {
        try {
          await step();
        } catch (u) {
          log.warn('undoing a connect step failed', { error: (u as Error).message });
        }
      }
      throw e;
    }
  }

  private dnsScope() {
    const clusterDomain = this.cluster?.clusterDomain || CLUSTER_DOMAIN_DEFAULT;
    const namespaces = [...new Set([this.req.namespace, ...(this.cluster?.managedNamespaces ?? [])])];
    return { clusterDomain, namespace: this.req.namespace, namespaces, subnets: this.routes.current.routes };
  }

  /** Follows the manager's cluster info: new subnets are routed, gone ones unrouted, namespaces updated. */
  private watchClusterInfo(): void {
    if (this.stopped) return;
    const call = this.client.watchClusterInfo({ sessionId: this.req.sessionId, remainIntervalMs: 0 });
    this.watchCall = call;
    call.on('data', (info: ClusterInfo) => {
      void this.applyClusterInfo(info).catch((e: Error) => {
        this.health = `the cluster's new subnets were not routed: ${e.message}`;
        this.settings.log.error('cluster info update failed', { error: e.message });
      });
    });
    const again = (e?: Error) => {
      if (this.stopped || this.watchCall !== call) return;
      this.watchCall = undefined;
      if (e && (e as grpc.ServiceError).code === grpc.status.UNIMPLEMENTED) return;
      this.watchTimer = setTimeout(() => this.watchClusterInfo(), WATCH_RETRY_MS);
      this.watchTimer.unref();
    };
    call.on('error', (e) => {
      this.settings.log.debug('cluster info watch ended', { error: errorDetails(e) });
      again(e);
    });
    call.on('end', () => again());
  }

  private async applyClusterInfo(info: ClusterInfo): Promise<void> {
    // The watch says it all again whenever it starts (every new session, every retry): when nothing the
    // routes and the DNS depend on changed, the cached answers stay (serve-stale needs them through an
    // outage) and nothing is reapplied.
    if (this.cluster && sameNetworks(this.cluster, info)) {
      this.cluster = {
        ...this.cluster,
        flowConnections: info.flowConnections,
        flowWindows: info.flowWindows,
        managerPodIp: info.managerPodIp,
      };
      return;
    }
    // A manager that knows no subnets (standalone mode) does not take away the ones Connect gave.
    if (info.podSubnets.length === 0 && info.serviceSubnets.length === 0) {
      this.cluster = {
        ...info,
        podSubnets: this.cluster?.podSubnets ?? [],
        serviceSubnets: this.cluster?.serviceSubnets ?? [],
      };
      this.resolver.flush();
      return;
    }
    const existing = await readRoutes(this.settings.run);
    const plan = planRoutes({
      vifName: this.vif.name,
      clusterSubnets: clusterSubnets(info),
      alsoProxy: this.req.alsoProxy,
      neverProxy: this.req.neverProxy,
      keepOut: [
        this.req.managerIp,
        ...this.req.keepOut,
        ...this.system.upstream.map((u) => u.address),
      ].filter((ip) => !ip.startsWith('127.') && ip !== '::1'),
      existing,
      allowConflicts: this.req.allowConflicts,
    });
    await this.routes.apply(plan);
    this.cluster = info;
    this.resolver.flush();
    await this.system.update(resolverTarget(this.vif.name, this.vif.address4, this.req.namespace, info));
    this.health = 'connected';
    this.settings.log.info('cluster subnets updated', { routes: plan.routes.map((c) => c.text).join(',') });
  }

  /** Whether a name would be answered from the cluster (for status and tests). */
  isClusterName(name: string): boolean {
    return clusterNameFor(name, this.dnsScope()) !== undefined;
  }

  status(): DaemonStatus {
    const state = this.client.getChannel().getConnectivityState(false);
    const s = this.vif.stats();
    const managerOk =
      state !== grpc.connectivityState.TRANSIENT_FAILURE && state !== grpc.connectivityState.SHUTDOWN;
    const health =
      this.vif.failure ??
      (managerOk
        ? this.health
        : this.ownChannel
          ? "the traffic manager is unreachable through this daemon's own port-forward"
          : `the traffic manager at ${this.req.managerHost}:${this.req.managerPort} is unreachable`);
    const plan: RoutePlan = this.routes.current;
    const k = s.kernelNat;
    const kernelNat = {
      attached: k !== undefined,
      offReason: s.kernelNatOff ?? '',
      packets: k?.packets ?? 0,
      bytes: k?.bytes ?? 0,
      flows: k?.flows ?? 0,
      leftToWorker: (k?.full ?? 0) + (k?.failed ?? 0),
    };
    return {
      running: true,
      version: VERSION,
      vifName: this.vif.name,
      subnets: plan.routes.map((c) => c.text),
      dns: this.system.description,
      message:
        `${health}; ${s.tcpConnections} TCP and ${s.udpFlowsOpen} UDP flows open (${this.flows.description}` +
        `${this.ownChannel ? ', gRPC calls on it too' : ''}); ` +
        `DNS ${this.resolver.stats.clusterQueries} cluster / ${this.resolver.stats.forwarded} forwarded queries; ` +
        (kernelNat.attached
          ? `kernel NAT: ${kernelNat.packets} packets rewritten in the kernel` +
            (kernelNat.leftToWorker
              ? ` (${kernelNat.leftToWorker} flows left to the packet worker: ${k?.lastError ?? 'its map was full'})`
              : '')
          : `kernel NAT off (${kernelNat.offReason || 'starting'})`) +
        (plan.throws.length ? `; never proxied: ${plan.throws.map((c) => c.text).join(', ')}` : '') +
        (plan.conflicts.length ? `; conflicts allowed: ${plan.conflicts.join('; ')}` : ''),
      kernelNat,
    };
  }

  /** Undoes everything, in reverse: resolver config, DNS server, routes, VIF, manager channel. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.watchTimer);
    this.watchCall?.cancel();
    const steps: Array<[string, () => Promise<void> | void]> = [
      // Flows waiting for an unavailable manager give up (the VIF resets them as it goes).
      ['end the waits for the manager', () => this.dialer.close()],
      ['restore the system resolver', () => this.system.restore()],
      ['stop the DNS server', () => this.resolver.stop()],
      ['remove the routes', () => this.routes.removeAll()],
      ['remove the VIF', () => this.vif.close()],
      ['close the manager channel', () => this.client.close()],
      ['close the flow connections', () => this.flows.close()],
    ];
    for (const [what, step] of steps) {
      try {
        await step();
      } catch (e) {
        this.settings.log.error(`disconnect: cannot ${what}`, { error: (e as Error).message });
      }
    }
    this.settings.log.info('disconnected', { vif: this.vif.name });
  }
}

function resolverTarget(
  vifName: string,
  address: string,
  namespace: string,
  cluster: ClusterInfo | undefined,
): ResolverTarget {
  const domain = cluster?.clusterDomain || CLUSTER_DOMAIN_DEFAULT;
  const namespaces = [...new Set([namespace, ...(cluster?.managedNamespaces ?? [])])];
  return {
    vifName,
    dnsAddress: address,
    routingDomains: [domain, 'svc', ...namespaces],
    searchDomain: `${namespace}.svc.${domain}`,
  };
}
