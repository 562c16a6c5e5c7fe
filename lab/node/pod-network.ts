// The pod network inside the node's namespace: a bridge holding the podCIDR's first address, and per
// pod a network namespace `tplab-p-<hash>` joined to it by a veth pair (eth0 inside, the pod's IP,
// default route via the bridge). Driven with iproute2; every step checks what exists first, so set-up
// can be repeated after a failure or a node-agent restart.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import type { HostTools } from './container-process.js';

const run = promisify(execFile);

export const POD_NETNS_PREFIX = 'tplab-p-';
const VETH_PREFIX = 'tplp';
const NETNS_DIR = '/run/netns';

export interface PodNetwork {
  netns: string;
  /** The host end on the bridge; <= 15 characters (IFNAMSIZ). */
  hostVeth: string;
  ip: string;
  prefix: number;
  gateway: string;
}

/** Stable names from the pod UID, so a restarted node agent finds the same namespace again. */
export function podNetworkNames(podUid: string): { netns: string; hostVeth: string } {
  const hash = createHash('sha256').update(podUid).digest('hex').slice(0, 10);
  return { netns: `${POD_NETNS_PREFIX}${hash}`, hostVeth: `${VETH_PREFIX}${hash}` };
}

export function netnsPath(name: string): string {
  return `${NETNS_DIR}/${name}`;
}

async function ip(tools: HostTools, args: string[]): Promise<string> {
  try {
    const { stdout } = await run(tools.ip, args, { timeout: 15_000 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`ip ${args.join(' ')}: ${(e.stderr ?? e.message).trim()}`);
  }
}

async function linkExists(tools: HostTools, name: string, netns?: string): Promise<boolean> {
  try {
    await run(tools.ip, [...(netns ? ['-n', netns] : []), 'link', 'show', 'dev', name], { timeout: 15_000 });
    return true;
  } catch {
    return false;
  }
}

export function netnsExists(name: string): boolean {
  return fs.existsSync(netnsPath(name));
}

function writeSysctl(name: string, value: string): void {
  const file = `/proc/sys/${name.replace(/\./g, '/')}`;
  if (fs.existsSync(file)) fs.writeFileSync(file, value);
}

/**
 * The bridge's MAC address: fixed, locally administered, derived from the gateway address (as
 * OVN-Kubernetes does, 0a:58 + the IPv4 bytes). A bridge whose address the kernel picked takes the
 * lowest MAC of its ports and changes it whenever a pod's veth with a lower one joins or the owner
 * leaves; every pod that cached the gateway's old MAC then sends its replies nowhere until its
 * neighbour entry expires (seen as CoreDNS unreachable from the node for ~30 s at a time while pods
 * came and went). An address set explicitly is never changed by the bridge.
 */
export function bridgeMac(gateway: string): string {
  const octets = gateway.split('.').map(Number);
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255)) {
    throw new Error(`bridge gateway ${gateway}: not an IPv4 address`);
  }
  return ['0a', '58', ...octets.map((o) => o.toString(16).padStart(2, '0'))].join(':');
}

/**
 * The bridge in the node's namespace (where the node agent runs), with IP forwarding on and bridged
 * traffic passing iptables, so kube-proxy's DNAT also applies between pods on the bridge.
 */
export async function ensureBridge(tools: HostTools, bridge: string, gateway: string, prefix: number) {
  const mac = bridgeMac(gateway);
  if (!(await linkExists(tools, bridge))) {
    await ip(tools, ['link', 'add', bridge, 'address', mac, 'type', 'bridge']);
  } else if (!(await ip(tools, ['-o', 'link', 'show', 'dev', bridge])).includes(` link/ether ${mac} `)) {
    // A bridge made before the address was pinned: pin it now.
    await ip(tools, ['link', 'set', 'dev', bridge, 'address', mac]);
  }
  const addrs = await ip(tools, ['-o', '-4', 'addr', 'show', 'dev', bridge]);
  if (!addrs.includes(` ${gateway}/${prefix} `)) {
    await ip(tools, ['addr', 'replace', `${gateway}/${prefix}`, 'dev', bridge]);
  }
  await ip(tools, ['link', 'set', bridge, 'up']);
  writeSysctl('net.ipv4.ip_forward', '1');
  writeSysctl('net.bridge.bridge-nf-call-iptables', '1');
  // Pod-to-pod traffic through the gateway leaves by the port it came in: no redirects for that.
  writeSysctl(`net.ipv4.conf.${bridge}.send_redirects`, '0');
}

export async function removeBridge(tools: HostTools, bridge: string): Promise<void> {
  if (await linkExists(tools, bridge)) await ip(tools, ['link', 'del', bridge]);
}

/** Creates (or completes) a pod's namespace and link. */
export async function setupPodNetwork(
  tools: HostTools,
  bridge: string,
  net: PodNetwork,
  sysctls: { name: string; value: string }[] = [],
): Promise<void> {
  if (!netnsExists(net.netns)) await ip(tools, ['netns', 'add', net.netns]);
  const ns = ['-n', net.netns];
  if (!(await linkExists(tools, 'eth0', net.netns))) {
    if (await linkExists(tools, net.hostVeth)) await ip(tools, ['link', 'del', net.hostVeth]);
    await ip(tools, [
      'link',
      'add',
      net.hostVeth,
      'type',
      'veth',
      'peer',
      'name',
      'eth0',
      'netns',
      net.netns,
    ]);
  }
  await ip(tools, ['link', 'set', net.hostVeth, 'master', bridge]);
  // Hairpin: a pod reaching itself through its Service comes back in on its own port.
  await ip(tools, ['link', 'set', net.hostVeth, 'type', 'bridge_slave', 'hairpin', 'on']);
  await ip(tools, ['link', 'set', net.hostVeth, 'up']);
  await ip(tools, [...ns, 'link', 'set', 'lo', 'up']);
  await ip(tools, [...ns, 'addr', 'replace', `${net.ip}/${net.prefix}`, 'dev', 'eth0']);
  await ip(tools, [...ns, 'link', 'set', 'eth0', 'up']);
  await ip(tools, [...ns, 'route', 'replace', 'default', 'via', net.gateway, 'dev', 'eth0']);
  // Like containerd: unprivileged processes may bind low ports and ping. Then the pod's own sysctls.
  const settings = [
    { name: 'net.ipv4.ip_unprivileged_port_start', value: '0' },
    { name: 'net.ipv4.ping_group_range', value: '0 2147483647' },
    ...sysctls.filter((s) => s.name.startsWith('net.')),
  ];
  const script = settings
    .map((s) => `echo '${s.value.replace(/'/g, '')}' > /proc/sys/${s.name.replace(/\./g, '/')}`)
    .join('\n');
  try {
    await run(tools.nsenter, [`--net=${netnsPath(net.netns)}`, '--', tools.sh, '-c', script], {
      timeout: 15_000,
    });
  } catch (err) {
    throw new Error(`setting sysctls in ${net.netns}: ${((err as { stderr?: string }).stderr ?? '').trim()}`);
  }
}

/** PIDs of every process in a pod's network namespace. */
export async function netnsPids(tools: HostTools, netns: string): Promise<number[]> {
  if (!netnsExists(netns)) return [];
  try {
    const { stdout } = await run(tools.ip, ['netns', 'pids', netns], { timeout: 15_000 });
    return stdout
      .split(/\s+/)
      .filter((s) => /^\d+$/.test(s))
      .map(Number);
  } catch {
    return [];
  }
}

/** Kills whatever still runs in the namespace (children that left their process group), then removes it. */
export async function teardownPodNetwork(tools: HostTools, net: Pick<PodNetwork, 'netns' | 'hostVeth'>) {
  for (const pid of await netnsPids(tools, net.netns)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  if (netnsExists(net.netns)) await ip(tools, ['netns', 'del', net.netns]);
  // Deleting the namespace takes its eth0 and so the whole veth pair with it, asynchronously: the
  // host end may vanish between the check and the delete.
  if (await linkExists(tools, net.hostVeth)) {
    await ip(tools, ['link', 'del', net.hostVeth]).catch((err: Error) => {
      if (!/Cannot find device/.test(err.message)) throw err;
    });
  }
}
