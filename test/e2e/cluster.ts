// Which cluster the e2e scenarios run against, and how to reach it:
// - TP_E2E_KUBECONFIG set: that cluster; kubectl comes from PATH (or TP_E2E_KUBECTL). The "workstation"
//   is this host, or, with TP_E2E_WORKSTATION (a JSON file: prefix, resolvConf, apiServer), a network
//   namespace of its own such as tp-kind's (kind/run.sh: `tp-kind exec --`).
// - otherwise the lab (tp-lab) on this machine: kubectl from the lab's bin directory, the host
//   kubeconfig for the test's own calls, and the tplab-ws namespace as the workstation.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cachedBinDir, missingBinaries } from '../../lab/binaries.js';
import { onPath } from '../../lab/command.js';
import { labPaths } from '../../lab/paths.js';
import { labHostProblem } from '../../lab/preflight.js';
import { NODE_IP, WORKSTATION_LINK } from '../../lab/topology.js';
import { workstationResolvConfPath } from '../../lab/workstation.js';

/** Where tp runs in the scenarios. */
export interface Workstation {
  /** The /etc/resolv.conf its commands see: the file tp rewrites while connected. */
  resolvConf: string;
  /**
   * Set for a workstation namespace of its own (the lab's, tp-kind's): its one route leads to the API
   * server (at `ip`, through `dev`), its resolver is 127.0.0.1 there (a scenario may serve DNS on it).
   */
  apiServer?: { ip: string; dev: string };
}

export interface Cluster {
  kind: 'lab' | 'external';
  /** For the test's own kubectl calls (from the host). */
  kubeconfig: string;
  kubectl: string;
  /** Prefix that runs a command "on the workstation" (tplab-ws for the lab, nothing elsewhere). */
  workstationPrefix: string[];
  workstation: Workstation;
  /** Image names of the test workloads (lab: the images `tp-lab up` builds and imports; kind: the script's). */
  images: { echo: string; shell: string };
}

/** The repository root (this file is dist/test/e2e/cluster.js). */
export const repoRoot = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..', '..');
export const tpLabMain = path.join(repoRoot, 'dist', 'lab', 'main.js');

/** Why the lab cannot run on this machine, or null. (An external cluster makes this moot.) */
export function labUnavailableReason(): string | null {
  const host = labHostProblem();
  if (host) return host;
  if (missingBinaries(cachedBinDir()).length > 0 && !onPath('go')) {
    return "Go is not installed and the lab's Kubernetes binaries are not built (install Go 1.24+, then tp-lab build)";
  }
  return null;
}

export function externalKubeconfig(): string | null {
  return process.env.TP_E2E_KUBECONFIG || null;
}

/** The cluster description for a lab that is up (or for the external cluster). */
export function describeCluster(): Cluster {
  const images = {
    echo: process.env.TP_E2E_IMAGE_ECHO || 'lab/echo:1',
    shell: process.env.TP_E2E_IMAGE_SHELL || 'lab/shell:1',
  };
  const external = externalKubeconfig();
  if (external) {
    if (!fs.existsSync(external)) throw new Error(`TP_E2E_KUBECONFIG=${external} does not exist`);
    const ws = externalWorkstation();
    return {
      kind: 'external',
      kubeconfig: external,
      kubectl: process.env.TP_E2E_KUBECTL || 'kubectl',
      workstationPrefix: ws?.prefix ?? [],
      workstation: ws ?? { resolvConf: '/etc/resolv.conf' },
      images,
    };
  }
  return {
    kind: 'lab',
    kubeconfig: labPaths().kubeconfig,
    kubectl: path.join(cachedBinDir(), 'kubectl'),
    workstationPrefix: [process.execPath, tpLabMain, 'exec', '--'],
    workstation: {
      resolvConf: workstationResolvConfPath(labPaths()),
      apiServer: { ip: NODE_IP, dev: WORKSTATION_LINK },
    },
    images,
  };
}

/** TP_E2E_WORKSTATION: what tp-kind (or another harness) says about its workstation namespace. */
function externalWorkstation(): (Workstation & { prefix: string[] }) | undefined {
  const file = process.env.TP_E2E_WORKSTATION;
  if (!file) return undefined;
  const w = JSON.parse(fs.readFileSync(file, 'utf8')) as Workstation & { prefix: string[] };
  if (!Array.isArray(w.prefix) || typeof w.resolvConf !== 'string')
    throw new Error(`TP_E2E_WORKSTATION=${file} needs "prefix" (an argv) and "resolvConf"`);
  return w;
}
