// `tp-lab down`: stops the lab's processes by PID (SIGTERM, SIGKILL after a grace period), then
// every process still inside a tplab-* namespace (pods, `tp-lab exec` commands), then deletes the
// namespaces, which takes their interfaces, addresses, routes and iptables rules with them.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { COMPONENT_ORDER, componentSpec, type LabLayout } from './components.js';
import { labLayout } from './layout.js';
import { deleteNamespaces, listNamespaces, namespacePids } from './network.js';
import { pidFile } from './paths.js';
import { assertHostCanRunLab } from './preflight.js';
import { processStartTime, stopByPidFile, stopProcess } from './processes.js';

export interface DownOptions {
  progress: (line: string) => void;
  /** Also remove the CA, certificates, kubeconfigs and logs: the whole state directory. */
  purge?: boolean;
  /** Remove the logs (a fresh `up` starts with empty ones); `down` alone keeps them for a post-mortem. */
  dropLogs?: boolean;
}

export interface DownResult {
  stopped: string[];
  namespacesRemoved: string[];
}

export async function labDown(options: DownOptions): Promise<DownResult> {
  assertHostCanRunLab();
  const say = (msg: string) => options.progress(`tp-lab: ${msg}`);
  // The binaries are irrelevant for stopping; the layout needs a bin path only for command lines.
  const l: LabLayout = labLayout('');
  const stopped: string[] = [];

  for (const name of [...COMPONENT_ORDER].reverse()) {
    const how = await stopByPidFile(pidFile(l.paths, name), componentSpec(name, l).stopGraceMs);
    if (how !== 'gone') {
      stopped.push(name);
      say(`stopped ${name}${how === 'killed' ? ' (killed after its grace period)' : ''}`);
    }
  }

  const namespaces = await listNamespaces();
  // Pods first (their processes may still be finishing), then the workstation and the node.
  namespaces.sort((a, b) => rank(a) - rank(b));
  const leftovers = (await Promise.all(namespaces.map((ns) => namespacePids(ns)))).flat();
  const live = leftovers
    .map((pid) => ({ pid, startTime: processStartTime(pid) }))
    .filter((p): p is { pid: number; startTime: string } => p.startTime !== null && p.pid !== process.pid);
  if (live.length) {
    await Promise.all(live.map((p) => stopProcess(p, 5_000)));
    say(`stopped ${live.length} process(es) left in the lab's namespaces`);
  }
  unmountUnder(l.paths.root);
  await deleteNamespaces(namespaces);
  if (namespaces.length) say(`removed network namespaces ${namespaces.join(', ')}`);

  removeState(l, options);
  return { stopped, namespacesRemoved: namespaces };
}

const rank = (ns: string) => (ns.startsWith('tplab-p-') ? 0 : ns === 'tplab-ws' ? 1 : 2);

/** Unmounts whatever the node agent mounted under the state directory (volumes), deepest first. */
function unmountUnder(root: string): void {
  let mountinfo: string;
  try {
    mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return;
  }
  const prefix = `${root}/`;
  const points = mountinfo
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .map((p) => p.replace(/\\040/g, ' '))
    .filter((p) => p.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
  for (const point of points) {
    try {
      // Lazy detach: a mount still held by a dying process must not block `down`.
      fs.accessSync(point);
      // No umount(2) in Node; util-linux's umount sits beside nsenter.
      spawnSync('umount', ['-l', point], { stdio: 'ignore' });
    } catch {
      // Already gone.
    }
  }
}

/**
 * Cluster state goes (the next `up` is a fresh cluster). The PKI and kubeconfigs stay by default,
 * so a KUBECONFIG handed out keeps working after the next `up`; the logs stay for a post-mortem.
 */
function removeState(l: LabLayout, options: DownOptions): void {
  const p = l.paths;
  if (options.purge) {
    fs.rmSync(p.root, { recursive: true, force: true });
    return;
  }
  for (const dir of [p.run, p.pids, p.etcdData, p.node]) fs.rmSync(dir, { recursive: true, force: true });
  if (options.dropLogs) fs.rmSync(p.logs, { recursive: true, force: true });
}
