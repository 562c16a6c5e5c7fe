// `tp connect`'s VIF flags: --no-vif, --also-proxy, --never-proxy, --allow-conflicting-subnets.
import { parseCidr, UsageError } from '../netaddr/parse.js';
import type { VifFlags } from './daemon-client.js';

/** --also-proxy/--never-proxy values: repeatable, each may be a comma-separated list. */
export const collectCidrs = (value: string, previous: string[]) => [
  ...previous,
  ...value
    .split(',')
    .map((v) => v.trim())
    .filter(Boolean),
];

/** Checks the VIF flags before anything starts: a bad CIDR is reported as the root daemon would. */
export function vifFlags(opts: {
  vif: boolean;
  alsoProxy: string[];
  neverProxy: string[];
  allowConflictingSubnets?: boolean;
}): VifFlags {
  for (const c of opts.alsoProxy) parseCidr(c, '--also-proxy CIDR');
  for (const c of opts.neverProxy) parseCidr(c, '--never-proxy CIDR');
  if (!opts.vif && (opts.alsoProxy.length || opts.neverProxy.length || opts.allowConflictingSubnets))
    throw new UsageError(
      '--also-proxy, --never-proxy and --allow-conflicting-subnets shape the VIF: leave out --no-vif to use them',
    );
  return {
    noVif: !opts.vif,
    alsoProxy: opts.alsoProxy,
    neverProxy: opts.neverProxy,
    allowConflictingSubnets: Boolean(opts.allowConflictingSubnets),
  };
}
