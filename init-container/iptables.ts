// The iptables capture mechanism behind tp-init's one interface (mechanism.ts): capture.ts does the work,
// report.ts writes what an admin reads.
import { UsageError } from '../netaddr/parse.js';
import { probeBackends } from './backend.js';
import {
  applyCapture,
  type CaptureEnv,
  captureStatus,
  cleanupCapture,
  discoverCaptureStatus,
  dryRunCapture,
} from './capture.js';
import type { CaptureMechanism } from './mechanism.js';
import { formatApplied, formatCleaned, formatDiscoveredStatus, formatStatus } from './report.js';
import { noIptablesBinary } from './xtables-errors.js';

export function iptablesMechanism(env: CaptureEnv): CaptureMechanism {
  return {
    name: 'iptables',
    async probeSupport() {
      try {
        const backends = await probeBackends(env.runner, 4);
        if (backends.length === 0) return { supported: false, reason: noIptablesBinary(4).message };
        const names = backends.map((b) => `${b.backend.name} (${b.backend.restore})`).join(', ');
        return { supported: true, reason: `IPv4 iptables backends usable here: ${names}` };
      } catch (err) {
        if (err instanceof UsageError) return { supported: false, reason: err.message };
        throw err;
      }
    },
    dryRun: (config) => dryRunCapture(config, env.interfaces),
    apply: async (config) => formatApplied(await applyCapture(env, config)),
    async status(config) {
      if (!config) {
        const s = await discoverCaptureStatus(env);
        return { found: s.families.length > 0, inPlace: s.inPlace, text: formatDiscoveredStatus(s), json: s };
      }
      const s = await captureStatus(env, config);
      return { found: s.families.length > 0, inPlace: s.inPlace, text: formatStatus(s), json: s };
    },
    unreadable(err) {
      if (!(err instanceof UsageError)) return undefined;
      if (!/NET_ADMIN|not permitted/.test(err.message)) return { error: err.message };
      return { error: err.message, permission: err.message.replace(/: tp-init needs the NET_ADMIN.*$/, '') };
    },
    cleanup: async () => formatCleaned(await cleanupCapture(env)),
  };
}
