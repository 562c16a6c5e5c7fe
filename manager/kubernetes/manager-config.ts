// The in-cluster manager's configuration, from the environment the chart's Deployment sets (one place
// reads it, so the chart and the code cannot drift apart silently: kube/chart.test.ts renders the chart
// and parses its env with this function).
import * as path from 'node:path';
import { ENV } from '../../agentconfig/env.js';
import {
  DEFAULT_MANAGER_GRPC_PORT,
  DEFAULT_MANAGER_NAMESPACE,
  isMechanism,
  type Mechanism,
} from '../../kube/annotations.js';
import { parseLevel } from '../../logging/logger.js';
import {
  type Cidr,
  parseCidr,
  parseDuration,
  parseHostPort,
  parsePort,
  UsageError,
} from '../../netaddr/parse.js';
import { VERSION } from '../../version/version.js';
import { SECURITY_MODES, type SecurityMode } from '../access-control.js';
import type { InjectionConfig } from './injection.js';

export interface KubeManagerConfig {
  namespace: string;
  podIP: string;
  /** Empty: every namespace. */
  managedNamespaces: string[];
  grpcPort: number;
  /** Where the Prometheus metrics are served (chart value metrics.port); 0: not served. */
  metricsPort: number;
  webhookPort: number;
  webhookCertFile: string;
  webhookKeyFile: string;
  injection: InjectionConfig;
  agentArrivalTimeoutMs: number;
  clientSessionTtlMs: number;
  agentSessionTtlMs: number;
  /** How long a lost client's intercepts are held for it to take back (chart timeouts.interceptGrace). */
  interceptGraceMs: number;
  /** How long a stopping manager lets the flows in progress finish (chart timeouts.drain); unset: the default. */
  drainMs: number | undefined;
  dialTimeoutMs: number;
  serviceCidr: string;
  clusterDomain: string;
  /** enforcing (default) or permissive (chart value security.mode). */
  securityMode: SecurityMode;
  /** Where workstations' outbound flows may go besides the cluster's networks (security.tunnel.allowedCIDRs). */
  tunnelAllowedCidrs: Cidr[];
}

/** The audience of agents' tokens: one install's manager accepts no other install's agents. */
export function defaultTokenAudience(managerNamespace: string): string {
  return `tp-manager.${managerNamespace}`;
}

function securityMode(value: string | undefined): SecurityMode {
  const v = (value || 'enforcing').trim();
  if (v === 'off' || !(SECURITY_MODES as string[]).includes(v))
    throw new UsageError(
      `invalid TP_SECURITY_MODE "${value}": use enforcing or permissive (chart value security.mode)`,
    );
  return v as SecurityMode;
}

function tokenExpiration(value: string | undefined): number {
  if (value === undefined || value === '') return 3600;
  if (!/^\d+$/.test(value) || Number(value) < 600)
    throw new UsageError(
      `invalid TP_AGENT_TOKEN_EXPIRATION "${value}": seconds, at least 600 (chart value agent.tokenExpirationSeconds)`,
    );
  return Number(value);
}

function num(
  env: NodeJS.ProcessEnv,
  name: string,
  fallback: number,
  parse: (v: string, what: string) => number,
) {
  const v = env[name];
  return v === undefined || v === '' ? fallback : parse(v, name);
}

function uid(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) === 0)
    throw new UsageError(`invalid TP_AGENT_UID "${value}": expected a non-zero numeric UID, e.g. 7777`);
  return Number(value);
}

export function kubeManagerConfigFromEnv(env: NodeJS.ProcessEnv = process.env): KubeManagerConfig {
  const namespace = env.TP_MANAGER_NAMESPACE || DEFAULT_MANAGER_NAMESPACE;
  const grpcPort = num(env, 'TP_GRPC_PORT', DEFAULT_MANAGER_GRPC_PORT, parsePort);
  const mechanism = env.TP_AGENT_MECHANISM || 'iptables';
  if (!isMechanism(mechanism))
    throw new UsageError(
      `invalid TP_AGENT_MECHANISM "${mechanism}": use iptables or ebpf (chart value agent.mechanism)`,
    );
  const agentAddress = env.TP_AGENT_MANAGER_ADDRESS || `traffic-manager.${namespace}:${grpcPort}`;
  parseHostPort(agentAddress, 'TP_AGENT_MANAGER_ADDRESS');
  const image = env.TP_AGENT_IMAGE || `tp/tp:${VERSION}`;
  let agentResources: InjectionConfig['agentResources'];
  if (env.TP_AGENT_RESOURCES) {
    try {
      agentResources = JSON.parse(env.TP_AGENT_RESOURCES) as InjectionConfig['agentResources'];
    } catch {
      throw new UsageError(
        `invalid TP_AGENT_RESOURCES: expected JSON resource requirements (chart value agent.resources)`,
      );
    }
  }
  const serviceCidr = env.TP_SERVICE_CIDR ?? '';
  for (const c of serviceCidr.split(',').filter((s) => s.trim() !== '')) parseCidr(c.trim(), 'serviceCIDR');
  const certDir = env.TP_WEBHOOK_CERT_DIR || '/var/run/tp/webhook';
  const logLevel = parseLevel(env.TP_LOG_LEVEL, 'info');
  const tunnelAllowedCidrs = (env.TP_TUNNEL_ALLOWED_CIDRS ?? '')
    .split(',')
    .map((c) => c.trim())
    .filter((c) => c !== '')
    .map((c) => parseCidr(c, 'security.tunnel.allowedCIDRs'));
  return {
    namespace,
    podIP: env.TP_POD_IP ?? '',
    managedNamespaces: (env.TP_MANAGED_NAMESPACES ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== ''),
    grpcPort,
    metricsPort: env.TP_METRICS_PORT ? num(env, 'TP_METRICS_PORT', 0, parsePort) : 0,
    webhookPort: num(env, 'TP_WEBHOOK_PORT', 8443, parsePort),
    webhookCertFile: path.join(certDir, 'tls.crt'),
    webhookKeyFile: path.join(certDir, 'tls.key'),
    injection: {
      version: VERSION,
      agentImage: image,
      initImage: image,
      imagePullPolicy: env.TP_AGENT_IMAGE_PULL_POLICY || 'IfNotPresent',
      agentUid: env.TP_AGENT_UID ? uid(env.TP_AGENT_UID) : 7777,
      agentPort: num(env, 'TP_AGENT_PORT', 15001, parsePort),
      probePort: num(env, 'TP_AGENT_PROBE_PORT', 15021, parsePort),
      directPort: num(env, 'TP_AGENT_DIRECT_PORT', 15022, parsePort),
      managerAddress: agentAddress,
      tokenAudience: env.TP_AGENT_TOKEN_AUDIENCE || defaultTokenAudience(namespace),
      tokenExpirationSeconds: tokenExpiration(env.TP_AGENT_TOKEN_EXPIRATION),
      logLevel,
      defaultMechanism: mechanism as Mechanism,
      agentResources,
      workstationDialDeadlineMs: env.TP_WORKSTATION_DIAL_DEADLINE
        ? parseDuration(env.TP_WORKSTATION_DIAL_DEADLINE, ENV.workstationDialDeadline)
        : undefined,
    },
    agentArrivalTimeoutMs: num(env, 'TP_AGENT_ARRIVAL_TIMEOUT', 90_000, parseDuration),
    clientSessionTtlMs: num(env, 'TP_CLIENT_SESSION_TTL', 30_000, parseDuration),
    agentSessionTtlMs: num(env, 'TP_AGENT_SESSION_TTL', 15_000, parseDuration),
    interceptGraceMs: num(env, 'TP_INTERCEPT_GRACE', 120_000, parseDuration),
    drainMs: env.TP_DRAIN ? parseDuration(env.TP_DRAIN, 'TP_DRAIN') : undefined,
    dialTimeoutMs: num(env, 'TP_DIAL_TIMEOUT', 10_000, parseDuration),
    serviceCidr,
    clusterDomain: env.TP_CLUSTER_DOMAIN || '',
    securityMode: securityMode(env.TP_SECURITY_MODE),
    tunnelAllowedCidrs,
  };
}
