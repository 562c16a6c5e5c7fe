// One pod on this node, from binding to deletion: its sandbox (volumes, network namespace, DNS
// files), init containers in order, then its containers with restarts, probes and status, and the
// graceful teardown. Every change ends in `sync`, which converges towards the pod's spec and
// publishes the status when it changed; syncs never overlap.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { V1Pod, V1PodCondition, V1Service } from '@kubernetes/client-node';
import type { Logger } from '../../logging/logger.js';
import { type ImageContext, ImageError, resolveImage } from '../images/table.js';
import { ContainerLogWriter } from './container-logs.js';
import {
  type ExecTarget,
  execInContainer,
  type HostTools,
  renderStartScript,
  signalGroup,
  spawnContainer,
} from './container-process.js';
import { ContainerProbes, type ContainerRun, ContainerSlot } from './container-slot.js';
import { type ClusterDnsConfig, podHostname, podResolvConf, renderHosts, renderResolvConf } from './dns.js';
import type { PodFacts } from './downward-api.js';
import {
  ContainerConfigError,
  containerEnv,
  expandCommand,
  type FetchedObjects,
  processEnvironment,
  referencedObjects,
} from './env.js';
import type { EventRecorder } from './events.js';
import type { PersistentAddressPool } from './ipam.js';
import { apiErrorMessage, isNotFound, type NodeApi } from './kube-api.js';
import { commonRunAsUser, containerMounts, hostTargets, writeVolume } from './mounts.js';
import {
  netnsPath,
  type PodNetwork,
  podNetworkNames,
  setupPodNetwork,
  teardownPodNetwork,
} from './pod-network.js';
import { computePodStatus, type PodView, type TerminatedState, timestamp } from './pod-status.js';
import type { ProbeTarget } from './probes.js';
import type { CreatedPaths, NodeStateDir, PodRecord } from './state-dir.js';
import { projectVolume, requiredTokens, tokenKey, VolumeError } from './volumes.js';

/** Everything a pod worker needs from the node agent. */
export interface NodeContext {
  nodeName: string;
  nodeIP: string;
  bridge: string;
  gateway: string;
  podPrefix: number;
  clusterDns: ClusterDnsConfig;
  hostResolvConf: string;
  hostHosts: string;
  nodeAllocatable: Record<string, string>;
  tools: HostTools;
  images: ImageContext;
  state: NodeStateDir;
  addresses: PersistentAddressPool;
  createdPaths: CreatedPaths;
  api: NodeApi;
  events: EventRecorder;
  services(): readonly V1Service[];
  /** "kube-probe/1.34" */
  probeUserAgent: string;
  /** Where probes come from: the node's IP, which is also status.hostIP. */
  probeSourceIP: string | undefined;
  log: Logger;
}

export type TerminationMode =
  /** deletionTimestamp is set: stop gracefully, publish, tear down, delete the object. */
  | 'delete'
  /** The object is gone from the API already (force delete): stop and tear down. */
  | 'orphaned'
  /** The node agent stops: stop and tear down, leave the API object alone. */
  | 'shutdown';

const VOLUME_REFRESH_MS = 60_000;
const CONFIG_RETRY_MS = 10_000;
const SANDBOX_RETRY_MS = 5_000;
const MAX_IMAGE_BACKOFF_MS = 300_000;
/** The kubelet never kills with less grace than this. */
const MIN_GRACE_MS = 2_000;
const SHUTDOWN_GRACE_MS = 10_000;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class PodWorker {
  readonly uid: string;
  private pod: V1Pod;
  private readonly log: Logger;
  private readonly initSlots: ContainerSlot[];
  private readonly appSlots: ContainerSlot[];
  private network: PodNetwork | undefined;
  private podIP: string | undefined;
  private sandboxReady = false;
  private sandboxMessage: string | undefined;
  private startTime: string | undefined;
  private nextVolumeRefresh = 0;
  private readonly tokens = new Map<string, { token: string; refreshAt: number }>();
  /** The pod reached Succeeded/Failed: nothing is restarted any more. */
  private completed = false;
  private termination: Promise<void> | undefined;
  private stopped = false;
  private syncing = false;
  private syncAgain = false;
  private kickTimer: NodeJS.Timeout | undefined;
  private kickAtMs = Number.POSITIVE_INFINITY;
  private lastPublished: string | undefined;
  private lastPublishedStatus: Record<string, unknown> | undefined;

  constructor(
    private readonly ctx: NodeContext,
    pod: V1Pod,
    private readonly adopted: PodRecord | undefined,
  ) {
    this.uid = pod.metadata!.uid!;
    this.pod = pod;
    this.log = ctx.log.child(`${pod.metadata!.namespace}/${pod.metadata!.name}`);
    this.initSlots = (pod.spec?.initContainers ?? []).map((c) => new ContainerSlot(c, true));
    this.appSlots = (pod.spec?.containers ?? []).map((c) => new ContainerSlot(c, false));
    if (adopted) this.adoptStatus();
    const phase = pod.status?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') {
      // Finished before this node agent started: its status is final, nothing is run again (its
      // logs stay readable when the state directory still has them).
      this.completed = true;
      this.lastPublished = 'inherited';
    }
  }

  get namespace(): string {
    return this.pod.metadata!.namespace!;
  }

  get name(): string {
    return this.pod.metadata!.name!;
  }

  get object(): V1Pod {
    return this.pod;
  }

  get ip(): string | undefined {
    return this.podIP;
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** A newer version of the pod from the API. */
  update(pod: V1Pod): void {
    if (pod.metadata?.uid !== this.uid) return;
    this.pod = pod;
    this.kick();
  }

  /** Schedules a sync now, or after delayMs (the earliest requested time wins). */
  kick(delayMs = 0): void {
    if (this.stopped) return;
    if (delayMs > 0) {
      const at = Date.now() + delayMs;
      if (at >= this.kickAtMs) return;
      clearTimeout(this.kickTimer);
      this.kickAtMs = at;
      this.kickTimer = setTimeout(() => {
        this.kickAtMs = Number.POSITIVE_INFINITY;
        this.kick();
      }, delayMs);
      this.kickTimer.unref();
      return;
    }
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    this.syncing = true;
    void this.runSyncs();
  }

  private async runSyncs(): Promise<void> {
    do {
      this.syncAgain = false;
      try {
        await this.sync();
      } catch (err) {
        this.log.error('pod sync failed', { error: err });
        this.kick(SANDBOX_RETRY_MS);
      }
    } while (this.syncAgain && !this.stopped);
    this.syncing = false;
  }

  /** Stops the pod; resolves when its processes are gone and its sandbox is torn down. */
  terminate(mode: TerminationMode): Promise<void> {
    this.termination ??= this.runTermination(mode);
    return this.termination;
  }

  private async sync(): Promise<void> {
    if (this.stopped || this.termination) return;
    if (this.pod.metadata?.deletionTimestamp) {
      await this.terminate('delete');
      return;
    }
    if (this.completed) {
      await this.publish();
      return;
    }
    this.startTime ??= this.pod.status?.startTime ? toTime(this.pod.status.startTime) : timestamp(new Date());
    if (!this.sandboxReady) {
      try {
        await this.setUpSandbox();
      } catch (err) {
        this.sandboxMessage = err instanceof Error ? err.message : String(err);
        this.log.warn('pod sandbox not ready', { reason: this.sandboxMessage });
        await this.publish();
        this.kick(SANDBOX_RETRY_MS);
        return;
      }
    } else if (Date.now() >= this.nextVolumeRefresh) {
      try {
        await this.projectVolumes();
      } catch (err) {
        this.log.warn('volume refresh failed', { error: apiErrorMessage(err) });
        this.nextVolumeRefresh = Date.now() + SANDBOX_RETRY_MS;
      }
    }

    let initialized = true;
    for (const slot of this.initSlots) {
      if (slot.restartable) {
        if (!slot.running) await this.startContainer(slot);
        if (!slot.run?.probes.started) {
          initialized = false;
          break;
        }
        continue;
      }
      if (slot.succeeded) continue;
      initialized = false;
      if (!slot.running && !slot.finalState) await this.startContainer(slot);
      break; // one init container at a time, in order
    }
    if (initialized) {
      for (const slot of this.appSlots) {
        if (!slot.running && !slot.finalState) await this.startContainer(slot);
      }
    }
    const phase = await this.publish();
    if (phase === 'Succeeded' || phase === 'Failed') await this.complete();
  }

  // ---- sandbox -----------------------------------------------------------------------------

  private facts(): PodFacts {
    return {
      pod: this.pod,
      podIP: this.podIP,
      hostIP: this.ctx.nodeIP,
      nodeName: this.ctx.nodeName,
      nodeAllocatable: this.ctx.nodeAllocatable,
    };
  }

  private event(type: 'Normal' | 'Warning', reason: string, message: string, container?: string): void {
    this.ctx.events.record(
      {
        namespace: this.namespace,
        kind: 'Pod',
        name: this.name,
        uid: this.uid,
        fieldPath: container ? this.fieldPath(container) : undefined,
      },
      type,
      reason,
      message,
    );
  }

  private fieldPath(container: string): string {
    const init = this.initSlots.findIndex((s) => s.name === container);
    if (init >= 0) return `spec.initContainers{${container}}`;
    return `spec.containers{${container}}`;
  }

  private async fetchObjects(): Promise<FetchedObjects> {
    const refs = referencedObjects(this.pod);
    const objects: FetchedObjects = { configMaps: new Map(), secrets: new Map() };
    await Promise.all([
      ...[...refs.configMaps].map(async (n) => {
        objects.configMaps.set(n, await this.ctx.api.configMap(this.namespace, n));
      }),
      ...[...refs.secrets].map(async (n) => {
        objects.secrets.set(n, await this.ctx.api.secret(this.namespace, n));
      }),
    ]);
    return objects;
  }

  private async currentTokens(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const spec of requiredTokens(this.pod)) {
      const key = tokenKey(spec);
      let cached = this.tokens.get(key);
      if (!cached || Date.now() >= cached.refreshAt) {
        const { token, expiresAt } = await this.ctx.api.podToken(
          this.pod,
          spec.audience,
          spec.expirationSeconds,
        );
        // Refresh at 80% of the lifetime, as the kubelet does.
        const refreshAt = Date.now() + 0.8 * Math.max(0, expiresAt.getTime() - Date.now());
        cached = { token, refreshAt };
        this.tokens.set(key, cached);
      }
      out.set(key, cached.token);
    }
    return out;
  }

  private volumePath(name: string): string | undefined {
    const volume = (this.pod.spec?.volumes ?? []).find((v) => v.name === name);
    if (!volume) return undefined;
    return volume.hostPath ? volume.hostPath.path : this.ctx.state.volumeDir(this.uid, name);
  }

  private async projectVolumes(): Promise<void> {
    const volumes = this.pod.spec?.volumes ?? [];
    if (volumes.length === 0) {
      this.nextVolumeRefresh = Number.POSITIVE_INFINITY;
      return;
    }
    const [objects, tokens] = await Promise.all([this.fetchObjects(), this.currentTokens()]);
    const owner = { fsGroup: this.pod.spec?.securityContext?.fsGroup, uid: commonRunAsUser(this.pod) };
    for (const volume of volumes) {
      try {
        const content = projectVolume(volume, { facts: this.facts(), objects, tokens });
        writeVolume(this.volumePath(volume.name)!, content, owner);
      } catch (err) {
        const message = `MountVolume.SetUp failed for volume "${volume.name}" : ${err instanceof VolumeError ? err.message : apiErrorMessage(err)}`;
        this.event('Warning', 'FailedMount', message);
        throw new Error(message);
      }
    }
    const soonestToken = Math.min(...[...this.tokens.values()].map((t) => t.refreshAt));
    this.nextVolumeRefresh = Math.min(Date.now() + VOLUME_REFRESH_MS, soonestToken);
  }

  private async setUpSandbox(): Promise<void> {
    const spec = this.pod.spec!;
    const state = this.ctx.state;
    fs.mkdirSync(state.podDir(this.uid), { recursive: true, mode: 0o700 });
    const record: PodRecord = {
      uid: this.uid,
      namespace: this.namespace,
      name: this.name,
      hostNetwork: spec.hostNetwork === true,
    };
    state.writePodRecord(record);
    // Volumes before the network, as the kubelet mounts them before it creates the sandbox.
    await this.projectVolumes();
    if (spec.hostNetwork) {
      this.podIP = this.ctx.nodeIP;
    } else {
      const names = podNetworkNames(this.uid);
      const ip = this.ctx.addresses.allocate(this.uid);
      this.network = {
        ...names,
        ip,
        prefix: this.ctx.podPrefix,
        gateway: this.ctx.gateway,
      };
      state.writePodRecord({ ...record, ...names, ip });
      try {
        await setupPodNetwork(
          this.ctx.tools,
          this.ctx.bridge,
          this.network,
          spec.securityContext?.sysctls ?? [],
        );
      } catch (err) {
        this.event(
          'Warning',
          'FailedCreatePodSandBox',
          `Failed to create pod sandbox: ${(err as Error).message}`,
        );
        throw err;
      }
      this.podIP = ip;
    }
    const etc = path.join(state.podDir(this.uid), 'etc');
    const conf = podResolvConf(this.pod, this.ctx.clusterDns, this.ctx.hostResolvConf);
    state.writeFile(path.join(etc, 'resolv.conf'), renderResolvConf(conf));
    const hosts = spec.hostNetwork
      ? this.ctx.hostHosts
      : renderHosts(this.pod, this.podIP, this.ctx.clusterDns.domain);
    state.writeFile(path.join(etc, 'hosts'), hosts);
    this.sandboxReady = true;
    this.sandboxMessage = undefined;
    this.log.info('pod sandbox ready', { ip: this.podIP, netns: this.network?.netns ?? 'host' });
  }

  // ---- containers ----------------------------------------------------------------------------

  private async startContainer(slot: ContainerSlot): Promise<void> {
    const now = Date.now();
    if (now < slot.retryAt) {
      this.kick(slot.retryAt - now);
      return;
    }
    const last = slot.lastTermination;
    if (last && !slot.restartAfterAdoption) {
      const at = slot.backoff.restartAt(Date.parse(last.finishedAt), now);
      if (at !== undefined) {
        const message = `back-off ${slot.backoff.seconds}s restarting failed container=${slot.name} pod=${this.name}_${this.namespace}(${this.uid})`;
        if (slot.waiting.reason !== 'CrashLoopBackOff') {
          this.event('Warning', 'BackOff', 'Back-off restarting failed container', slot.name);
        }
        slot.waiting = { reason: 'CrashLoopBackOff', message };
        this.kick(at - now);
        return;
      }
    }
    const spec = slot.spec;
    let vars: ReturnType<typeof containerEnv>;
    try {
      const objects = await this.fetchObjects();
      vars = containerEnv(spec, { facts: this.facts(), objects, services: this.ctx.services() });
      const runAsNonRoot = spec.securityContext?.runAsNonRoot ?? this.pod.spec?.securityContext?.runAsNonRoot;
      const uid = spec.securityContext?.runAsUser ?? this.pod.spec?.securityContext?.runAsUser;
      if (runAsNonRoot && (uid === undefined || uid === 0)) {
        throw new ContainerConfigError('container has runAsNonRoot and image will run as root');
      }
    } catch (err) {
      if (!(err instanceof ContainerConfigError)) throw err;
      this.failStart(slot, 'CreateContainerConfigError', err.message, CONFIG_RETRY_MS);
      return;
    }
    let argv: string[];
    try {
      const resolved = resolveImage(
        {
          image: spec.image ?? '',
          command: expandCommand(spec.command, vars),
          args: expandCommand(spec.args, vars),
        },
        this.ctx.images,
      );
      argv = resolved.argv;
      if (slot.imageId !== resolved.imageId) {
        this.event(
          'Normal',
          'Pulled',
          `Container image "${spec.image}" already present on machine`,
          slot.name,
        );
      }
      slot.imageId = resolved.imageId;
      slot.imagePullAttempts = 0;
    } catch (err) {
      if (!(err instanceof ImageError)) throw err;
      if (err.notInTable) {
        slot.imagePullAttempts++;
        const reason = slot.imagePullAttempts > 1 ? 'ImagePullBackOff' : 'ErrImagePull';
        const delay = Math.min(CONFIG_RETRY_MS * 2 ** (slot.imagePullAttempts - 1), MAX_IMAGE_BACKOFF_MS);
        if (slot.imagePullAttempts === 1) {
          this.event('Warning', 'Failed', `Failed to pull image "${spec.image}": ${err.message}`, slot.name);
        }
        slot.waiting = { reason, message: err.message };
        slot.retryAt = now + delay;
        this.kick(delay);
      } else {
        this.failStart(slot, 'CreateContainerError', err.message, CONFIG_RETRY_MS);
      }
      return;
    }

    const podSecurity = this.pod.spec?.securityContext;
    const uid = spec.securityContext?.runAsUser ?? podSecurity?.runAsUser;
    const gid = spec.securityContext?.runAsGroup ?? podSecurity?.runAsGroup;
    const groups = [...(podSecurity?.supplementalGroups ?? [])];
    if (podSecurity?.fsGroup !== undefined) groups.push(podSecurity.fsGroup);
    const hostname = this.pod.spec?.hostNetwork ? undefined : podHostname(this.pod);
    const env = processEnvironment(spec, hostname ?? this.ctx.nodeName, uid ?? 0, vars);
    const etc = path.join(this.ctx.state.podDir(this.uid), 'etc');
    let mounts: ReturnType<typeof containerMounts>;
    try {
      mounts = containerMounts(spec, {
        resolvConf: path.join(etc, 'resolv.conf'),
        hosts: path.join(etc, 'hosts'),
        volume: (name) => this.volumePath(name),
        isFile: (p) => {
          try {
            return !fs.statSync(p).isDirectory();
          } catch {
            return false;
          }
        },
      });
      for (const m of hostTargets(mounts)) this.ctx.createdPaths.ensure(m.target, m.isFile);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.failStart(slot, 'CreateContainerConfigError', message, CONFIG_RETRY_MS);
      return;
    }

    // The pod may have been told to stop while this start was being prepared.
    if (this.termination || this.stopped || this.completed) return;
    if (last) {
      if (!slot.restartAfterAdoption) slot.backoff.recordRestart(Date.parse(last.finishedAt));
      slot.restartAfterAdoption = false;
      slot.restartCount++;
    }
    const launch = {
      netnsPath: this.network ? netnsPath(this.network.netns) : undefined,
      hostname,
      mounts,
      workingDir: spec.workingDir || '/',
      uid,
      gid,
      supplementalGroups: groups,
      env,
      argv,
    };
    const state = this.ctx.state;
    fs.mkdirSync(state.containerDir(this.uid, slot.name), { recursive: true, mode: 0o700 });
    const script = state.startScript(this.uid, slot.name, slot.restartCount);
    state.writeFile(script, renderStartScript(launch, this.ctx.tools), 0o600);
    const logFile = state.logFile(this.uid, slot.name, slot.restartCount);
    const log = new ContainerLogWriter(logFile);
    slot.logFiles.set(slot.restartCount, logFile);
    this.event('Normal', 'Created', `Created container ${slot.name}`, slot.name);
    const child = spawnContainer(launch, script, this.ctx.tools);
    const startedAtMs = Date.now();
    const id = randomBytes(32).toString('hex');
    if (child.pid === undefined) {
      // spawn failed synchronously (the error event follows); report it like a failed start.
      child.on('error', () => {});
      log.close();
      this.failStart(slot, 'RunContainerError', `failed to start container ${slot.name}`, CONFIG_RETRY_MS);
      return;
    }
    log.attach(child.stdout!, 'stdout');
    log.attach(child.stderr!, 'stderr');
    let resolveExit!: (t: TerminatedState) => void;
    const exited = new Promise<TerminatedState>((resolve) => {
      resolveExit = resolve;
    });
    const run: ContainerRun = {
      id,
      pid: child.pid,
      child,
      startedAt: timestamp(new Date(startedAtMs)),
      startedAtMs,
      log,
      logFile,
      exec: { pid: child.pid, workingDir: launch.workingDir, uid, gid, env },
      probes: new ContainerProbes(spec, () => this.probeTarget(slot), {
        changed: () => this.kick(),
        failed: (kind, message) => void this.probeFailed(slot, run, kind, message),
        checkFailed: (kind, outcome) =>
          this.event(
            'Warning',
            'Unhealthy',
            `${kind[0]!.toUpperCase()}${kind.slice(1)} probe failed: ${outcome.message}`,
            slot.name,
          ),
      }),
      stopping: false,
      exited,
    };
    child.on('error', (err) => {
      run.log.note('stderr', `tp-lab node agent: cannot start the container: ${err.message}`);
    });
    child.on('exit', (code, signal) => {
      // Whatever the container left behind in its process group goes with it.
      signalGroup(run.pid, 'SIGKILL');
      const exitCode = code ?? 128 + (signal ? signalNumber(signal) : 0);
      const t: TerminatedState = {
        exitCode,
        reason: exitCode === 0 ? 'Completed' : 'Error',
        startedAt: run.startedAt,
        finishedAt: timestamp(new Date()),
        containerId: `lab://${run.id}`,
      };
      resolveExit(t);
      this.containerExited(slot, run, t);
    });
    slot.run = run;
    slot.waiting = { reason: slot.isInit ? 'PodInitializing' : 'ContainerCreating' };
    slot.retryAt = 0;
    run.probes.start();
    this.log.info('container started', {
      container: slot.name,
      pid: child.pid,
      restartCount: slot.restartCount,
    });
    this.event('Normal', 'Started', `Started container ${slot.name}`, slot.name);
  }

  private failStart(slot: ContainerSlot, reason: string, message: string, retryMs: number): void {
    if (slot.waiting.reason !== reason || slot.waiting.message !== message) {
      this.event('Warning', 'Failed', `Error: ${message}`, slot.name);
      this.log.warn('container cannot start', { container: slot.name, reason, message });
    }
    slot.waiting = { reason, message };
    slot.retryAt = Date.now() + retryMs;
    this.kick(retryMs);
  }

  private containerExited(slot: ContainerSlot, run: ContainerRun, t: TerminatedState): void {
    run.probes.stop();
    if (slot.run === run) slot.run = undefined;
    this.log.info('container exited', { container: slot.name, exitCode: t.exitCode });
    const policy = this.pod.spec?.restartPolicy ?? 'Always';
    let restart: boolean;
    if (this.termination || this.completed) restart = false;
    else if (slot.restartable) restart = true;
    else if (slot.isInit) restart = t.exitCode !== 0 && policy !== 'Never';
    else restart = policy === 'Always' || (policy === 'OnFailure' && t.exitCode !== 0);
    if (restart) slot.lastTermination = t;
    else slot.finalState = t;
    this.kick();
  }

  private async probeFailed(
    slot: ContainerSlot,
    run: ContainerRun,
    kind: string,
    message: string,
  ): Promise<void> {
    if (run.stopping || slot.run !== run) return;
    this.event(
      'Normal',
      'Killing',
      `Container ${slot.name} failed ${kind} probe, will be restarted`,
      slot.name,
    );
    this.log.info('probe failed, restarting the container', { container: slot.name, kind, message });
    const probe = kind === 'liveness' ? slot.spec.livenessProbe : slot.spec.startupProbe;
    const graceSeconds =
      probe?.terminationGracePeriodSeconds ?? this.pod.spec?.terminationGracePeriodSeconds ?? 30;
    await this.stopRun(slot, run, graceSeconds * 1000);
  }

  private probeTarget(slot: ContainerSlot): ProbeTarget | undefined {
    const run = slot.run;
    if (!run || !this.podIP) return undefined;
    return {
      podIP: this.podIP,
      sourceIP: this.ctx.probeSourceIP,
      ports: slot.spec.ports ?? [],
      userAgent: this.ctx.probeUserAgent,
      exec: (command, timeoutMs) => this.runCommand(run.exec, command, timeoutMs),
    };
  }

  /** Runs a command in the container to completion (exec probes, preStop hooks). */
  private runCommand(
    target: ExecTarget,
    command: string[],
    timeoutMs: number,
  ): Promise<{ exitCode: number; output: string }> {
    return new Promise((resolve) => {
      const child = execInContainer(target, command, this.ctx.tools);
      let output = '';
      const collect = (d: Buffer) => {
        if (output.length < 10_240) output += d.toString('utf8');
      };
      child.stdout?.on('data', collect);
      child.stderr?.on('data', collect);
      child.stdin?.end();
      const timer = setTimeout(() => {
        if (child.pid) signalGroup(child.pid, 'SIGKILL');
        resolve({ exitCode: -1, output: `command timed out after ${timeoutMs / 1000}s` });
      }, timeoutMs);
      child.on('error', (err) => {
        clearTimeout(timer);
        resolve({ exitCode: -1, output: err.message });
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ exitCode: code ?? 128 + (signal ? signalNumber(signal) : 0), output });
      });
    });
  }

  /** preStop hook, SIGTERM, the grace period, SIGKILL; resolves when the process is gone. */
  private async stopRun(slot: ContainerSlot, run: ContainerRun, graceMs: number): Promise<void> {
    if (run.stopping) {
      await run.exited;
      return;
    }
    run.stopping = true;
    run.probes.stop();
    const deadline = Date.now() + Math.max(graceMs, MIN_GRACE_MS);
    const preStop = slot.spec.lifecycle?.preStop;
    if (preStop?.exec?.command?.length) {
      const result = await Promise.race([
        this.runCommand(run.exec, preStop.exec.command, Math.max(1, deadline - Date.now())),
        run.exited.then(() => undefined),
      ]);
      if (result && result.exitCode !== 0) {
        this.event('Warning', 'FailedPreStopHook', `PreStop hook failed: ${result.output.trim()}`, slot.name);
      }
    } else if (preStop?.sleep?.seconds) {
      await Promise.race([sleep(Math.min(preStop.sleep.seconds * 1000, deadline - Date.now())), run.exited]);
    }
    signalGroup(run.pid, 'SIGTERM');
    const remaining = deadline - Date.now();
    const exitedInTime = await Promise.race([
      run.exited.then(() => true),
      sleep(Math.max(0, remaining)).then(() => false),
    ]);
    if (!exitedInTime) {
      signalGroup(run.pid, 'SIGKILL');
      await run.exited;
    }
  }

  // ---- status -------------------------------------------------------------------------------

  private view(): PodView {
    const terminal = this.termination !== undefined;
    const views = (slots: ContainerSlot[]) => slots.map((s) => s.view());
    return {
      sandboxReady: this.sandboxReady,
      podIP: this.podIP,
      hostIP: this.ctx.nodeIP,
      startTime: this.startTime,
      initContainers: views(this.initSlots),
      containers: views(this.appSlots),
      terminal,
    };
  }

  /** Publishes the status if it changed; returns the phase. */
  private async publish(): Promise<string | undefined> {
    if (this.lastPublished === 'inherited') return this.pod.status?.phase;
    // Our own last status is newer than the informer's copy: use it for transition times and phase.
    const base: V1Pod = this.lastPublishedStatus
      ? {
          ...this.pod,
          status: {
            ...this.pod.status,
            phase: this.lastPublishedStatus.phase as string,
            conditions: mergeConditions(
              this.pod.status?.conditions ?? [],
              this.lastPublishedStatus.conditions as V1PodCondition[],
            ),
          },
        }
      : this.pod;
    const status = computePodStatus(base, this.view(), timestamp(new Date()));
    const text = JSON.stringify(status);
    if (text === this.lastPublished) return status.phase as string;
    try {
      await this.ctx.api.patchPodStatus(this.namespace, this.name, status);
      this.lastPublished = text;
      this.lastPublishedStatus = status;
    } catch (err) {
      if (isNotFound(err)) return status.phase as string;
      this.log.warn('publishing pod status failed', { error: apiErrorMessage(err) });
      this.kick(SANDBOX_RETRY_MS);
    }
    return status.phase as string;
  }

  /** The pod finished (Succeeded/Failed): stop what still runs, free the network, keep the logs. */
  private async complete(): Promise<void> {
    if (this.completed) return;
    this.completed = true;
    this.log.info('pod completed');
    const running = [...this.appSlots, ...this.initSlots].filter((s) => s.run);
    await Promise.all(running.map((s) => this.stopRun(s, s.run!, 30_000)));
    await this.releaseNetwork();
    await this.publish();
  }

  private async releaseNetwork(): Promise<void> {
    if (this.network) {
      try {
        await teardownPodNetwork(this.ctx.tools, this.network);
      } catch (err) {
        this.log.warn('tearing down the pod network failed', { error: err });
      }
      this.network = undefined;
    }
    this.ctx.addresses.release(this.uid);
  }

  private async runTermination(mode: TerminationMode): Promise<void> {
    clearTimeout(this.kickTimer);
    const spec = this.pod.spec;
    let graceMs: number;
    if (mode === 'delete') {
      graceMs =
        (this.pod.metadata?.deletionGracePeriodSeconds ?? spec?.terminationGracePeriodSeconds ?? 30) * 1000;
    } else if (mode === 'orphaned') graceMs = MIN_GRACE_MS;
    else graceMs = Math.min((spec?.terminationGracePeriodSeconds ?? 30) * 1000, SHUTDOWN_GRACE_MS);
    this.log.info('stopping pod', { mode, graceSeconds: graceMs / 1000 });
    // Containers first, then sidecars (restartable init containers) in reverse order.
    const apps = this.appSlots.filter((s) => s.run);
    for (const s of apps) this.event('Normal', 'Killing', `Stopping container ${s.name}`, s.name);
    await Promise.all(apps.map((s) => this.stopRun(s, s.run!, graceMs)));
    for (const s of [...this.initSlots].reverse()) if (s.run) await this.stopRun(s, s.run, graceMs);
    // A sync that was already past its checks may have started one more; it gets no grace.
    for (const s of [...this.appSlots, ...this.initSlots]) if (s.run) await this.stopRun(s, s.run, 0);
    // Containers that never ran stay waiting; stopped ones are terminated (containerExited did that).
    if (mode === 'delete' && this.lastPublished !== 'inherited') await this.publish();
    await this.releaseNetwork();
    this.stopped = true;
    if (mode === 'delete') {
      try {
        await this.ctx.api.deletePod(this.namespace, this.name, this.uid);
      } catch (err) {
        this.log.warn('deleting the pod failed', { error: apiErrorMessage(err) });
      }
    }
    this.ctx.state.removePod(this.uid);
    this.log.info('pod stopped', { mode });
  }

  /** Restart counts and completed init containers of a pod adopted after a node-agent restart. */
  private adoptStatus(): void {
    const statuses = [
      ...(this.pod.status?.initContainerStatuses ?? []),
      ...(this.pod.status?.containerStatuses ?? []),
    ];
    const sandboxKept = this.adopted?.netns !== undefined && fs.existsSync(netnsPath(this.adopted.netns));
    for (const slot of [...this.initSlots, ...this.appSlots]) {
      const s = statuses.find((x) => x.name === slot.name);
      if (!s) continue;
      slot.restartCount = s.restartCount ?? 0;
      slot.imageId = s.imageID ?? '';
      const terminated = s.state?.terminated;
      if (slot.isInit && !slot.restartable && terminated?.exitCode === 0 && sandboxKept) {
        // The network namespace survived, so what this init container set up is still there.
        slot.finalState = {
          exitCode: 0,
          reason: terminated.reason ?? 'Completed',
          startedAt: toTime(terminated.startedAt),
          finishedAt: toTime(terminated.finishedAt),
          containerId: terminated.containerID ?? '',
        };
        continue;
      }
      if (s.state?.running || s.state?.terminated) {
        const now = timestamp(new Date());
        slot.lastTermination = {
          exitCode: 137,
          reason: 'ContainerStatusUnknown',
          message: 'The container could not be located when the node agent restarted',
          startedAt: s.state.running ? toTime(s.state.running.startedAt) : now,
          finishedAt: now,
          containerId: s.containerID ?? '',
        };
        slot.restartAfterAdoption = true;
      }
    }
  }

  // ---- kubelet API ---------------------------------------------------------------------------

  findContainer(name: string): ContainerSlot | undefined {
    return [...this.appSlots, ...this.initSlots].find((s) => s.name === name);
  }

  /** Where `kubectl exec` runs, or why it cannot. */
  execTarget(container: string): ExecTarget | string {
    const slot = this.findContainer(container);
    if (!slot) return `container ${container} is not valid for pod ${this.name}`;
    if (!slot.run) return `container ${container} is not running`;
    return slot.run.exec;
  }

  /** The log file of the current (or previous) run and whether it is still being written. */
  logSource(container: string, previous: boolean): { file: string; isActive: () => boolean } | string {
    const slot = this.findContainer(container);
    if (!slot) return `container ${container} is not valid for pod ${this.name}`;
    if (previous) {
      const file =
        slot.logFiles.get(slot.restartCount - 1) ??
        this.ctx.state.logFile(this.uid, slot.name, slot.restartCount - 1);
      if (slot.restartCount === 0 || !fs.existsSync(file)) {
        return `previous terminated container "${container}" in pod "${this.name}" not found`;
      }
      return { file, isActive: () => false };
    }
    const run = slot.run;
    const file = run?.logFile ?? slot.logFiles.get(slot.restartCount);
    if (!file || !fs.existsSync(file)) {
      if (this.completed) return `container "${container}" in pod "${this.name}" has no logs on this node`;
      return `container "${container}" in pod "${this.name}" is waiting to start: ${slot.waiting.reason}`;
    }
    return { file, isActive: () => run?.log.isOpen === true };
  }
}

function toTime(value: Date | string | undefined): string {
  if (value === undefined) return timestamp(new Date());
  return typeof value === 'string' ? value : timestamp(value);
}

function signalNumber(signal: NodeJS.Signals): number {
  return os.constants.signals[signal] ?? 0;
}

const OWNED_CONDITIONS = new Set(['PodReadyToStartContainers', 'Initialized', 'ContainersReady', 'Ready']);

/** The conditions we own from our last published status (newer than the informer's), the rest from the API. */
function mergeConditions(fromApi: V1PodCondition[], ours: V1PodCondition[]): V1PodCondition[] {
  return [
    ...ours.filter((c) => OWNED_CONDITIONS.has(c.type)),
    ...fromApi.filter((c) => !OWNED_CONDITIONS.has(c.type)),
  ];
}
