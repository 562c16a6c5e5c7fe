// The eBPF capture mechanism behind tp-init's one interface (init-container/mechanism.ts, which tp-init
// holds it to; bpf/ does not import tp-init): probeSupport, dryRun, apply, status, cleanup over mechanism.ts,
// in this process's network namespace, with the text and JSON an admin reads.
import * as path from 'node:path';
import { UsageError } from '../netaddr/parse.js';
import {
  apply,
  cleanup,
  formatStatus,
  netnsInode,
  probeSupport,
  type SupportReport,
  status,
  statusJson,
} from './mechanism.js';
import { DEFAULT_PIN_ROOT, pinDirFor } from './steering-keys.js';

/** The part of tp-init's checked flags the eBPF mechanism reads. */
export interface EbpfRequest {
  /** 'all' (`--ports "*"`) cannot be captured by eBPF: its program holds a list of ports. */
  appPorts: number[] | 'all';
  agentUid: number;
}

export interface EbpfMechanismOptions {
  /** The bpffs directory of tp's pins; /sys/fs/bpf/tp by default. */
  pinRoot?: string;
}

function ports(request: EbpfRequest): number[] {
  if (request.appPorts === 'all')
    throw new UsageError('--ports "*" needs --mechanism iptables: eBPF capture takes a list of ports');
  return request.appPorts;
}

export function ebpfMechanism(opts: EbpfMechanismOptions = {}) {
  const pinRoot = opts.pinRoot ?? DEFAULT_PIN_ROOT;
  const where = { pinRoot };
  return {
    name: 'ebpf' as const,
    async probeSupport(request?: EbpfRequest): Promise<SupportReport> {
      if (request) ports(request);
      return probeSupport({ pinRoot, ...(request ? { agentUid: request.agentUid } : {}) });
    },
    dryRun(request: EbpfRequest): string {
      const dir = pinDirFor(netnsInode('/proc/self/ns/net'), pinRoot);
      return (
        `# eBPF capture: attach tp_steer (sk_lookup) to this network namespace, pins in ${dir}\n` +
        `# tp_ports: ${ports(request).join(',')}; tp_ports and tp_listeners handed to UID ${request.agentUid}\n`
      );
    },
    async apply(request: EbpfRequest): Promise<string> {
      const r = apply({ ports: ports(request), agentUid: request.agentUid, pinRoot });
      return r.changed
        ? r.actions.map((a) => `eBPF capture: ${a}\n`).join('')
        : `eBPF capture already in place in ${r.pinDir}: nothing changed\n`;
    },
    /** The ports asked for are not compared: the report lists the captured ones. */
    async status() {
      const s = status(where);
      const found = Object.values(s.pins).some(Boolean);
      return {
        found,
        inPlace: s.attached && s.problems.length === 0,
        text: `${formatStatus(s)}\n`,
        json: JSON.parse(statusJson(s)),
      };
    },
    unreadable: (err: unknown) => ({ error: (err as Error).message }),
    async cleanup(): Promise<string> {
      const r = cleanup(where);
      return r.removed.length
        ? `eBPF capture: removed ${r.removed.join(', ')}\n`
        : `eBPF capture: nothing to remove in ${r.pinDir}\n`;
    },
  };
}

/** For a pin root given on the command line: absolute, as apply requires. */
export function checkPinRoot(dir: string): string {
  if (!path.isAbsolute(dir)) throw new UsageError(`--pin-root "${dir}" must be an absolute path`);
  return dir;
}
