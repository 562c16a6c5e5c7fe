// The Docker engine kind drives. A daemon the user runs is used as it is and never stopped. Otherwise
// tp-kind starts Debian's dockerd itself, configured to change as little of the host as it can (no
// iptables rules, no docker0 bridge, no ip_forward or masquerading: the cluster reaches nothing beyond
// this machine), with its own socket, state under the cache directory (so the node image survives for
// the next run) and an OCI runtime wrapper (below); `stopOwnDocker` ends it and checks that nothing of it
// is left: no process, no bridge, no DOCKER chain, the FORWARD policy as before.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { waitFor } from '../command/wait.js';
import { runCommand } from '../lab/command.js';
import { startDetached, stopProcess, type TrackedProcess } from '../lab/processes.js';
import { UsageError } from '../netaddr/parse.js';
import type { KindPaths } from './paths.js';

export interface DockerState {
  /** true: tp-kind started this dockerd and stops it. */
  ours: boolean;
  host: string;
  /** The dockerd tp-kind started (PID and start time: a recycled PID is never taken for it). */
  process?: TrackedProcess;
  /** The FORWARD policies before it started (iptables-nft and -legacy), to compare after. */
  forwardPolicy?: string[];
}

/**
 * What the runtime wrapper changes in a container's capabilities: `drop`, the capabilities the kernel has
 * but this host's bounding set lacks; `grant`, those the bounding set has but Docker 20.10 does not know
 * (it knows none after CAP_AUDIT_READ), given to every spec that holds CAP_AUDIT_READ (privileged ones).
 */
export interface CapabilityFix {
  drop: string[];
  grant: string[];
}

/**
 * `docker run --privileged` (Docker 20.10) asks runc for every capability Docker knows: on a host whose
 * bounding set lacks one (CAP_SYS_RESOURCE here) every such container fails with "unable to apply caps",
 * and the capabilities newer than Docker's list (CAP_PERFMON, CAP_BPF: what eBPF capture needs inside
 * the node) are never given. This wrapper edits the container's (config.json) and exec's (--process)
 * specification accordingly, then runs runc: a kind node gets what the host can grant.
 */
export function runtimeWrapper(fix: CapabilityFix): string {
  const edits = [
    ...fix.drop.flatMap((c) => [`-e 's/,"${c}"//g'`, `-e 's/"${c}",//g'`, `-e 's/"${c}"//g'`]),
    ...(fix.grant.length > 0
      ? [`-e 's/"CAP_AUDIT_READ"/"CAP_AUDIT_READ",${fix.grant.map((c) => `"${c}"`).join(',')}/g'`]
      : []),
  ].join(' ');
  return [
    '#!/bin/sh',
    '# tp-kind: runc with the capabilities this host can grant (kind/docker.ts).',
    'spec=',
    'prev=',
    'for arg in "$@"; do',
    '  case "$prev" in --bundle|-b) spec="$arg/config.json" ;; --process|-p) spec="$arg" ;; esac',
    '  prev=$arg',
    'done',
    ...(edits ? [`if [ -n "$spec" ] && [ -f "$spec" ]; then sed -i ${edits} "$spec"; fi`] : []),
    'exec runc "$@"',
    '',
  ].join('\n');
}

const CAPABILITY_NAMES = [
  'CHOWN',
  'DAC_OVERRIDE',
  'DAC_READ_SEARCH',
  'FOWNER',
  'FSETID',
  'KILL',
  'SETGID',
  'SETUID',
  'SETPCAP',
  'LINUX_IMMUTABLE',
  'NET_BIND_SERVICE',
  'NET_BROADCAST',
  'NET_ADMIN',
  'NET_RAW',
  'IPC_LOCK',
  'IPC_OWNER',
  'SYS_MODULE',
  'SYS_RAWIO',
  'SYS_CHROOT',
  'SYS_PTRACE',
  'SYS_PACCT',
  'SYS_ADMIN',
  'SYS_BOOT',
  'SYS_NICE',
  'SYS_RESOURCE',
  'SYS_TIME',
  'SYS_TTY_CONFIG',
  'MKNOD',
  'LEASE',
  'AUDIT_WRITE',
  'AUDIT_CONTROL',
  'SETFCAP',
  'MAC_OVERRIDE',
  'MAC_ADMIN',
  'SYSLOG',
  'WAKE_ALARM',
  'BLOCK_SUSPEND',
  'AUDIT_READ',
  'PERFMON',
  'BPF',
  'CHECKPOINT_RESTORE',
];

/** The last capability Docker 20.10 knows (CAP_AUDIT_READ). */
const DOCKER_LAST_CAP = 37;

/** From /proc/self/status and the kernel's last capability: what the wrapper must drop and grant. */
export function capabilityFix(status: string, lastCap: number): CapabilityFix {
  const hex = /^CapBnd:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  if (!hex) return { drop: [], grant: [] };
  const bounding = BigInt(`0x${hex}`);
  const fix: CapabilityFix = { drop: [], grant: [] };
  for (let bit = 0; bit <= lastCap && bit < CAPABILITY_NAMES.length; bit++) {
    const name = `CAP_${CAPABILITY_NAMES[bit]}`;
    const held = (bounding & (1n << BigInt(bit))) !== 0n;
    if (!held && bit <= DOCKER_LAST_CAP) fix.drop.push(name);
    if (held && bit > DOCKER_LAST_CAP) fix.grant.push(name);
  }
  return fix;
}

async function answers(env: NodeJS.ProcessEnv): Promise<boolean> {
  const r = await runCommand(['docker', 'info', '--format', '{{.ServerVersion}}'], {
    check: false,
    env,
    timeoutMs: 20_000,
  }).catch(() => ({ code: 1 }));
  return r.code === 0;
}

/**
 * Each backend's ruleset as `*-save` prints it. Never `-S` or `-t TABLE`: those create the table they
 * name (legacy tables are made per namespace on first use, and stay); a plain save lists what exists.
 */
async function rulesets(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const tool of ['iptables-nft-save', 'iptables-legacy-save']) {
    const r = await runCommand([tool], { check: false }).catch(() => undefined);
    out[tool] = r?.code === 0 ? r.stdout : '';
  }
  return out;
}

/** The FORWARD policy per backend ("none": that backend has no filter table). */
export function forwardPolicy(ruleset: string): string {
  const filter = ruleset.split(/^\*/m).find((t) => t.startsWith('filter'));
  return /^:FORWARD (\S+)/m.exec(filter ?? '')?.[1] ?? 'none';
}

async function forwardPolicies(): Promise<string[]> {
  return Object.entries(await rulesets()).map(([tool, text]) => `${tool}: ${forwardPolicy(text)}`);
}

/** DOCKER_HOST for every docker and kind command. */
export function dockerEnv(state: DockerState): NodeJS.ProcessEnv {
  return { ...process.env, DOCKER_HOST: state.host };
}

/**
 * Uses a running Docker engine, or starts one of our own (`startedNow`: this call started it, so a container
 * in its data root was left by an engine that stopped without `tp-kind down`).
 */
export async function ensureDocker(
  p: KindPaths,
  progress: (line: string) => void,
): Promise<DockerState & { startedNow: boolean }> {
  const saved = readDockerState(p);
  if (saved && (await answers(dockerEnv(saved)))) return { ...saved, startedNow: false };
  const user = process.env.DOCKER_HOST || 'unix:///var/run/docker.sock';
  if (await answers({ ...process.env, DOCKER_HOST: user })) {
    const state: DockerState = { ours: false, host: user };
    writeDockerState(p, state);
    return { ...state, startedNow: false };
  }
  const dockerd = ['/usr/sbin/dockerd', '/usr/bin/dockerd'].find((f) => fs.existsSync(f));
  if (!dockerd)
    throw new UsageError('Docker is not installed: install it (apt-get install docker.io) and run again');
  const forwardPolicy = await forwardPolicies();
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const lastCap = Number(fs.readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8'));
  fs.mkdirSync(p.dockerRun, { recursive: true });
  fs.mkdirSync(p.dockerData, { recursive: true });
  fs.mkdirSync(path.dirname(p.runtimeWrapper), { recursive: true });
  fs.writeFileSync(p.runtimeWrapper, runtimeWrapper(capabilityFix(status, lastCap)), {
    mode: 0o755,
  });
  const host = `unix://${p.dockerSocket}`;
  progress('tp-kind: starting dockerd (no iptables, no docker0, no ip_forward)...');
  const started = await startDetached(
    [
      dockerd,
      `--data-root=${p.dockerData}`,
      `--exec-root=${path.join(p.dockerRun, 'exec')}`,
      `--pidfile=${path.join(p.dockerRun, 'dockerd.pid')}`,
      `--host=${host}`,
      '--iptables=false',
      '--ip6tables=false',
      '--ip-forward=false',
      '--ip-masq=false',
      '--bridge=none',
      `--add-runtime=tp-kind-runc=${p.runtimeWrapper}`,
      '--default-runtime=tp-kind-runc',
    ],
    p.dockerLog,
    path.join(p.root, 'dockerd.pid'),
  );
  const state: DockerState = { ours: true, host, process: started, forwardPolicy };
  writeDockerState(p, state);
  await waitFor(
    'dockerd to answer',
    async () => (await answers(dockerEnv(state))) || undefined,
    60_000,
    500,
  ).catch((err: Error) => {
    throw new Error(`${err.message}; its log: ${p.dockerLog}`);
  });
  return { ...state, startedNow: true };
}

export function readDockerState(p: KindPaths): DockerState | undefined {
  try {
    return JSON.parse(fs.readFileSync(p.dockerState, 'utf8')) as DockerState;
  } catch {
    return undefined;
  }
}

function writeDockerState(p: KindPaths, s: DockerState): void {
  fs.mkdirSync(path.dirname(p.dockerState), { recursive: true });
  fs.writeFileSync(p.dockerState, `${JSON.stringify(s, null, 2)}\n`);
}

/** What Docker left on the host (empty: nothing). Processes are matched by our socket and exec root. */
export async function dockerLeftovers(p: KindPaths, state: DockerState): Promise<string[]> {
  const found: string[] = [];
  const ps = await runCommand(['ps', '-eo', 'pid=,args='], { check: false });
  for (const line of ps.stdout.split('\n')) {
    if (line.includes(p.dockerRun) || line.includes(p.dockerSocket) || /docker-proxy/.test(line))
      found.push(`process ${line.trim()}`);
  }
  const links = await runCommand(['ip', '-o', 'link', 'show'], { check: false });
  for (const line of links.stdout.split('\n'))
    if (/^\d+: (docker0|br-[0-9a-f]{12})[:@]/.test(line))
      found.push(`interface ${line.split(':')[1]!.trim()}`);
  for (const [tool, text] of Object.entries(await rulesets()))
    if (/DOCKER/.test(text)) found.push(`${tool}: DOCKER chains or rules`);
  if (state.forwardPolicy) {
    const now = await forwardPolicies();
    if (now.join('\n') !== state.forwardPolicy.join('\n'))
      found.push(`FORWARD policy changed: ${state.forwardPolicy.join(', ')} -> ${now.join(', ')}`);
  }
  return found;
}

/** Stops the dockerd tp-kind started (containers and networks are removed first, by the caller). */
export async function stopOwnDocker(p: KindPaths, state: DockerState, progress: (line: string) => void) {
  if (!state.ours) return;
  if (state.process) {
    progress('tp-kind: stopping dockerd...');
    await stopProcess(state.process, 60_000);
  }
  fs.rmSync(path.join(p.root, 'dockerd.pid'), { force: true });
  fs.rmSync(p.dockerRun, { recursive: true, force: true });
  fs.rmSync(p.dockerState, { force: true });
}
