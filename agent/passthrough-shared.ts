// What the agent's main thread and its passthrough thread (passthrough-thread.ts) share: the layout of
// their shared memory and the messages the thread sends. Kept apart so the thread's bundle loads nothing
// of the agent's main side.

/** control[0]: set to 1 to stop the thread. control[1 + i]: nonzero while app port i's connections go to the main thread. */
export const CONTROL_STOP = 0;

/** counts[i * COUNTS_PER_PORT + …]: app port i's connections passed through, and its failed dials. */
export const COUNTS_PER_PORT = 2;
export const COUNT_PASSED = 0;
export const COUNT_DIAL_FAILURES = 1;

/** The thread's workerData.passthrough. */
export interface PassthroughInit {
  /** A listening socket of the agent's own (a duplicate: the main thread's server is closed). */
  listenFd: number;
  appPorts: number[];
  /** The loopback address the app is dialed at, or by the client's family on a dual-stack listener. */
  loopback: '127.0.0.1' | '::1' | 'by-family';
  /** Int32Array: CONTROL_STOP, then one flag per app port. */
  control: SharedArrayBuffer;
  /** Float64Array: COUNTS_PER_PORT per app port, written by the thread only. */
  counts: SharedArrayBuffer;
  /** Report every refused dial (debug logging). */
  debug: boolean;
}

export type ThreadMessage =
  /** Running; writing 8 bytes to wakeFd wakes it (to see the stop flag). */
  | { t: 'ready'; wakeFd: number }
  /** Could not start (koffi missing, epoll refused): the main thread keeps the connections. */
  | { t: 'failed'; message: string }
  /** A connection of an intercepted port, accepted: the main thread owns its fd now. */
  | { t: 'handover'; fd: number; appPort: number }
  | { t: 'log'; level: 'debug' | 'info' | 'warn'; message: string; errno?: number; appPort?: number };
