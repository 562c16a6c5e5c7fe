// A small client for the lab's API server with the admin certificate: readiness polls and
// server-side apply of the lab's add-ons. (kubectl is for users and tests; `up` needs only this.)
import * as https from 'node:https';

export interface ApiResponse {
  status: number;
  body: string;
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; [k: string]: unknown };
  [k: string]: unknown;
}

/** Kind -> plural resource name and whether it is namespaced (the kinds the lab applies). */
const resources: Record<string, { plural: string; namespaced: boolean }> = {
  Namespace: { plural: 'namespaces', namespaced: false },
  ServiceAccount: { plural: 'serviceaccounts', namespaced: true },
  ConfigMap: { plural: 'configmaps', namespaced: true },
  Service: { plural: 'services', namespaced: true },
  Deployment: { plural: 'deployments', namespaced: true },
  ClusterRole: { plural: 'clusterroles', namespaced: false },
  ClusterRoleBinding: { plural: 'clusterrolebindings', namespaced: false },
};

/** The REST path of an object. */
export function objectPath(obj: KubeObject): string {
  const r = resources[obj.kind];
  if (!r) throw new Error(`tp-lab cannot apply kind ${obj.kind}`);
  const base = obj.apiVersion.includes('/') ? `/apis/${obj.apiVersion}` : `/api/${obj.apiVersion}`;
  const ns = r.namespaced ? `/namespaces/${obj.metadata.namespace ?? 'default'}` : '';
  return `${base}${ns}/${r.plural}/${encodeURIComponent(obj.metadata.name)}`;
}

export class LabApiClient {
  private readonly agent: https.Agent;

  constructor(
    private readonly server: string,
    tls: { ca: string; cert: string; key: string },
  ) {
    this.agent = new https.Agent({ ...tls, keepAlive: false });
  }

  request(method: string, path: string, body?: string, contentType?: string): Promise<ApiResponse> {
    const url = new URL(path, this.server);
    return new Promise((resolve, reject) => {
      const req = https.request(
        url,
        {
          method,
          agent: this.agent,
          timeout: 10_000,
          headers: {
            accept: 'application/json',
            ...(body !== undefined ? { 'content-type': contentType ?? 'application/json' } : {}),
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            text += d;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 10 s`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  /** GET returning parsed JSON, or null on 404. */
  async getJson<T>(path: string): Promise<T | null> {
    const r = await this.request('GET', path);
    if (r.status === 404) return null;
    if (r.status !== 200) throw new Error(`GET ${path}: HTTP ${r.status}: ${r.body.slice(0, 300)}`);
    return JSON.parse(r.body) as T;
  }

  /** Server-side apply (create or update) with tp-lab as the field manager. */
  async apply(obj: KubeObject): Promise<void> {
    const path = `${objectPath(obj)}?fieldManager=tp-lab&force=true`;
    const r = await this.request('PATCH', path, JSON.stringify(obj), 'application/apply-patch+yaml');
    if (r.status !== 200 && r.status !== 201) {
      throw new Error(`applying ${obj.kind} ${obj.metadata.name}: HTTP ${r.status}: ${r.body.slice(0, 300)}`);
    }
  }

  close(): void {
    this.agent.destroy();
  }
}
