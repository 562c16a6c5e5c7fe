// The cluster's answers to the manager's security questions (manager/access-control.ts):
// - "may user U do this?": a SubjectAccessReview for U (user, groups, uid, extra, as the API server
//   authenticated them), cached for a few seconds so a listing does not ask the same thing twice;
// - "which pod is this agent?": a TokenReview of the agent's projected ServiceAccount token with the
//   manager's audience; the token names its pod (user extra authentication.kubernetes.io/pod-name and
//   pod-uid), and that pod must be a pod of the workload the agent claims (agentClaimProblem, pure).
import {
  AuthenticationV1Api,
  AuthorizationV1Api,
  type KubeConfig,
  type V1OwnerReference,
  type V1Pod,
} from '@kubernetes/client-node';
import { apiErrorMessage } from '../../kube/kubeconfig.js';
import type { AgentInfo } from '../../rpc/gen/manager.js';
import type { AgentIdentity, AgentVerifier, Authorizer } from '../access-control.js';
import type { ResourceCheck } from '../authorization.js';
import type { Identity, Verified } from '../credentials.js';
import type { OwnerWorkload } from './injection.js';

export const POD_NAME_EXTRA = 'authentication.kubernetes.io/pod-name';
export const POD_UID_EXTRA = 'authentication.kubernetes.io/pod-uid';
const SA_PREFIX = 'system:serviceaccount:';
const CACHE_MS = 10_000;
/**
 * A denial is kept only this long: a kube-apiserver that has just restarted denies for a moment, before its
 * RBAC caches are filled (seen on the lab: a restored intercept refused "cannot create pods/portforward"
 * right after `tp-lab restart kube-apiserver`), and a denial kept 10 s would hold the user's retry back.
 */
const DENIAL_CACHE_MS = 1_000;

export class SubjectAccessReviewer implements Authorizer {
  private readonly api: AuthorizationV1Api;
  private readonly cache = new Map<string, { at: number; answer: Promise<boolean>; denied?: boolean }>();

  constructor(
    kc: KubeConfig,
    private readonly now: () => number = Date.now,
  ) {
    this.api = kc.makeApiClient(AuthorizationV1Api);
  }

  allowed(identity: Identity, check: ResourceCheck): Promise<boolean> {
    const key = JSON.stringify([identity, check]);
    const t = this.now();
    for (const [k, v] of this.cache)
      if (t - v.at > (v.denied ? DENIAL_CACHE_MS : CACHE_MS)) this.cache.delete(k);
    const cached = this.cache.get(key);
    if (cached) return cached.answer;
    const answer = this.api
      .createSubjectAccessReview({
        body: {
          apiVersion: 'authorization.k8s.io/v1',
          kind: 'SubjectAccessReview',
          spec: {
            user: identity.user,
            uid: identity.uid || undefined,
            groups: identity.groups,
            extra: identity.extra,
            resourceAttributes: {
              verb: check.verb,
              group: check.group,
              resource: check.resource,
              subresource: check.subresource,
              namespace: check.namespace || undefined,
              name: check.name,
            },
          },
        },
      })
      .then(
        (r) => {
          const allowed = r.status?.allowed === true;
          const entry = this.cache.get(key);
          if (!allowed && entry) entry.denied = true;
          return allowed;
        },
        (e: unknown) => {
          this.cache.delete(key);
          throw new Error(`SubjectAccessReview failed: ${apiErrorMessage(e)}`);
        },
      );
    this.cache.set(key, { at: t, answer });
    return answer;
  }
}

/** A TokenReview's answer, as far as the agent check needs it. */
export interface TokenFacts {
  authenticated: boolean;
  error: string;
  user: string;
  extra: Record<string, string[]>;
}

/**
 * Why an agent's claim does not hold, or the identity the cluster vouches for: the token is valid for the
 * manager's audience, bound to a pod of the claimed namespace and name, that pod still exists (same uid),
 * and its owner is the claimed workload. Pure.
 */
export function checkAgentClaim(
  claim: AgentInfo,
  token: TokenFacts,
  pod: V1Pod | undefined,
  owner: OwnerWorkload | undefined,
  audience: string,
): Verified<AgentIdentity> {
  const no = (reason: string): Verified<AgentIdentity> => ({ ok: false, reason });
  if (!token.authenticated)
    return no(`its token is not valid for audience ${audience}${token.error ? ` (${token.error})` : ''}`);
  if (!token.user.startsWith(SA_PREFIX)) return no(`its token is not a ServiceAccount's (${token.user})`);
  const [namespace, serviceAccount] = token.user.slice(SA_PREFIX.length).split(':');
  const podName = token.extra[POD_NAME_EXTRA]?.[0];
  const podUid = token.extra[POD_UID_EXTRA]?.[0] ?? '';
  if (!podName) return no('its token is not bound to a pod (use the projected token the injector mounts)');
  if (namespace !== claim.namespace)
    return no(`its token belongs to namespace ${namespace}, not ${claim.namespace}`);
  if (podName !== claim.podName) return no(`its token belongs to pod ${podName}, not ${claim.podName}`);
  if (!pod || (podUid && pod.metadata?.uid !== podUid))
    return no(
      `pod ${namespace}/${podName} of its token no longer exists (or its namespace is not managed by this traffic manager)`,
    );
  if ((pod.spec?.serviceAccountName || 'default') !== serviceAccount)
    return no(`pod ${podName} runs as ServiceAccount ${pod.spec?.serviceAccountName}, not ${serviceAccount}`);
  if (!owner) return no(`pod ${podName} has no owning Deployment, ReplicaSet or StatefulSet`);
  const kindMatches = !claim.kind || claim.kind === 'Standalone' || claim.kind === owner.kind;
  if (owner.name !== claim.name || !kindMatches)
    return no(
      `pod ${podName} belongs to ${owner.kind} ${owner.name}, not ${claim.kind || 'workload'} ${claim.name}`,
    );
  const podIps = [pod.status?.podIP, ...(pod.status?.podIPs ?? []).map((p) => p.ip)].filter(Boolean);
  if (claim.podIp && podIps.length > 0 && !podIps.includes(claim.podIp))
    return no(`pod ${podName} has IP ${podIps.join(', ')}, not ${claim.podIp}`);
  return { ok: true, value: { serviceAccount: token.user, namespace, podName, podUid } };
}

export interface AgentTokenReviewerOptions {
  kc: KubeConfig;
  audience: string;
  /** The pod as the cluster has it now (informer cache, else the API). */
  pod(namespace: string, name: string): Promise<V1Pod | undefined>;
  owner(namespace: string, refs: V1OwnerReference[] | undefined): Promise<OwnerWorkload | undefined>;
}

export class AgentTokenReviewer implements AgentVerifier {
  private readonly api: AuthenticationV1Api;

  constructor(private readonly opts: AgentTokenReviewerOptions) {
    this.api = opts.kc.makeApiClient(AuthenticationV1Api);
  }

  async verify(token: string, claim: AgentInfo): Promise<Verified<AgentIdentity>> {
    let review: Awaited<ReturnType<AuthenticationV1Api['createTokenReview']>>;
    try {
      review = await this.api.createTokenReview({
        body: {
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenReview',
          spec: { token, audiences: [this.opts.audience] },
        },
      });
    } catch (e) {
      throw new Error(`TokenReview failed: ${apiErrorMessage(e)}`);
    }
    const facts: TokenFacts = {
      authenticated: review.status?.authenticated === true,
      error: review.status?.error ?? '',
      user: review.status?.user?.username ?? '',
      extra: review.status?.user?.extra ?? {},
    };
    const podName = facts.extra[POD_NAME_EXTRA]?.[0];
    const pod =
      facts.authenticated && podName && podName === claim.podName
        ? await this.opts.pod(claim.namespace, podName)
        : undefined;
    const owner = pod ? await this.opts.owner(claim.namespace, pod.metadata?.ownerReferences) : undefined;
    return checkAgentClaim(claim, facts, pod, owner, this.opts.audience);
  }
}
