// One container of a pod across its runs: restart count, the current process, the last termination,
// why it waits, its crash-loop back-off, and the probes of the current run.
import type { ChildProcess } from 'node:child_process';
import type { V1Container, V1Probe } from '@kubernetes/client-node';
import type { ContainerLogWriter } from './container-logs.js';
import type { ExecTarget } from './container-process.js';
import type { ContainerView, TerminatedState } from './pod-status.js';
import {
  type ProbeKind,
  type ProbeOutcome,
  type ProbeTarget,
  ProbeTracker,
  probeTiming,
  runProbe,
} from './probes.js';
import { RestartBackoff } from './restart-backoff.js';

export interface ContainerRun {
  /** 64 hex digits, shown as lab://<id>. */
  id: string;
  pid: number;
  child: ChildProcess;
  startedAt: string;
  startedAtMs: number;
  log: ContainerLogWriter;
  logFile: string;
  exec: ExecTarget;
  probes: ContainerProbes;
  /** Set when the node agent is stopping it (deletion, liveness failure). */
  stopping: boolean;
  /** Resolves once the process has exited. */
  exited: Promise<TerminatedState>;
}

export class ContainerSlot {
  restartCount = 0;
  run: ContainerRun | undefined;
  lastTermination: TerminatedState | undefined;
  /** The container is done for good (init container completed, or no restart by policy). */
  finalState: TerminatedState | undefined;
  waiting: { reason: string; message?: string };
  imageId = '';
  imagePullAttempts = 0;
  /** Do not retry a failed start (image, config) before this time. */
  retryAt = 0;
  /** The last run ended because the node agent restarted: restart at once, no back-off. */
  restartAfterAdoption = false;
  readonly backoff = new RestartBackoff();
  readonly restartable: boolean;
  /** Log files of earlier runs by restart count, for `kubectl logs --previous`. */
  readonly logFiles = new Map<number, string>();

  constructor(
    readonly spec: V1Container,
    readonly isInit: boolean,
  ) {
    this.restartable = isInit && spec.restartPolicy === 'Always';
    this.waiting = { reason: isInit ? 'PodInitializing' : 'ContainerCreating' };
  }

  get name(): string {
    return this.spec.name;
  }

  get running(): boolean {
    return this.run !== undefined;
  }

  get succeeded(): boolean {
    return this.finalState !== undefined && this.finalState.exitCode === 0;
  }

  view(): ContainerView {
    const run = this.run;
    const started = run?.probes.started === true;
    const ready = started && run?.probes.ready === true;
    return {
      name: this.name,
      image: this.spec.image ?? '',
      imageId: this.imageId,
      state: run
        ? { kind: 'running', startedAt: run.startedAt, containerId: `lab://${run.id}` }
        : this.finalState
          ? { kind: 'terminated', ...this.finalState }
          : { kind: 'waiting', reason: this.waiting.reason, message: this.waiting.message },
      lastTermination: this.lastTermination,
      restartCount: this.restartCount,
      ready,
      started,
      restartable: this.restartable,
    };
  }
}

export interface ProbeCallbacks {
  /** started/ready changed: publish status. */
  changed(): void;
  /** A liveness or startup probe failed for good: the container must be restarted. */
  failed(kind: ProbeKind, message: string): void;
  /** Every failed check, for Unhealthy events. */
  checkFailed(kind: ProbeKind, outcome: ProbeOutcome): void;
}

interface ProbeLoop {
  kind: ProbeKind;
  probe: V1Probe;
  tracker: ProbeTracker;
  timer: NodeJS.Timeout | undefined;
}

/**
 * The probes of one container run, each on its own timer from the container's start. Liveness and
 * readiness wait until the startup probe has passed.
 */
export class ContainerProbes {
  private readonly loops: ProbeLoop[] = [];
  private stopped = false;
  private startupPassed: boolean;

  constructor(
    spec: V1Container,
    private readonly target: () => ProbeTarget | undefined,
    private readonly callbacks: ProbeCallbacks,
  ) {
    const kinds: [ProbeKind, V1Probe | undefined][] = [
      ['startup', spec.startupProbe],
      ['liveness', spec.livenessProbe],
      ['readiness', spec.readinessProbe],
    ];
    for (const [kind, probe] of kinds) {
      if (probe)
        this.loops.push({
          kind,
          probe,
          tracker: new ProbeTracker(kind, probeTiming(probe, kind)),
          timer: undefined,
        });
    }
    this.startupPassed = spec.startupProbe === undefined;
  }

  get started(): boolean {
    return this.startupPassed;
  }

  get ready(): boolean {
    const readiness = this.loops.find((l) => l.kind === 'readiness');
    return this.startupPassed && (readiness === undefined || readiness.tracker.passing);
  }

  start(): void {
    for (const loop of this.loops) {
      const timing = probeTiming(loop.probe, loop.kind);
      this.schedule(loop, timing.initialDelayMs);
    }
  }

  stop(): void {
    this.stopped = true;
    for (const loop of this.loops) clearTimeout(loop.timer);
  }

  private schedule(loop: ProbeLoop, delayMs: number): void {
    if (this.stopped) return;
    loop.timer = setTimeout(() => void this.tick(loop), delayMs);
    loop.timer.unref();
  }

  private async tick(loop: ProbeLoop): Promise<void> {
    const timing = probeTiming(loop.probe, loop.kind);
    const gated = loop.kind === 'startup' ? this.startupPassed : !this.startupPassed;
    const target = this.target();
    if (!gated && target) {
      const outcome = await runProbe(loop.probe, target, timing.timeoutMs);
      if (this.stopped) return;
      if (!outcome.success) this.callbacks.checkFailed(loop.kind, outcome);
      const verdict = loop.tracker.record(outcome.success);
      if (loop.kind === 'startup' && verdict === 'passed') {
        this.startupPassed = true;
        this.callbacks.changed();
        return; // a passed startup probe is not run again
      }
      if (verdict === 'failed' && loop.kind !== 'readiness') {
        this.callbacks.failed(loop.kind, outcome.message);
        return;
      }
      if (verdict !== undefined) this.callbacks.changed();
    }
    this.schedule(loop, timing.periodMs);
  }
}
