// The main thread's side of the passthrough thread (passthrough-thread.ts): starts it on a duplicate of a
// listener's socket, tells it which app ports are intercepted (their connections come back here, to the
// listener's usual path), reads its counters, and stops it.

import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../logging/logger.js';
import { loadLibc } from '../sys/libc.js';
import {
  CONTROL_STOP,
  COUNT_DIAL_FAILURES,
  COUNT_PASSED,
  COUNTS_PER_PORT,
  type PassthroughInit,
  type ThreadMessage,
} from './passthrough-shared.js';

const F_DUPFD_CLOEXEC = 1030;

export interface PassthroughThreadOptions {
  /** The listening socket: the thread accepts on a duplicate, so the caller may close its own. */
  listenFd: number;
  appPorts: number[];
  loopback: PassthroughInit['loopback'];
  /** The app ports intercepted when it starts (then: routed()). */
  routed: Iterable<number>;
  /** A connection of an intercepted port: the caller owns `fd`. */
  onHandover(fd: number, appPort: number): void;
  /** The thread failed after it started: the caller listens again on `listenFd` (the duplicate). */
  onFailed(listenFd: number, reason: string): void;
  log: Logger;
}

/**
 * The thread's script: its own bundle beside the agent's (where import.meta.url is the bundle's:
 * build.mjs), or its module beside this one in dist/.
 */
function script(): string {
  const bundled = import.meta.url.endsWith('.cjs');
  return fileURLToPath(
    new URL(bundled ? './tp-agent-passthrough.cjs' : './passthrough-thread.js', import.meta.url),
  );
}

export class PassthroughThread {
  private readonly control: Int32Array;
  private readonly counts: Float64Array;
  private wakeFd = -1;
  private stopped = false;
  /** Resolves once the thread accepts; rejects with why it could not start. */
  ready: Promise<void> = Promise.resolve();

  private constructor(
    init: PassthroughInit,
    private readonly appPorts: number[],
  ) {
    this.control = new Int32Array(init.control);
    this.counts = new Float64Array(init.counts);
  }

  /**
   * Starts the thread; `ready` resolves once it accepts, or rejects (leaving `listenFd` alone) when it
   * cannot start. Throws when koffi cannot be loaded.
   */
  static start(o: PassthroughThreadOptions): PassthroughThread {
    const dup = loadLibc().func('int fcntl(int fd, int cmd, int arg)')(o.listenFd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) throw new Error('cannot duplicate the listening socket (fcntl failed)');
    const init: PassthroughInit = {
      listenFd: dup,
      appPorts: o.appPorts,
      loopback: o.loopback,
      control: new SharedArrayBuffer(4 * (1 + o.appPorts.length)),
      counts: new SharedArrayBuffer(8 * COUNTS_PER_PORT * o.appPorts.length),
      debug: o.log.enabled('debug'),
    };
    const thread = new PassthroughThread(init, o.appPorts);
    // Before the thread runs: no connection of an intercepted port may pass through in between.
    thread.routed(o.routed);
    const worker = new Worker(script(), { workerData: { passthrough: init } });
    // The agent lives on its session; a test's process ends when its listeners are closed.
    worker.unref();
    thread.ready = new Promise((resolve, reject) => {
      let started = false;
      const fail = (reason: string) => {
        if (thread.stopped) return;
        thread.stopped = true;
        process.off('exit', thread.exitHook);
        if (!started) {
          fs.closeSync(dup);
          reject(new Error(reason));
        } else o.onFailed(dup, reason);
      };
      worker.on('error', (e) => fail(e.message));
      worker.on('exit', (code) => fail(`the passthrough thread exited (code ${code})`));
      worker.on('message', (m: ThreadMessage) => {
        switch (m.t) {
          case 'ready':
            started = true;
            thread.wakeFd = m.wakeFd;
            // The process's exit waits for the thread: wake it at once instead of after its longest wait.
            // Closed while starting: the thread sees the stop flag before its first wait, and closes
            // the eventfd; nothing may be written to that fd number any more.
            if (!thread.stopped) process.once('exit', thread.exitHook);
            resolve();
            break;
          case 'failed':
            fail(m.message);
            break;
          case 'handover':
            o.onHandover(m.fd, m.appPort);
            break;
          case 'log':
            o.log[m.level](m.message, { errno: m.errno, appPort: m.appPort });
            break;
        }
      });
    });
    return thread;
  }

  /** The app ports whose connections go to the main thread from now on (their intercepts are active). */
  routed(ports: Iterable<number>): void {
    const set = new Set(ports);
    for (const [i, port] of this.appPorts.entries())
      Atomics.store(this.control, 1 + i, set.has(port) ? 1 : 0);
  }

  /** What the thread counted for an app port of this listener. */
  countsOf(appPort: number): { passedThrough: number; dialFailures: number } {
    const i = this.appPorts.indexOf(appPort) * COUNTS_PER_PORT;
    if (i < 0) return { passedThrough: 0, dialFailures: 0 };
    return {
      passedThrough: this.counts[i + COUNT_PASSED] as number,
      dialFailures: this.counts[i + COUNT_DIAL_FAILURES] as number,
    };
  }

  /** Stops the thread: it closes its listener and every connection it carries. */
  close(): void {
    if (this.stopped) return;
    this.stopped = true;
    process.off('exit', this.exitHook);
    this.wake();
  }

  private readonly exitHook = () => this.wake();

  private wake(): void {
    Atomics.store(this.control, CONTROL_STOP, 1);
    if (this.wakeFd < 0) return;
    const one = Buffer.alloc(8);
    one.writeUInt32LE(1, 0);
    try {
      fs.writeSync(this.wakeFd, one);
    } catch {
      // Already gone with the thread.
    }
  }
}
