// The manager's HTTPS server, which only the API server calls: the mutating admission webhook, and the
// session API of the aggregation layer (session-api.ts), which shares its certificate.
//
// The mutating admission webhook: the API server calls it on every pod CREATE in the
// managed namespaces. It answers with the patch planInjection computes. It never denies a pod: a pod
// that cannot be injected is allowed unchanged (with a warning and an annotation saying why), and the
// webhook configuration's failurePolicy Ignore means that when this server is down pods start without
// the agent — the manager detects that and reports it, instead of breaking the workload.
import * as fs from 'node:fs';
import type * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { V1OwnerReference, V1Pod } from '@kubernetes/client-node';
import type { Logger } from '../../logging/logger.js';
import { type InjectionConfig, type InjectionPlan, type OwnerWorkload, planInjection } from './injection.js';

export const WEBHOOK_PATH = '/mutate-pods';

/** Finds the workload that owns a pod through its ownerReferences (ReplicaSet → Deployment). */
export interface OwnerResolver {
  resolveOwner(namespace: string, refs: V1OwnerReference[] | undefined): Promise<OwnerWorkload | undefined>;
}

export interface WebhookDecision {
  namespace: string;
  podName: string;
  owner: OwnerWorkload | undefined;
  plan: InjectionPlan;
}

export interface WebhookServerOptions {
  host: string;
  port: number;
  /** PEM files of the serving certificate and key (mounted from the chart's Secret). */
  certFile: string;
  keyFile: string;
  config: InjectionConfig;
  owners: OwnerResolver;
  log: Logger;
  /** Told of every injection and refusal, so the manager can report progress and errors. */
  onDecision?: (decision: WebhookDecision) => void;
  /**
   * The session API: its handler (true when it served the request) and the CA its callers' client
   * certificates must chain to (the front proxy's; asked for, never required, so the webhook's callers
   * need none).
   */
  sessionApi?: {
    handle(req: http.IncomingMessage, res: http.ServerResponse): boolean;
    clientCa(): string | undefined;
  };
}

interface AdmissionRequest {
  uid: string;
  kind?: { group: string; version: string; kind: string };
  namespace?: string;
  operation?: string;
  object?: V1Pod;
  dryRun?: boolean;
}

interface AdmissionReview {
  apiVersion?: string;
  kind?: string;
  request?: AdmissionRequest;
}

interface AdmissionResponse {
  uid: string;
  allowed: true;
  patchType?: 'JSONPatch';
  patch?: string;
  warnings?: string[];
}

/** The AdmissionReview answer for one request: pure apart from the owner lookup. */
export async function reviewPod(
  review: AdmissionReview,
  config: InjectionConfig,
  owners: OwnerResolver,
): Promise<{ response: AdmissionResponse; decision?: WebhookDecision }> {
  const request = review.request;
  if (!request?.uid) throw new Error('the AdmissionReview has no request uid');
  const allow: AdmissionResponse = { uid: request.uid, allowed: true };
  const pod = request.object;
  if (request.kind?.kind !== 'Pod' || request.operation !== 'CREATE' || !pod) return { response: allow };
  const namespace = request.namespace ?? pod.metadata?.namespace ?? 'default';
  const podName = pod.metadata?.name || `${pod.metadata?.generateName ?? ''}*`;
  // Resolve the owner only when injection is asked for: every other pod costs nothing.
  const planWithout = planInjection(pod, undefined, config);
  if (planWithout.action === 'skip') return { response: allow };
  const owner = await owners.resolveOwner(namespace, pod.metadata?.ownerReferences);
  const plan = planInjection(pod, owner, config);
  const decision: WebhookDecision = { namespace, podName, owner, plan };
  if (plan.action === 'skip') return { response: allow, decision };
  const response: AdmissionResponse = {
    ...allow,
    patchType: 'JSONPatch',
    patch: Buffer.from(JSON.stringify(plan.patch)).toString('base64'),
  };
  if (plan.action === 'refuse') response.warnings = [`tp: ${plan.reason}`];
  return { response, decision };
}

const maxBodyBytes = 8 * 1024 * 1024;

export interface WebhookServer {
  address: AddressInfo;
  /** Re-reads the certificate files (after the Secret was updated). */
  reloadCertificates(): void;
  close(): Promise<void>;
}

export async function startWebhookServer(opts: WebhookServerOptions): Promise<WebhookServer> {
  const log = opts.log;
  const tlsOptions = () => {
    const ca = opts.sessionApi?.clientCa();
    return {
      cert: fs.readFileSync(opts.certFile),
      key: fs.readFileSync(opts.keyFile),
      minVersion: 'TLSv1.2' as const,
      ...(ca ? { ca, requestCert: true, rejectUnauthorized: false } : {}),
    };
  };
  const server = https.createServer(tlsOptions(), (req, res) => {
    if (req.method === 'GET' && req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    if (opts.sessionApi?.handle(req, res)) return;
    if (req.method !== 'POST' || req.url?.split('?')[0] !== WEBHOOK_PATH) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: use POST ${WEBHOOK_PATH}\n`);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBodyBytes) {
        res.writeHead(413).end();
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      let review: AdmissionReview;
      try {
        review = JSON.parse(Buffer.concat(chunks).toString('utf8')) as AdmissionReview;
      } catch (err) {
        res.writeHead(400, { 'content-type': 'text/plain' }).end(`invalid AdmissionReview JSON: ${err}\n`);
        return;
      }
      if (!review.request?.uid) {
        res.writeHead(400, { 'content-type': 'text/plain' }).end('the AdmissionReview has no request uid\n');
        return;
      }
      reviewPod(review, opts.config, opts.owners).then(
        ({ response, decision }) => {
          if (decision && decision.plan.action !== 'skip') {
            const fields = {
              namespace: decision.namespace,
              pod: decision.podName,
              owner: decision.owner?.name,
            };
            if (decision.plan.action === 'inject') log.info('injecting the agent', fields);
            else log.warn(decision.plan.reason, fields);
          }
          if (decision) opts.onDecision?.(decision);
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response }));
        },
        (err: unknown) => {
          // The API server treats an error like an unreachable webhook (failurePolicy Ignore): the pod
          // starts without the agent, and the manager reports it.
          log.error('admission review failed', { error: err });
          res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err}\n`);
        },
      );
    });
  });
  server.on('tlsClientError', (err) => log.debug('TLS handshake failed', { error: err }));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  log.info('webhook listening', { address: `${opts.host}:${(server.address() as AddressInfo).port}` });
  return {
    address: server.address() as AddressInfo,
    reloadCertificates: () => server.setSecureContext(tlsOptions()),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
