// The agent's side of eBPF capture: put a listening socket in tp_listeners for a captured port while an
// intercept of that port is active, and take it out when the intercept ends. When the agent exits, the
// kernel drops its sockets from the map by itself, so traffic falls through to the app.
// Bundled into the agent: imports only koffi (through libbpf.ts) and pure modules.
import * as fs from 'node:fs';
import type * as net from 'node:net';
import { ENV } from '../agentconfig/env.js';
import { UsageError } from '../netaddr/parse.js';
import { planPortChanges } from './capture-config.js';
import { BpfError } from './libbpf.js';
import { BpfMap } from './objects.js';
import {
  DEFAULT_PIN_ROOT,
  decodePortKey,
  encodePortKey,
  encodeSocketFd,
  LISTENERS_MAP,
  MAP_LAYOUT,
  PORTS_MAP,
  pinDirFor,
} from './steering-keys.js';

/** The pin directory of this process's network namespace (where tp-init apply --mechanism ebpf pinned). */
export function steeringPinDir(pinRoot = DEFAULT_PIN_ROOT, netnsPath = '/proc/self/ns/net'): string {
  return pinDirFor(fs.statSync(netnsPath).ino, pinRoot);
}

/** The file descriptor of a listening net.Server (libuv keeps it on the private handle). */
export function listenerFd(server: net.Server): number {
  const fd = (server as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new Error('the server has no socket file descriptor: call registerListener after it is listening');
  }
  return fd;
}

function openMap(pinDir: string, name: keyof typeof MAP_LAYOUT): BpfMap {
  const { keySize, valueSize } = MAP_LAYOUT[name];
  let map: BpfMap | undefined;
  try {
    map = BpfMap.openPinned(`${pinDir}/${name}`, name, keySize, valueSize);
  } catch (err) {
    if (err instanceof BpfError && (err.errno === 13 /* EACCES */ || err.errno === 1) /* EPERM */) {
      throw new BpfError(
        `the agent (UID ${process.getuid?.()}) may not open ${pinDir}/${name}: pass its UID to \`tp-init apply --mechanism ebpf --agent-uid\` (Linux >= 6.5), or give the agent CAP_BPF`,
        err.errno,
      );
    }
    throw err;
  }
  if (!map) {
    throw new BpfError(
      `eBPF capture is not applied in this pod: ${pinDir}/${name} is missing (run \`tp-init apply --mechanism ebpf\` first, or use ${ENV.mechanism}=iptables)`,
      2,
    );
  }
  return map;
}

/** The ports tp-init captured, i.e. the ones the agent may steer. */
export function capturedPorts(pinDir: string): number[] {
  const ports = openMap(pinDir, PORTS_MAP);
  try {
    return ports
      .keys()
      .map(decodePortKey)
      .sort((a, b) => a - b);
  } finally {
    ports.close();
  }
}

/**
 * Steers new connections to `port` to the listening socket socketFd (the same socket may serve several
 * ports: the accepted socket's localPort tells them apart). Replaces an earlier registration of the port.
 */
export function registerListener(pinDir: string, port: number, socketFd: number): void {
  const key = encodePortKey(port);
  const ports = openMap(pinDir, PORTS_MAP);
  try {
    if (ports.lookup(key) === undefined) {
      const captured = ports.keys().map(decodePortKey);
      throw new BpfError(
        `port ${port} is not captured by eBPF in this pod (captured: ${captured.join(',') || 'none'}): add it to the ports tp-init captures`,
        22,
      );
    }
  } finally {
    ports.close();
  }
  const listeners = openMap(pinDir, LISTENERS_MAP);
  try {
    listeners.update(key, encodeSocketFd(socketFd));
  } catch (err) {
    if (err instanceof BpfError && (err.errno === 95 /* EOPNOTSUPP */ || err.errno === 22)) {
      throw new BpfError(
        `socket ${socketFd} cannot take port ${port}'s connections: it must be a listening TCP socket (${err.message})`,
        err.errno,
      );
    }
    throw err;
  } finally {
    listeners.close();
  }
}

/** Stops steering `port`: new connections go to the app again. Returns false when it was not steered. */
export function unregisterListener(pinDir: string, port: number): boolean {
  const listeners = openMap(pinDir, LISTENERS_MAP);
  try {
    return listeners.delete(encodePortKey(port));
  } finally {
    listeners.close();
  }
}

export interface SteeringChange {
  registered: number[];
  unregistered: number[];
  /** Ports that could not be steered, with why (the intercept of such a port cannot be served). */
  failed: { port: number; message: string }[];
}

/**
 * The agent's steering state: sync() with the app ports that have an active intercept puts their listeners
 * in tp_listeners and takes the others out, so only intercepted ports ever reach the agent.
 */
export class ListenerSteering {
  private readonly steered = new Set<number>();

  /** @param listenerFdOf the fd of the listening socket that serves an app port (see listenerFd). */
  constructor(
    readonly pinDir: string,
    private readonly listenerFdOf: (appPort: number) => number | undefined,
  ) {}

  /**
   * For the agent's start: finds this pod's pins and checks that tp-init captured every app port the agent
   * serves, so a mismatch fails the agent at once rather than at the first intercept.
   */
  static open(
    appPorts: readonly number[],
    listenerFdOf: (appPort: number) => number | undefined,
    pinRoot = DEFAULT_PIN_ROOT,
  ): ListenerSteering {
    // A configuration problem the agent reports and exits on: UsageError, printed without a stack.
    const pinDir = steeringPinDir(pinRoot);
    let captured: number[];
    try {
      captured = capturedPorts(pinDir);
    } catch (err) {
      throw err instanceof BpfError ? new UsageError(err.message) : err;
    }
    const missing = appPorts.filter((p) => !captured.includes(p));
    if (missing.length > 0) {
      throw new UsageError(
        `eBPF capture in this pod does not capture port ${missing.join(',')} (it captures ${captured.join(',') || 'none'}): run tp-init apply --mechanism ebpf with the same ports as ${ENV.ports}`,
      );
    }
    return new ListenerSteering(pinDir, listenerFdOf);
  }

  sync(activePorts: Iterable<number>): SteeringChange {
    const active = [...new Set(activePorts)];
    const { add, remove } = planPortChanges([...this.steered], active);
    const change: SteeringChange = { registered: [], unregistered: [], failed: [] };
    for (const port of remove) {
      try {
        unregisterListener(this.pinDir, port);
      } catch (err) {
        // Maps gone (tp-init cleanup): nothing is steered any more, which is what was asked.
        if (!(err instanceof BpfError && err.errno === 2)) {
          change.failed.push({ port, message: (err as Error).message });
          continue;
        }
      }
      this.steered.delete(port);
      change.unregistered.push(port);
    }
    // Every active port is (re)registered: an update is idempotent, and it heals maps that tp-init
    // replaced (a new program version) while the agent ran.
    for (const port of active) {
      try {
        const fd = this.listenerFdOf(port);
        if (fd === undefined) throw new Error(`the agent has no listener for app port ${port}`);
        registerListener(this.pinDir, port, fd);
        this.steered.add(port);
        if (add.includes(port)) change.registered.push(port);
      } catch (err) {
        this.steered.delete(port);
        change.failed.push({ port, message: (err as Error).message });
      }
    }
    return change;
  }

  /** The ports currently steered to the agent. */
  ports(): number[] {
    return [...this.steered].sort((a, b) => a - b);
  }
}

/**
 * Whether tp-init applied eBPF capture to this process's network namespace (it falls back to iptables where
 * the kernel or the capabilities do not allow it): the agent asks before steering.
 */
export function ebpfCaptureApplied(pinRoot = DEFAULT_PIN_ROOT): boolean {
  return fs.existsSync(`${steeringPinDir(pinRoot)}/${LISTENERS_MAP}`);
}
