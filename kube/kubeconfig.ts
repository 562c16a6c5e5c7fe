// Loading cluster credentials the way kubectl does: --kubeconfig, else $KUBECONFIG (a list of files),
// else ~/.kube/config; --context picks a context; -n/--namespace, else the context's namespace, else
// "default". Inside a pod with none of these, the in-cluster service account.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApiException, KubeConfig } from '@kubernetes/client-node';
import { UsageError } from '../netaddr/parse.js';

/** The standard kube flags every command that talks to a cluster accepts. */
export interface KubeFlags {
  kubeconfig?: string;
  context?: string;
  namespace?: string;
}

export interface LoadedKubeConfig {
  kc: KubeConfig;
  /** The namespace commands act on when none is named. */
  namespace: string;
  /** Where the configuration came from, for messages: a file list or "in-cluster". */
  source: string;
}

const inClusterTokenFile = '/var/run/secrets/kubernetes.io/serviceaccount/token';

function inCluster(): boolean {
  return !!process.env.KUBERNETES_SERVICE_HOST && fs.existsSync(inClusterTokenFile);
}

export function loadKubeConfig(flags: KubeFlags = {}): LoadedKubeConfig {
  const kc = new KubeConfig();
  let source: string;
  const explicit = flags.kubeconfig ?? process.env.KUBECONFIG;
  if (explicit) {
    const files = explicit.split(path.delimiter).filter((f) => f !== '');
    const missing = files.filter((f) => !fs.existsSync(f));
    if (missing.length === files.length) {
      const origin = flags.kubeconfig ? '--kubeconfig' : '$KUBECONFIG';
      throw new UsageError(
        `kubeconfig ${missing.join(', ')} (from ${origin}) does not exist: pass an existing file`,
      );
    }
    const existing = files.filter((f) => fs.existsSync(f));
    try {
      kc.loadFromFile(existing[0]!);
      for (const f of existing.slice(1)) {
        const more = new KubeConfig();
        more.loadFromFile(f);
        kc.mergeConfig(more, true);
      }
    } catch (err) {
      throw new UsageError(`cannot read kubeconfig ${existing.join(', ')}: ${(err as Error).message}`);
    }
    source = existing.join(path.delimiter);
  } else if (fs.existsSync(path.join(os.homedir(), '.kube', 'config'))) {
    const file = path.join(os.homedir(), '.kube', 'config');
    kc.loadFromFile(file);
    source = file;
  } else if (inCluster()) {
    kc.loadFromCluster();
    source = 'in-cluster';
  } else {
    throw new UsageError(
      'no cluster configuration found: pass --kubeconfig FILE, set KUBECONFIG, or create ~/.kube/config',
    );
  }

  if (flags.context) {
    if (!kc.getContextObject(flags.context)) {
      const known = kc.contexts.map((c) => c.name).join(', ') || 'none';
      throw new UsageError(`context "${flags.context}" is not in ${source}: the contexts are ${known}`);
    }
    kc.setCurrentContext(flags.context);
  }
  if (source !== 'in-cluster' && !kc.getCurrentCluster()) {
    throw new UsageError(
      `${source} has no current context: pass --context NAME or run kubectl config use-context NAME`,
    );
  }
  const contextNamespace = kc.getContextObject(kc.getCurrentContext())?.namespace;
  let namespace = flags.namespace ?? contextNamespace ?? 'default';
  if (source === 'in-cluster' && !flags.namespace) {
    try {
      namespace = fs.readFileSync('/var/run/secrets/kubernetes.io/serviceaccount/namespace', 'utf8').trim();
    } catch {
      // Keep "default".
    }
  }
  return { kc, namespace, source };
}

/** The Status message the API server sent with an error, or the error's own message. */
export function apiErrorMessage(err: unknown): string {
  if (err instanceof ApiException) {
    const body = err.body as unknown;
    if (typeof body === 'string') {
      try {
        const status = JSON.parse(body) as { message?: string };
        if (status.message) return status.message;
      } catch {
        if (body.trim() !== '') return body.trim();
      }
    } else if (body && typeof body === 'object' && 'message' in body) {
      return String((body as { message: unknown }).message);
    }
    return `HTTP ${err.code}`;
  }
  if (err instanceof Error) {
    const cause = (err as { cause?: { code?: string } }).cause;
    return cause?.code ? `${err.message} (${cause.code})` : err.message;
  }
  return String(err);
}

/** The HTTP status of a Kubernetes API error, or undefined for other errors. */
export function apiErrorCode(err: unknown): number | undefined {
  return err instanceof ApiException ? err.code : undefined;
}
