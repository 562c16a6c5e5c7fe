// The port-forward to the traffic manager (port-forward.ts) on a thread of its own. The user daemon's main
// thread runs the gRPC session and the tunnel's flows; the port-forward relays every byte of them once more
// (TLS, SPDY, the loopback socket grpc-js dials). On one thread an intercepted transfer paid for both
// legs in turn (measured on the lab: the daemon's thread saturated at 2.9 CPU-seconds per 200 MiB, half of
// it the TLS writes); on two they overlap. The Kubernetes client and its garbage stay off the main heap.
//
// The thread takes the kubeconfig flags, not a KubeConfig: it loads the client itself, so the main thread
// never imports it.
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { Level } from '../logging/logger.js';
import { UsageError } from '../netaddr/parse.js';
import type { ManagerForward } from './port-forward.js';

export interface ForwardThreadOptions {
  kubeconfig?: string;
  context?: string;
  /** The traffic manager's namespace; the default when empty. */
  managerNamespace?: string;
  /** Where the thread logs (the daemon's file and level, logging/logger.ts logTarget()). */
  log: { file?: string; level: Level };
}

export interface ForwardThread extends ManagerForward {
  /** The kubeconfig's current context, its namespace and the API server's URL. */
  context: string;
  namespace: string;
  server?: string;
  managerNamespace: string;
}

type Started =
  | {
      ok: true;
      address: string;
      context: string;
      namespace: string;
      server?: string;
      managerNamespace: string;
    }
  | { ok: false; usage: boolean; message: string };

/** Marks this module's own workers, so the module does nothing in any other worker that imports it. */
const THREAD_MARK = 'tp-port-forward-thread';

/**
 * Starts the thread: resolves once its local listener forwards to the manager; rejects with a UsageError
 * when the kubeconfig cannot be used, or with why the manager cannot be reached.
 */
export function startForwardThread(options: ForwardThreadOptions): Promise<ForwardThread> {
  const worker = new Worker(new URL(import.meta.url), { workerData: { [THREAD_MARK]: options } });
  return new Promise((resolve, reject) => {
    const onExit = (code: number) => reject(new Error(`the port-forward thread exited (code ${code})`));
    worker.once('error', reject);
    worker.once('exit', onExit);
    worker.once('message', (m: Started) => {
      worker.off('error', reject);
      worker.off('exit', onExit);
      if (!m.ok) {
        void worker.terminate();
        reject(m.usage ? new UsageError(m.message) : new Error(m.message));
        return;
      }
      const { ok: _, ...facts } = m;
      const exited = new Promise<void>((done) => worker.once('exit', () => done()));
      resolve({
        ...facts,
        close: () => {
          worker.postMessage('close');
          return exited;
        },
      });
    });
  });
}

async function runThread(options: ForwardThreadOptions): Promise<void> {
  const port = parentPort!;
  const [
    { createLogger, logToFile, setLevel },
    { loadKubeConfig },
    { forwardToManager },
    { DEFAULT_MANAGER_NAMESPACE },
  ] = await Promise.all([
    import('../logging/logger.js'),
    import('./kubeconfig.js'),
    import('./port-forward.js'),
    import('./annotations.js'),
  ]);
  if (options.log.file) logToFile(options.log.file);
  setLevel(options.log.level);
  const log = createLogger('connector/port-forward');
  let loaded: ReturnType<typeof loadKubeConfig>;
  try {
    loaded = loadKubeConfig({ kubeconfig: options.kubeconfig, context: options.context });
  } catch (e) {
    port.postMessage({ ok: false, usage: true, message: (e as Error).message } satisfies Started);
    return;
  }
  const managerNamespace = options.managerNamespace || DEFAULT_MANAGER_NAMESPACE;
  let forward: ManagerForward;
  try {
    forward = await forwardToManager(loaded.kc, log, managerNamespace);
  } catch (e) {
    // Not a usage error for the caller even when it names the fix: the manager is unavailable.
    port.postMessage({ ok: false, usage: false, message: (e as Error).message } satisfies Started);
    return;
  }
  // 'close': the listener and its connections go, then the thread (process.exit ends only this thread).
  port.on('message', (m) => {
    if (m === 'close') void forward.close().finally(() => process.exit(0));
  });
  port.postMessage({
    ok: true,
    address: forward.address,
    context: loaded.kc.getCurrentContext(),
    namespace: loaded.namespace,
    server: loaded.kc.getCurrentCluster()?.server,
    managerNamespace,
  } satisfies Started);
}

if (!isMainThread && (workerData as Record<string, unknown> | null)?.[THREAD_MARK]) {
  void runThread((workerData as Record<string, ForwardThreadOptions>)[THREAD_MARK]!);
}
