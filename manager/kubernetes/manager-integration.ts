// The traffic manager's Kubernetes side, assembled: the workload source (informers), the agent
// installer, the webhook server, cluster network info and cluster DNS, behind the small surface the
// manager's core uses (its WorkloadSource, plus EnsureAgent, UninstallAgents, ClusterInfo, LookupDNS).
// tp-manager's in-cluster mode calls startKubeIntegration and hands the result to its core.
import * as fs from 'node:fs';
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { isMechanism, type Mechanism, sessionApiGroup } from '../../kube/annotations.js';
import { apiErrorMessage } from '../../kube/kubeconfig.js';
import type { Workload } from '../../kube/workload-state.js';
import type { Logger } from '../../logging/logger.js';
import { type Cidr, parseCidr } from '../../netaddr/parse.js';
import type { AgentInfo, AgentPort } from '../../rpc/gen/manager.js';
import type { ClusterIntegration } from '../cluster.js';
import type { CredentialAuthority } from '../credentials.js';
import { InterceptError } from '../intercepts.js';
import type { Workload as ManagerWorkload, WorkloadSource } from '../workloads.js';
import { AgentTokenReviewer, SubjectAccessReviewer } from './access-review.js';
import { AgentInstallError, AgentInstaller, agentsReady, describeWaiting } from './agent-installer.js';
import { ClusterInfoSource } from './cluster-info.js';
import type { KubeManagerConfig } from './manager-config.js';
import { handleSessionApi, parseRequestHeaderConfig, type RequestHeaderConfig } from './session-api.js';
import { startWebhookServer, type WebhookServer } from './webhook-server.js';
import { KubeWorkloadSource } from './workload-source.js';

/** The manager's view of one workload: the cluster's facts merged with the agents that arrived. */
export function toManagerWorkload(w: Workload, agents: AgentInfo[]): ManagerWorkload {
  const arrived = new Set(agents.map((a) => a.podName));
  let agentState = w.agentState;
  let agentMessage = w.agentMessage;
  if (w.agentState === 'INSTALLED') {
    const { ready, waitingFor, oldPods } = agentsReady(w, arrived);
    if (!ready) {
      agentState = 'INSTALLING';
      agentMessage = describeWaiting(waitingFor, oldPods);
    }
  }
  // The agent port each app port is redirected to, as the webhook recorded it on the pods.
  const agentPorts = new Map<number, number>();
  for (const p of w.pods) {
    for (const m of p.capturedPorts.split(',')) {
      const [app, agent] = m.split(':').map(Number);
      if (app && agent) agentPorts.set(app, agent);
    }
  }
  const ports: AgentPort[] = w.ports.map((p) => ({
    name: p.name,
    appPort: p.port,
    agentPort: agentPorts.get(p.port) ?? 0,
    protocol: p.protocol,
    servicePorts: p.servicePorts,
  }));
  return {
    name: w.name,
    namespace: w.namespace,
    kind: w.kind,
    agentState,
    agentMessage,
    ports,
    agents: [...agents].sort((a, b) => a.podName.localeCompare(b.podName)),
    replicas: w.replicas,
    readyReplicas: w.readyReplicas,
    mechanism: w.agentRequested || w.pods.some((p) => p.hasAgent) ? w.mechanism : '',
  };
}

/** Kubernetes-backed workloads for the manager core; agents are added and removed as sessions come and go. */
export class KubeManagerWorkloads implements WorkloadSource {
  private readonly agentsBySession = new Map<string, AgentInfo>();

  constructor(
    private readonly source: KubeWorkloadSource,
    private readonly installer: AgentInstaller,
  ) {}

  addAgent(sessionId: string, info: AgentInfo): void {
    this.agentsBySession.set(sessionId, info);
  }

  removeAgent(sessionId: string): AgentInfo | undefined {
    const info = this.agentsBySession.get(sessionId);
    this.agentsBySession.delete(sessionId);
    return info;
  }

  agentsOf(namespace: string, name: string): AgentInfo[] {
    return [...this.agentsBySession.values()].filter((a) => a.namespace === namespace && a.name === name);
  }

  arrivedPods(namespace: string, name: string): Set<string> {
    return new Set(this.agentsOf(namespace, name).map((a) => a.podName));
  }

  list(namespace: string): ManagerWorkload[] {
    return this.source
      .list(namespace || undefined)
      .map((w) => toManagerWorkload(w, this.agentsOf(w.namespace, w.name)));
  }

  get(name: string, namespace: string): ManagerWorkload | undefined {
    const w = this.source.get(namespace, name);
    return w ? toManagerWorkload(w, this.agentsOf(namespace, name)) : undefined;
  }

  subscribe(listener: () => void): () => void {
    return this.source.onChange(listener);
  }

  describeMissing(name: string, namespace: string): string {
    return this.installer.describeMissing(name, namespace);
  }
}

export interface KubeIntegration extends ClusterIntegration {
  workloads: KubeManagerWorkloads;
}

/** The manager answers refusals it knows with InterceptError; the message is what the user reads. */
function asInterceptError(err: unknown): unknown {
  if (!(err instanceof AgentInstallError)) return err;
  return new InterceptError(err.code === 'not-found' ? 'not-found' : 'invalid-argument', err.message);
}

/** How often the manager re-reads the aggregation layer's trust (the front proxy's CA and names). */
const REQUESTHEADER_REFRESH_MS = 60_000;

/**
 * The aggregation layer's request-header trust, from ConfigMap kube-system/extension-apiserver-authentication
 * (the chart binds the manager to the Role extension-apiserver-authentication-reader), re-read every minute.
 */
class RequestHeaderTrust {
  current: RequestHeaderConfig | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastError = '';

  constructor(
    private readonly kc: KubeConfig,
    private readonly log: Logger,
    private readonly onChange: () => void,
  ) {}

  async start(): Promise<void> {
    await this.read();
    this.timer = setInterval(() => void this.read(), REQUESTHEADER_REFRESH_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async read(): Promise<void> {
    try {
      const cm = await this.kc
        .makeApiClient(CoreV1Api)
        .readNamespacedConfigMap({ name: 'extension-apiserver-authentication', namespace: 'kube-system' });
      const next = parseRequestHeaderConfig(cm.data);
      if (!next && this.lastError !== 'none')
        this.log.warn(
          'the API server publishes no requestheader CA: it is not set up for API aggregation (--requestheader-client-ca-file), so workstations cannot get session tokens',
        );
      this.lastError = next ? '' : 'none';
      if (JSON.stringify(next) !== JSON.stringify(this.current)) {
        this.current = next;
        this.onChange();
      }
    } catch (err) {
      const message = apiErrorMessage(err);
      if (message !== this.lastError)
        this.log.warn(
          'cannot read kube-system/extension-apiserver-authentication: workstations cannot get session tokens',
          {
            error: message,
          },
        );
      this.lastError = message;
    }
  }
}

export async function startKubeIntegration(
  kc: KubeConfig,
  config: KubeManagerConfig,
  log: Logger,
  credentials: CredentialAuthority,
): Promise<KubeIntegration> {
  const source = new KubeWorkloadSource({
    kc,
    namespaces: config.managedNamespaces,
    defaultMechanism: config.injection.defaultMechanism,
    log: log.child('workloads'),
  });
  let workloads: KubeManagerWorkloads | undefined;
  const installer = new AgentInstaller({
    kc,
    source,
    arrivalTimeoutMs: config.agentArrivalTimeoutMs,
    arrivedPods: (ns, name) => workloads?.arrivedPods(ns, name) ?? new Set(),
    log: log.child('agents'),
  });
  workloads = new KubeManagerWorkloads(source, installer);
  await source.start();

  const cluster = new ClusterInfoSource({
    kc,
    namespace: config.namespace,
    configured: config.serviceCidr,
    clusterDomain: config.clusterDomain,
    log: log.child('cluster'),
    pods: () => source.pods(),
  });
  await cluster.start();

  let webhook: WebhookServer | undefined;
  const sessionLog = log.child('sessions');
  const trust = new RequestHeaderTrust(kc, sessionLog, () => webhook?.reloadCertificates());
  await trust.start();
  const group = sessionApiGroup(config.namespace);
  if (fs.existsSync(config.webhookCertFile) && fs.existsSync(config.webhookKeyFile)) {
    webhook = await startWebhookServer({
      host: '0.0.0.0',
      port: config.webhookPort,
      certFile: config.webhookCertFile,
      keyFile: config.webhookKeyFile,
      config: config.injection,
      owners: source,
      log: log.child('webhook'),
      // The session API (aggregation layer) shares the server: same certificate, same caller.
      sessionApi: {
        clientCa: () => trust.current?.clientCa,
        handle: (req, res) =>
          handleSessionApi(req, res, {
            group,
            config: () => trust.current,
            credentials,
            onEvent: (e) => {
              if (e.issued) sessionLog.debug('identity token issued', { user: e.issued.user });
              else sessionLog.warn('session token request refused', { reason: e.refused });
            },
          }),
      },
    });
    // The kubelet refreshes a mounted Secret in place: pick the new certificate up without a restart.
    fs.watchFile(config.webhookCertFile, { interval: 60_000 }, () => {
      try {
        webhook?.reloadCertificates();
        log.info('webhook certificate reloaded');
      } catch (err) {
        log.warn('cannot reload the webhook certificate', { error: err });
      }
    });
  } else {
    log.warn(
      'no webhook certificate: agents cannot be injected and workstations cannot authenticate (install tp with its Helm chart)',
      {
        certFile: config.webhookCertFile,
      },
    );
  }

  const core = kc.makeApiClient(CoreV1Api);
  const managed = (ns: string) =>
    config.managedNamespaces.length === 0 || config.managedNamespaces.includes(ns);
  const agents = new AgentTokenReviewer({
    kc,
    audience: config.injection.tokenAudience,
    async pod(namespace, name) {
      const cached = source.pod(namespace, name);
      if (cached || !managed(namespace)) return cached;
      // A pod the informer has not seen yet.
      return core.readNamespacedPod({ name, namespace }).catch(() => undefined);
    },
    owner: (namespace, refs) => source.resolveOwner(namespace, refs),
  });
  const reachable = (): Cidr[] => {
    const n = cluster.current();
    const cidrs: Cidr[] = [];
    for (const c of [
      ...n.podSubnets,
      ...n.serviceSubnets,
      ...n.dnsIPs.map((ip) => (ip.includes(':') ? `${ip}/128` : `${ip}/32`)),
    ]) {
      try {
        cidrs.push(parseCidr(c));
      } catch {
        // Not a CIDR: nothing to allow.
      }
    }
    return [...cidrs, ...config.tunnelAllowedCidrs];
  };

  return {
    workloads,
    access: {
      mode: config.securityMode,
      authorizer: new SubjectAccessReviewer(kc),
      agents,
      reachable,
    },
    async ensureAgent(name, namespace, mechanism) {
      if (mechanism && !isMechanism(mechanism))
        throw new InterceptError(
          'invalid-argument',
          `unknown capture mechanism "${mechanism}": use iptables or ebpf`,
        );
      const m: Mechanism | undefined = mechanism ? (mechanism as Mechanism) : undefined;
      await installer.ensureAgent(namespace, name, m).catch((err: unknown) => {
        throw asInterceptError(err);
      });
      return workloads.agentsOf(namespace, name);
    },
    uninstallAgents: (names, namespace, all) =>
      installer.uninstall(namespace, names, all).catch((err: unknown) => {
        throw asInterceptError(err);
      }),
    clusterInfo() {
      const n = cluster.current();
      return {
        podSubnets: n.podSubnets,
        serviceSubnets: n.serviceSubnets,
        clusterDomain: n.clusterDomain,
        dnsIps: n.dnsIPs,
        managerPodIp: config.podIP,
        managedNamespaces: config.managedNamespaces,
      };
    },
    onClusterInfoChange: (listener) => cluster.onChange(() => listener()),
    dnsServers: () => cluster.current().dnsIPs.map((address) => ({ address, port: 53 })),
    async stop() {
      fs.unwatchFile(config.webhookCertFile);
      trust.stop();
      await Promise.all([webhook?.close(), source.stop(), cluster.stop()]);
    },
  };
}
