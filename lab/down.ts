// `tp-lab down`: stops the lab's processes by PID (SIGTERM, SIGKILL after a grace period); before
// containerd stops, every pod is removed through the CRI (CNI releases its address and namespace);
// then whatever a crash left (container processes, shims, mounts, cgroups), every process still inside
// a tplab-* namespace (`tp-lab exec` commands), and finally the namespaces, which takes their
// interfaces, addresses, routes and iptables rules with them.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { cachedBinDir } from './binaries.js';
import { COMPONENT_ORDER, componentSpec, type LabLayout } from './components.js';
import { labLayout } from './layout.js';
import { deleteNamespaces, listNamespaces, namespacePids } from './network.js';
import {
  containerdReady,
  mountsUnder,
  removeAllPods,
  removeNodeHostState,
  stopNodeLeftovers,
} from './node-runtime.js';
import { pidFile } from './paths.js';
import { assertHostCanRunLab } from './preflight.js';
import { liveProcess, processStartTime, stopByPidFile, stopProcess } from './processes.js';

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
  // The bin directory is needed for crictl only; nothing is built to stop the lab.
  const l: LabLayout = labLayout(cachedBinDir());
  const stopped: string[] = [];

  for (const name of [...COMPONENT_ORDER].reverse()) {
    if (name === 'containerd' && liveProcess(pidFile(l.paths, name)) && (await containerdReady(l.paths))) {
      // The kubelet is stopped by now: nothing recreates the pods while the CRI removes them.
      const pods = await removeAllPods(l).catch((err: Error) => {
        say(`could not remove the pods through the CRI (${err.message}); stopping their processes instead`);
        return 0;
      });
      if (pods) say(`removed ${pods} pod(s) through the CRI`);
    }
    const how = await stopByPidFile(pidFile(l.paths, name), componentSpec(name, l).stopGraceMs);
    if (how !== 'gone') {
      stopped.push(name);
      say(`stopped ${name}${how === 'killed' ? ' (killed after its grace period)' : ''}`);
    }
  }

  const leftover = await stopNodeLeftovers(l.paths);
  if (leftover) say(`stopped ${leftover} container process(es) and shim(s) left by the node`);

  const namespaces = await listNamespaces();
  // The workstation, then the node.
  namespaces.sort((a, b) => rank(a) - rank(b));
  const leftovers = (await Promise.all(namespaces.map((ns) => namespacePids(ns)))).flat();
  const live = leftovers
    .map((pid) => ({ pid, startTime: processStartTime(pid) }))
    .filter((p): p is { pid: number; startTime: string } => p.startTime !== null && p.pid !== process.pid);
  if (live.length) {
    await Promise.all(live.map((p) => stopProcess(p, 5_000)));
    say(`stopped ${live.length} process(es) left in the lab's namespaces`);
  }
  const stuck = unmountUnder(l.paths.root);
  for (const problem of removeNodeHostState(l.paths)) say(`could not remove ${problem}`);
  await deleteNamespaces(namespaces);
  if (namespaces.length) say(`removed network namespaces ${namespaces.join(', ')}`);

  if (stuck.length) {
    // Never delete through a mount point: its contents are not the lab's.
    say(`left the state directory in place: still mounted: ${stuck.join(', ')}`);
  } else removeState(l, options);
  return { stopped, namespacesRemoved: namespaces };
}

const rank = (ns: string) => (ns === 'tplab-ws' ? 0 : 1);

/**
 * Unmounts whatever the node mounted under the state directory (the kubelet's volumes, containerd's
 * container root filesystems and the pods' network namespaces), deepest first. Returns what stayed mounted.
 */
function unmountUnder(root: string): string[] {
  for (const point of mountsUnder(root)) {
    // Lazy detach: a mount still held by a dying process must not block `down`. No umount(2) in Node.
    spawnSync('umount', ['-l', point], { stdio: 'ignore' });
  }
  return mountsUnder(root);
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
  // containerd's root stays (its images, as a node keeps its image cache); its state and the pods' go.
  for (const dir of [
    p.run,
    p.pids,
    p.etcdData,
    p.containerdState,
    p.kubelet,
    p.podLogs,
    p.cniConf,
    p.cniIpam,
  ]) {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (options.dropLogs) fs.rmSync(p.logs, { recursive: true, force: true });
}
