// The Node object and its heartbeats: register (Ready, addresses, capacity, kubelet endpoint, node
// info), renew the Lease in kube-node-lease every 10 s, refresh the status every minute, and wait
// for the controller-manager to allocate spec.podCIDR.
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { V1Node } from '@kubernetes/client-node';
import type { Logger } from '../../logging/logger.js';
import { VERSION } from '../../version/version.js';
import { apiErrorMessage, isConflict, type NodeApi } from './kube-api.js';

const LEASE_DURATION_SECONDS = 40;
const LEASE_RENEW_MS = 10_000;
const STATUS_REFRESH_MS = 60_000;

export interface NodeIdentity {
  name: string;
  ip: string;
  kubeletPort: number;
  /** Where pods' state lives: its filesystem's size is the ephemeral-storage capacity. */
  stateDir: string;
  taints: { key: string; value?: string; effect: string }[];
}

function readFirstLine(file: string, fallback: string): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n')[0]!.trim() || fallback;
  } catch {
    return fallback;
  }
}

function osImage(): string {
  try {
    const m = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(fs.readFileSync('/etc/os-release', 'utf8'));
    if (m) return m[1]!;
  } catch {
    // fall through
  }
  return `${os.type()} ${os.release()}`;
}

export function nodeArch(): string {
  const arch = os.arch();
  return arch === 'x64' ? 'amd64' : arch === 'ia32' ? '386' : arch;
}

/** capacity = allocatable: the lab reserves nothing for system daemons. */
export function nodeResources(stateDir: string): Record<string, string> {
  let storage = '0';
  try {
    const st = fs.statfsSync(stateDir);
    storage = `${Math.floor((st.blocks * st.bsize) / 1024)}Ki`;
  } catch {
    // unknown size
  }
  return {
    cpu: String(os.cpus().length),
    memory: `${Math.floor(os.totalmem() / 1024)}Ki`,
    pods: '110',
    'ephemeral-storage': storage,
    'hugepages-2Mi': '0',
  };
}

export function nodeStatus(id: NodeIdentity, kubeletVersion: string, now: string): Record<string, unknown> {
  const resources = nodeResources(id.stateDir);
  const machineId = readFirstLine('/etc/machine-id', id.name);
  const condition = (type: string, status: string, reason: string, message: string) => ({
    type,
    status,
    reason,
    message,
    lastHeartbeatTime: now,
    lastTransitionTime: now,
  });
  return {
    capacity: resources,
    allocatable: resources,
    conditions: [
      condition(
        'MemoryPressure',
        'False',
        'KubeletHasSufficientMemory',
        'kubelet has sufficient memory available',
      ),
      condition('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'),
      condition('PIDPressure', 'False', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'),
      condition('Ready', 'True', 'KubeletReady', 'kubelet is posting ready status'),
    ],
    addresses: [
      { type: 'InternalIP', address: id.ip },
      { type: 'Hostname', address: id.name },
    ],
    daemonEndpoints: { kubeletEndpoint: { Port: id.kubeletPort } },
    nodeInfo: {
      machineID: machineId,
      systemUUID: readFirstLine('/sys/class/dmi/id/product_uuid', machineId),
      bootID: readFirstLine('/proc/sys/kernel/random/boot_id', ''),
      kernelVersion: os.release(),
      osImage: osImage(),
      containerRuntimeVersion: `tplab://${VERSION}`,
      kubeletVersion,
      kubeProxyVersion: kubeletVersion,
      operatingSystem: 'linux',
      architecture: nodeArch(),
    },
  };
}

export class NodeRegistration {
  private node: V1Node | undefined;
  private leaseTimer: NodeJS.Timeout | undefined;
  private statusTimer: NodeJS.Timeout | undefined;
  private kubeletVersion = 'v0.0.0';
  private readonly log: Logger;

  constructor(
    private readonly api: NodeApi,
    private readonly id: NodeIdentity,
    log: Logger,
  ) {
    this.log = log.child('node');
  }

  get uid(): string {
    return this.node?.metadata?.uid ?? '';
  }

  /** Creates the Node (or takes over the existing one) and marks it Ready. */
  async register(): Promise<void> {
    try {
      this.kubeletVersion = await this.api.serverVersion();
    } catch (err) {
      this.log.warn('cannot read the API server version', { error: apiErrorMessage(err) });
    }
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const arch = nodeArch();
    const body = {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: {
        name: this.id.name,
        labels: {
          'kubernetes.io/hostname': this.id.name,
          'kubernetes.io/os': 'linux',
          'kubernetes.io/arch': arch,
          'beta.kubernetes.io/os': 'linux',
          'beta.kubernetes.io/arch': arch,
        },
        annotations: { 'volumes.kubernetes.io/controller-managed-attach-detach': 'true' },
      },
      spec: this.id.taints.length ? { taints: this.id.taints } : {},
    } as V1Node;
    try {
      this.node = await this.api.createNode(body);
      this.log.info('registered the node', { name: this.id.name });
    } catch (err) {
      if (!isConflict(err))
        throw new Error(`registering node ${this.id.name} failed: ${apiErrorMessage(err)}`);
      this.log.info('the node exists already; taking it over', { name: this.id.name });
    }
    // The status goes in a patch of its own: the create body is typed (timestamps as Date), the patch is raw.
    this.node = await this.api.patchNodeStatus(nodeStatus(this.id, this.kubeletVersion, now));
  }

  /** Lease renewal every 10 s and a status refresh every minute, until stop(). */
  startHeartbeats(): void {
    const renew = async () => {
      try {
        await this.api.renewLease(this.uid, LEASE_DURATION_SECONDS);
      } catch (err) {
        this.log.warn('renewing the node lease failed', { error: apiErrorMessage(err) });
      }
    };
    const refresh = async () => {
      try {
        const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
        const status = nodeStatus(this.id, this.kubeletVersion, now);
        // Keep transition times: only the heartbeat moves while the conditions stay the same.
        const previous = this.node?.status?.conditions ?? [];
        for (const c of status.conditions as { type: string; status: string; lastTransitionTime: string }[]) {
          const before = previous.find((p) => p.type === c.type);
          if (before?.status === c.status && before.lastTransitionTime) {
            const t = before.lastTransitionTime as unknown;
            c.lastTransitionTime =
              typeof t === 'string' ? t : (t as Date).toISOString().replace(/\.\d+Z$/, 'Z');
          }
        }
        this.node = await this.api.patchNodeStatus(status);
      } catch (err) {
        this.log.warn('updating the node status failed', { error: apiErrorMessage(err) });
      }
    };
    void renew();
    this.leaseTimer = setInterval(() => void renew(), LEASE_RENEW_MS);
    this.statusTimer = setInterval(() => void refresh(), STATUS_REFRESH_MS);
  }

  stop(): void {
    clearInterval(this.leaseTimer);
    clearInterval(this.statusTimer);
  }

  /** Waits until the controller-manager has allocated this node's pod CIDR. */
  async waitForPodCidr(signal: AbortSignal): Promise<string> {
    const started = Date.now();
    let lastNotice = started;
    while (!signal.aborted) {
      try {
        const node = await this.api.readNode();
        const cidr = node?.spec?.podCIDR;
        if (cidr) return cidr;
      } catch (err) {
        this.log.warn('reading the node failed', { error: apiErrorMessage(err) });
      }
      if (Date.now() - lastNotice > 30_000) {
        lastNotice = Date.now();
        this.log.warn(
          'still waiting for a podCIDR: is kube-controller-manager running with --allocate-node-cidrs=true and --cluster-cidr?',
          { waitedSeconds: Math.round((Date.now() - started) / 1000) },
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    throw new Error('stopped while waiting for a podCIDR');
  }
}
