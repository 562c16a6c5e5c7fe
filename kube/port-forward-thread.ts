// The port-forward to the traffic manager (port-forward.ts) on a thread of its own. The user daemon's main
// thread runs the gRPC session and the tunnel's flows; the port-forward relays every byte of them once more
// (TLS, SPDY, the loopback socket grpc-js dials). On one thread an intercepted transfer paid for both
// legs in turn (measured on the lab: the daemon's thread saturated at 2.9 CPU-seconds per 200 MiB, half of
// it the TLS writes); on two they overlap. The Kubernetes client and its garbage stay off the main heap.
//
// The workstation's direct flows to agents (daemons/user/direct-links.ts) run here too, whole: each
// intercepted connection is a stream of its own on a port-forward to the agent's pod, carrying the tunnel's
// framed messages (tunnel/framed-call.ts), and this thread dials the local target and pumps the flow. So
// such a connection's bytes cross no thread and no HTTP/2: the main thread only passes on the agent's
// DialRequest.
//
// The thread takes the kubeconfig flags, not a KubeConfig: it loads the client itself, so the main thread
// never imports it.
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import type { Level } from '../logging/logger.js';
import { UsageError } from '../netaddr/parse.js';
import type { StreamInfo } from '../rpc/gen/manager.js';
import type { ManagerForward, PodStreams } from './port-forward.js';

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
  /**
   * A local listener (127.0.0.1:PORT) whose every connection is forwarded to `port` of one pod, on this
   * thread too: an agent's direct port (agent/direct.ts). close() removes it and its connections. `flow`
   * runs one intercepted connection on a port-forward stream of its own to that port, dialing `target`.
   */
  forwardToPod(namespace: string, pod: string, port: number): Promise<PodForward>;
  /**
   * The user's access to the cluster for the root daemon's own port-forward to the manager
   * (kube/cluster-access.ts): resolved here, as the user, each time (an exec plugin's cached token until
   * it expires); rejects when the credential is one the root daemon could not use.
   */
  access(): Promise<string>;
  /** The thread logs at `level` from now on (tp loglevel). */
  setLogLevel(level: Level): void;
}

export interface PodForward extends ManagerForward {
  /**
   * Resolves once the flow runs; rejects when no port-forward stream to the pod could be opened.
   * `peerTakesWindows`: the agent takes WINDOW frames (tunnel/framed-call.ts).
   */
  flow(info: StreamInfo, target: { host: string; port: number }, peerTakesWindows: boolean): Promise<void>;
  /** The agent takes flow connections: open the port-forward for them (and a spare) ahead of need. */
  warm(): void;
}

/** Main thread -> port-forward thread. */
type Request =
  | 'close'
  | { op: 'log-level'; level: Level }
  | { op: 'pod'; id: number; namespace: string; pod: string; port: number }
  | { op: 'close-pod'; id: number }
  | { op: 'warm'; id: number }
  | { op: 'access'; id: number }
  | {
      op: 'flow';
      id: number;
      pod: number;
      info: StreamInfo;
      target: { host: string; port: number };
      peerTakesWindows: boolean;
    };
/** Port-forward thread -> main thread, after Started. */
type Reply = { id: number; address?: string; access?: string; error?: string };

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
      const waiting = new Map<number, (r: Reply) => void>();
      let nextId = 1;
      let gone = false;
      worker.on('message', (r: Reply) => {
        waiting.get(r.id)?.(r);
        waiting.delete(r.id);
      });
      worker.once('exit', () => {
        gone = true;
        for (const answer of waiting.values()) answer({ id: 0, error: 'the port-forward thread exited' });
        waiting.clear();
      });
      const post = (r: Request) => worker.postMessage(r);
      resolve({
        ...facts,
        close: () => {
          post('close');
          return exited;
        },
        setLogLevel: (level) => {
          if (!gone) post({ op: 'log-level', level });
        },
        access: () => {
          if (gone) return Promise.reject(new Error('the port-forward thread exited'));
          const id = nextId++;
          return new Promise<string>((done, fail) => {
            waiting.set(id, (r) =>
              r.access === undefined ? fail(new Error(r.error ?? 'no cluster access')) : done(r.access),
            );
            post({ op: 'access', id });
          });
        },
        forwardToPod: (namespace, pod, port) => {
          if (gone) return Promise.reject(new Error('the port-forward thread exited'));
          const podId = nextId++;
          return new Promise<PodForward>((done, fail) => {
            waiting.set(podId, (r) => {
              if (r.error !== undefined || r.address === undefined) fail(new Error(r.error ?? 'no address'));
              else
                done({
                  address: r.address,
                  close: async () => post({ op: 'close-pod', id: podId }),
                  warm: () => post({ op: 'warm', id: podId }),
                  flow: (info, target, peerTakesWindows) => {
                    if (gone) return Promise.reject(new Error('the port-forward thread exited'));
                    const id = nextId++;
                    return new Promise<void>((opened, failed) => {
                      waiting.set(id, (f) => (f.error === undefined ? opened() : failed(new Error(f.error))));
                      post({ op: 'flow', id, pod: podId, info, target, peerTakesWindows });
                    });
                  },
                });
            });
            post({ op: 'pod', id: podId, namespace, pod, port });
          });
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
    { forwardToManager, forwardToPod, PodStreams: Streams },
    { DEFAULT_MANAGER_NAMESPACE },
    { FLOW_MAGIC, FlowWindowGroup },
    { dialTarget },
    { exportClusterAccess },
  ] = await Promise.all([
    import('../logging/logger.js'),
    import('./kubeconfig.js'),
    import('./port-forward.js'),
    import('./annotations.js'),
    import('../tunnel/framed-call.js'),
    import('../tunnel/flow.js'),
    import('./cluster-access.js'),
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
  // 'close': the listeners and their connections go, then the thread (process.exit ends only this thread).
  const pods = new Map<number, { forward: Promise<ManagerForward | undefined>; streams: PodStreams }>();
  const flowLog = createLogger('connector/direct');
  // The intercepted connections' flows, to every pod, share this thread and the API server: their windows.
  const windows = new FlowWindowGroup();
  port.on('message', (m: Request) => {
    if (m === 'close') {
      for (const p of pods.values()) p.streams.close();
      void Promise.all([...pods.values()].map((p) => p.forward.then((f) => f?.close())))
        .then(() => forward.close())
        .finally(() => process.exit(0));
      return;
    }
    if (m.op === 'log-level') {
      setLevel(m.level);
    } else if (m.op === 'access') {
      exportClusterAccess(loaded.kc).then(
        (access) => port.postMessage({ id: m.id, access } satisfies Reply),
        (e: Error) => port.postMessage({ id: m.id, error: e.message } satisfies Reply),
      );
    } else if (m.op === 'pod') {
      const opened = forwardToPod(loaded.kc, log, m.namespace, m.pod, m.port).then(
        (f) => {
          port.postMessage({ id: m.id, address: f.address } satisfies Reply);
          return f;
        },
        (e: Error) => {
          port.postMessage({ id: m.id, error: e.message } satisfies Reply);
          return undefined;
        },
      );
      // Every connection to the agent's direct port is a flow connection: its magic goes first, so a spare
      // one can wait at the agent for its OPEN.
      pods.set(m.id, {
        forward: opened,
        streams: new Streams(loaded.kc, log, m.namespace, { pod: m.pod, port: m.port }, FLOW_MAGIC, windows),
      });
    } else if (m.op === 'warm') {
      // The agent takes flow connections: the first intercepted connection should not wait for the upgrade.
      pods.get(m.id)?.streams.warm();
    } else if (m.op === 'close-pod') {
      const p = pods.get(m.id);
      pods.delete(m.id);
      p?.streams.close();
      void p?.forward.then((x) => x?.close());
    } else if (m.op === 'flow') {
      const p = pods.get(m.pod);
      if (!p) {
        port.postMessage({ id: m.id, error: 'the port-forward to the pod was closed' } satisfies Reply);
        return;
      }
      p.streams.open().then(
        (bytes) => {
          // When the flow ends cleanly the stream carries the pod's next one.
          void dialTarget(p.streams.flowStream(bytes, m.peerTakesWindows), m.info, m.target, flowLog);
          port.postMessage({ id: m.id } satisfies Reply);
        },
        (e: Error) => port.postMessage({ id: m.id, error: e.message } satisfies Reply),
      );
    }
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
