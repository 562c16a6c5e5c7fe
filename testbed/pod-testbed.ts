// A pod network namespace and a client network namespace joined by a veth, for the eBPF capture tests and
// the bench. Everything is created under the caller's prefix and removed by destroy(), synchronously, so
// it also runs from a process 'exit' handler.
import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface PodTestbed {
  podNetns: string;
  clientNetns: string;
  /** /run/netns/<podNetns>: what apply and status take as the network namespace. */
  podNetnsPath: string;
  podIp: string;
  clientIp: string;
  /** The same pair over IPv6 (ULA addresses, only inside the two namespaces). */
  podIp6: string;
  clientIp6: string;
  /**
   * Runs a command in the pod's network namespace only (nsenter keeps the mount namespace, so bpffs);
   * it is killed when this process dies.
   */
  spawnInPod(command: string, args: string[]): ChildProcess;
  /** curl from the client namespace; resolves with the body. */
  curlFromClient(url: string): Promise<string>;
  /** curl from inside the pod (e.g. to 127.0.0.1). */
  curlFromPod(url: string): Promise<string>;
  destroy(): void;
}

/** Runs `teardown` however the process ends: normally, on an uncaught error, or on SIGINT/SIGTERM. */
export function onProcessEnd(teardown: () => void): void {
  process.on('exit', teardown);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      teardown();
      process.exit(130);
    });
  }
}

const fixtures = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');
export const RESPONDER = path.join(fixtures, 'http-responder.js');
export const STEERING_LISTENER = path.join(fixtures, 'steering-listener.js');

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });

function curlIn(netns: string, url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'nsenter',
      [`--net=/run/netns/${netns}`, 'curl', '-sS', '--max-time', '10', url],
      (err, stdout, stderr) =>
        err ? reject(new Error(`curl ${url}: ${stderr || err.message}`)) : resolve(stdout),
    );
  });
}

/** prefix: the owner's namespace prefix plus something unique (e.g. `tpe-${process.pid}`); ≤ 10 chars. */
export function createPodTestbed(prefix: string, subnet = '10.251.0'): PodTestbed {
  const podNetns = `${prefix}-pod`;
  const clientNetns = `${prefix}-cli`;
  const podIf = `${prefix}p`;
  const clientIf = `${prefix}c`;
  const podIp = `${subnet}.2`;
  const clientIp = `${subnet}.1`;
  // Written in canonical form (no zero group to compress), as a peer address reads.
  const [, second, third] = subnet.split('.').map(Number);
  const subnet6 = `fd00:1:${second}:${third! + 1}:`;
  const podIp6 = `${subnet6}:2`;
  const clientIp6 = `${subnet6}:1`;
  const children = new Set<ChildProcess>();
  let destroyed = false;

  const destroy = () => {
    if (destroyed) return;
    destroyed = true;
    for (const child of children) if (child.exitCode === null && child.pid) child.kill('SIGKILL');
    for (const ns of [podNetns, clientNetns]) {
      try {
        sh('ip', ['netns', 'del', ns]); // takes the veth pair with it
      } catch {
        // not created
      }
    }
  };

  try {
    sh('ip', ['netns', 'add', podNetns]);
    sh('ip', ['netns', 'add', clientNetns]);
    sh('ip', ['link', 'add', podIf, 'type', 'veth', 'peer', 'name', clientIf]);
    sh('ip', ['link', 'set', podIf, 'netns', podNetns]);
    sh('ip', ['link', 'set', clientIf, 'netns', clientNetns]);
    for (const [ns, dev, ip, ip6] of [
      [podNetns, podIf, podIp, podIp6],
      [clientNetns, clientIf, clientIp, clientIp6],
    ] as const) {
      sh('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', dev]);
      sh('ip', ['-n', ns, 'addr', 'add', `${ip6}/64`, 'dev', dev, 'nodad']);
      sh('ip', ['-n', ns, 'link', 'set', dev, 'up']);
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
  } catch (err) {
    destroy();
    throw err;
  }

  return {
    podNetns,
    clientNetns,
    podNetnsPath: `/run/netns/${podNetns}`,
    podIp,
    clientIp,
    podIp6,
    clientIp6,
    spawnInPod(command, args) {
      // setpriv --pdeathsig: the child dies with the test process even when that is killed outright.
      const argv = [`--net=/run/netns/${podNetns}`, 'setpriv', '--pdeathsig', 'KILL', command, ...args];
      const child = spawn('nsenter', argv, {
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      children.add(child);
      child.on('exit', () => children.delete(child));
      return child;
    },
    curlFromClient: (url) => curlIn(clientNetns, url),
    curlFromPod: (url) => curlIn(podNetns, url),
    destroy,
  };
}

/**
 * The end of a test that captured with eBPF in a pod testbed: the capture taken out of the pod namespace
 * (`removeCapture`: bpf/mechanism.ts's cleanup, passed in so the test beds need not import it), the
 * namespaces, the test's pin root, and its hold on bpffs. Best effort and synchronous: it also runs from an
 * exit handler.
 */
export function teardownEbpfBed(
  bed: PodTestbed | undefined,
  pinRoot: string,
  bpffs: { release(): void } | undefined,
  removeCapture: (where: { netnsPath: string; pinRoot: string }) => unknown,
): void {
  try {
    if (bed && fs.existsSync(bed.podNetnsPath)) removeCapture({ netnsPath: bed.podNetnsPath, pinRoot });
  } catch {
    // the namespace goes next, which detaches the link anyway
  }
  bed?.destroy();
  if (fs.existsSync(pinRoot)) fs.rmdirSync(pinRoot);
  bpffs?.release();
}

/** Waits until the child prints a line matching `pattern` on stdout (fixtures print "ready …"). */
export function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const timer = setTimeout(
      () => done(new Error(`no line matching ${pattern} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onData = (d: Buffer) => {
      buffered += d.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      const line = lines.find((l) => pattern.test(l));
      if (line !== undefined) done(undefined, line);
    };
    const onExit = (code: number | null) => done(new Error(`exited (${code}) before printing ${pattern}`));
    const done = (err?: Error, line?: string) => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(line!);
    };
    child.stdout?.on('data', onData);
    child.on('exit', onExit);
  });
}
