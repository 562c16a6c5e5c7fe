// The lab's network namespaces: tplab-node (control plane, kube-proxy, node agent, pod bridge) and
// tplab-ws (the workstation), joined by one veth pair. Both ends are created inside the namespaces,
// so the root namespace never holds a lab interface, address or route, not even for a moment.
import * as fs from 'node:fs';
import { runCommand } from './command.js';
import {
  LINK_PREFIX,
  NETNS_PREFIX,
  NODE_IP,
  NODE_LINK,
  NODE_NETNS,
  SERVICE_CIDR,
  WORKSTATION_IP,
  WORKSTATION_LINK,
  WORKSTATION_NETNS,
} from './topology.js';

const inNetns = (netns: string, ...argv: string[]) =>
  runCommand(['nsenter', `--net=/run/netns/${netns}`, '--', ...argv]);

/** Every network namespace whose name starts with `prefix` (the lab's and its pods'). */
export async function listNamespaces(prefix = NETNS_PREFIX): Promise<string[]> {
  const { stdout } = await runCommand(['ip', 'netns', 'list']);
  return stdout
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((name) => name.startsWith(prefix));
}

export async function namespaceExists(name: string): Promise<boolean> {
  return fs.existsSync(`/run/netns/${name}`) && (await listNamespaces(name)).includes(name);
}

/** The commands that build the lab's network, in order (pure, for review and tests). */
export function networkSetupCommands(): string[][] {
  const cidr = (addr: string) => `${addr}/${LINK_PREFIX}`;
  return [
    ['ip', 'netns', 'add', NODE_NETNS],
    ['ip', 'netns', 'add', WORKSTATION_NETNS],
    ['ip', '-n', NODE_NETNS, 'link', 'set', 'lo', 'up'],
    ['ip', '-n', WORKSTATION_NETNS, 'link', 'set', 'lo', 'up'],
    [
      'ip',
      '-n',
      NODE_NETNS,
      'link',
      'add',
      NODE_LINK,
      'type',
      'veth',
      'peer',
      'name',
      WORKSTATION_LINK,
      'netns',
      WORKSTATION_NETNS,
    ],
    ['ip', '-n', NODE_NETNS, 'addr', 'add', cidr(NODE_IP), 'dev', NODE_LINK],
    ['ip', '-n', WORKSTATION_NETNS, 'addr', 'add', cidr(WORKSTATION_IP), 'dev', WORKSTATION_LINK],
    ['ip', '-n', NODE_NETNS, 'link', 'set', NODE_LINK, 'up'],
    ['ip', '-n', WORKSTATION_NETNS, 'link', 'set', WORKSTATION_LINK, 'up'],
    // The API server dials ClusterIPs too (admission webhooks such as tp's injector, aggregated APIs). A
    // local connect needs a route before kube-proxy's OUTPUT DNAT rewrites the destination to a pod; a
    // real node has its default route for that, tplab-node has none. Any route will do: after the DNAT
    // the kernel routes again, to the pod bridge. (Added by the Kubernetes-integration work, issue 5.)
    ['ip', '-n', NODE_NETNS, 'route', 'add', SERVICE_CIDR, 'dev', NODE_LINK],
  ];
}

/**
 * Sysctls of tplab-node (per network namespace): forwarding between the pod bridge and the node,
 * and bridged pod traffic through iptables, so a pod -> Service -> pod on the same bridge gets its
 * reply un-NATed (kube-proxy's DNAT is reversed only if the reply passes conntrack).
 */
export const NODE_SYSCTLS: Record<string, string> = {
  'net.ipv4.ip_forward': '1',
  'net.bridge.bridge-nf-call-iptables': '1',
  'net.bridge.bridge-nf-call-ip6tables': '1',
};

/** Creates both namespaces and the link between them. Partial work is undone on failure. */
export async function createNetwork(): Promise<void> {
  try {
    for (const argv of networkSetupCommands()) await runCommand(argv);
    for (const [key, value] of Object.entries(NODE_SYSCTLS)) {
      if (key.startsWith('net.bridge.') && !fs.existsSync('/proc/sys/net/bridge')) {
        throw new Error(
          'the kernel has no bridge netfilter (/proc/sys/net/bridge is missing): load it with `modprobe br_netfilter` and run `tp-lab up` again',
        );
      }
      // /proc/sys/net shows the namespace of the process that writes it: write from inside.
      await inNetns(NODE_NETNS, 'sh', '-c', `echo ${value} > /proc/sys/${key.replace(/\./g, '/')}`);
    }
  } catch (err) {
    await deleteNamespaces([NODE_NETNS, WORKSTATION_NETNS]);
    throw err;
  }
}

/** Whether the lab's two namespaces exist with their link up and addressed. */
export async function networkHealthy(): Promise<boolean> {
  if (!(await namespaceExists(NODE_NETNS)) || !(await namespaceExists(WORKSTATION_NETNS))) return false;
  const node = await runCommand(['ip', '-n', NODE_NETNS, '-br', 'addr', 'show', 'dev', NODE_LINK], {
    check: false,
  });
  const ws = await runCommand(
    ['ip', '-n', WORKSTATION_NETNS, '-br', 'addr', 'show', 'dev', WORKSTATION_LINK],
    {
      check: false,
    },
  );
  return node.stdout.includes(`${NODE_IP}/`) && ws.stdout.includes(`${WORKSTATION_IP}/`);
}

/** PIDs of every process whose network namespace is `name`. */
export async function namespacePids(name: string): Promise<number[]> {
  const r = await runCommand(['ip', 'netns', 'pids', name], { check: false });
  return r.stdout
    .split('\n')
    .filter((l) => /^\d+$/.test(l.trim()))
    .map(Number);
}

/** Deletes namespaces (their interfaces, addresses, routes and iptables rules go with them). */
export async function deleteNamespaces(names: string[]): Promise<void> {
  for (const name of names) {
    if (!fs.existsSync(`/run/netns/${name}`)) continue;
    const r = await runCommand(['ip', 'netns', 'del', name], { check: false });
    if (fs.existsSync(`/run/netns/${name}`)) {
      throw new Error(
        `could not delete network namespace ${name}: ${r.stderr.trim() || 'ip netns del failed'}`,
      );
    }
  }
}
