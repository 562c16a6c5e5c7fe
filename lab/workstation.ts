// Commands "on the workstation" (`tp-lab exec`): in the tplab-ws network namespace AND in a private mount
// namespace whose /etc/resolv.conf is a bind mount of the lab's own file ($TP_LAB_DIR/ws/resolv.conf), as
// `ip netns exec` does with /etc/netns/NAME/resolv.conf. tp's root daemon rewrites the resolv.conf it sees
// while connected; with `nsenter --net` alone that would be the host's.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError } from '../netaddr/parse.js';
import type { LabPaths } from './paths.js';

const HOST_RESOLV_CONF = '/etc/resolv.conf';

/**
 * The workstation has no route to a real resolver (the lab sends nothing outside its namespaces): names
 * go to 127.0.0.1 in tplab-ws, where nothing answers unless a test starts a DNS server there; a lookup
 * then fails at once instead of waiting for a server it cannot reach.
 */
export const WORKSTATION_RESOLV_CONF = [
  '# tp-lab: /etc/resolv.conf of the commands `tp-lab exec` runs in the workstation namespace (tplab-ws),',
  "# a private bind mount of this file: tp may rewrite it while connected; the host's is never touched.",
  'nameserver 127.0.0.1',
  'options timeout:1 attempts:1',
  '',
].join('\n');

export function workstationResolvConfPath(p: LabPaths): string {
  return path.join(p.root, 'ws', 'resolv.conf');
}

/** Creates the workstation's resolv.conf when missing (`up`, and `exec` on a lab started before it existed). */
export function ensureWorkstationResolvConf(p: LabPaths): string {
  const file = workstationResolvConfPath(p);
  if (!fs.existsSync(file)) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, WORKSTATION_RESOLV_CONF, { mode: 0o644 });
  }
  return file;
}

/**
 * The argv that runs `argv` in network namespace `netns`; with `resolvConf`, also in a private mount
 * namespace where /etc/resolv.conf is that file. The last process is the command itself (each step
 * execs the next), so signals sent to the child reach it.
 */
export function labExecArgv(netns: string, argv: string[], resolvConf?: string): string[] {
  const enter = ['nsenter', `--net=/run/netns/${netns}`, '--'];
  if (!resolvConf) return [...enter, ...argv];
  if (!path.isAbsolute(resolvConf))
    throw new Error(`the workstation resolv.conf must be absolute: ${resolvConf}`);
  // unshare --mount makes every mount private by default: the bind mount never reaches the host.
  return [
    ...enter,
    'unshare',
    '--mount',
    '--propagation',
    'private',
    '--',
    'sh',
    '-c',
    `mount --bind "$0" ${HOST_RESOLV_CONF} && exec "$@"`,
    resolvConf,
    ...argv,
  ];
}

/** The host must have a /etc/resolv.conf for the bind mount to land on (it is never written). */
export function checkHostResolvConf(): void {
  if (!fs.existsSync(HOST_RESOLV_CONF))
    throw new UsageError(
      `${HOST_RESOLV_CONF} does not exist on this host: tp-lab exec bind-mounts the workstation's own resolv.conf over it (create an empty one: touch ${HOST_RESOLV_CONF})`,
    );
}
