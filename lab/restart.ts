// `tp-lab restart COMPONENT`: stops one part of a running lab the way it stops (SIGTERM, then SIGKILL after
// its grace period), starts it again through `up` (which repairs what is missing and leaves what runs
// alone) and returns when the whole lab is ready again: the API, the node, CoreDNS and every Service.
// For fault tests: what tp does while the part is gone, and whether it heals after.
import { UsageError } from '../netaddr/parse.js';
import { cachedBinDir } from './binaries.js';
import { COMPONENT_ORDER, type ComponentName, componentSpec } from './components.js';
import { labLayout } from './layout.js';
import { pidFile } from './paths.js';
import { liveProcess, stopByPidFile } from './processes.js';
import { labUp } from './up.js';

/** What `restart` accepts: a component, or `node` for the kubelet and containerd together. */
export const RESTARTABLE = [...COMPONENT_ORDER, 'node'] as const;

export function componentsToRestart(name: string): ComponentName[] {
  if (name === 'node') return ['kubelet', 'containerd'];
  if ((COMPONENT_ORDER as string[]).includes(name)) return [name as ComponentName];
  throw new UsageError(`no lab component "${name}": restart one of ${RESTARTABLE.join(', ')}`);
}

export interface RestartResult {
  stopped: ComponentName[];
  seconds: number;
}

export async function labRestart(name: string, progress: (line: string) => void): Promise<RestartResult> {
  const components = componentsToRestart(name);
  const started = Date.now();
  const l = labLayout(cachedBinDir());
  const notRunning = COMPONENT_ORDER.filter((c) => !liveProcess(pidFile(l.paths, c)));
  if (notRunning.length === COMPONENT_ORDER.length) {
    throw new UsageError('the lab is not running: start it with `tp-lab up`');
  }
  const stopped: ComponentName[] = [];
  for (const c of components) {
    const how = await stopByPidFile(pidFile(l.paths, c), componentSpec(c, l).stopGraceMs);
    if (how !== 'gone') stopped.push(c);
    progress(
      `tp-lab: stopped ${c}${how === 'killed' ? ' (killed after its grace period)' : how === 'gone' ? ' (it was not running)' : ''}`,
    );
  }
  await labUp({ progress });
  return { stopped, seconds: (Date.now() - started) / 1000 };
}
