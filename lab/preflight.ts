// What the lab needs from the host before it touches anything, each with the fix in its message.
import * as fs from 'node:fs';
import { UsageError } from '../netaddr/parse.js';
import { missingTool, onPath } from './command.js';

/** Host tools the lab runs; containerd, ctr and runc are the node's container runtime (Debian's packages). */
export const REQUIRED_TOOLS = [
  'ip',
  'nsenter',
  'openssl',
  'iptables',
  'containerd',
  'ctr',
  'runc',
  'umount',
] as const;

/** Why the lab cannot run on this host (null when it can). Binaries are checked separately. */
export function labHostProblem(): string | null {
  if (process.platform !== 'linux') return 'the lab runs on Linux only (it uses network namespaces)';
  if (process.getuid?.() !== 0) {
    return 'the lab must run as root: it creates network namespaces and runs iptables in them (use sudo)';
  }
  for (const tool of REQUIRED_TOOLS) if (!onPath(tool)) return missingTool(tool).message;
  if (!fs.existsSync('/proc/self/ns/net')) return 'this kernel has no network namespaces';
  return null;
}

export function assertHostCanRunLab(): void {
  const problem = labHostProblem();
  if (problem) throw new UsageError(problem);
}
