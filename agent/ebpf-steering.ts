// The agent's side of eBPF capture (TP_MECHANISM=ebpf, see docs/ebpf.md): tp-init attached the sk_lookup
// program; the agent puts a listener in the steering map for exactly the app ports it intercepts, so every
// other connection goes straight to the app, and the kernel drops the entries when the agent's listening
// sockets close (with the container: tp-agent-holder holds them while a worker restarts).
import type { Logger } from '../logging/logger.js';

export interface Steering {
  /** Steers exactly these app ports (those with an active intercept) to the agent. */
  sync(activePorts: Iterable<number>): void;
}

/**
 * Opens the pod's steering maps, or returns undefined when tp-init fell back to iptables in this pod (then
 * connections arrive redirected, as with TP_MECHANISM=iptables). Throws a UsageError when the maps are
 * there but unusable (a port not captured, no permission), so the agent stops at once saying why.
 * @param listenerFdOf the fd of the listening socket that serves an app port
 */
export async function openSteering(
  appPorts: readonly number[],
  listenerFdOf: (appPort: number) => number | undefined,
  pinRoot: string | undefined,
  log: Logger,
): Promise<Steering | undefined> {
  // Loaded only here: it brings koffi and libbpf, which an iptables agent never needs.
  const { ebpfCaptureApplied, ListenerSteering, unregisterListener } = await import('../bpf/steering-map.js');
  if (!ebpfCaptureApplied(pinRoot)) {
    log.warn('eBPF capture is not applied in this pod (tp-init fell back to iptables): using the redirect');
    return undefined;
  }
  const steering = ListenerSteering.open(appPorts, listenerFdOf, pinRoot);
  // Under tp-agent-holder the listening sockets outlive a worker that died, and so do the map's entries
  // for them (the kernel drops an entry when its socket closes): a new worker starts from none steered,
  // as its first sync assumes, and its intercepts put theirs back.
  const stale = appPorts.filter((p) => unregisterListener(steering.pinDir, p));
  if (stale.length)
    log.info('no longer steering ports a previous agent worker steered', { ports: stale.join(',') });
  log.info('eBPF capture: steering intercepted ports to the agent', { pins: steering.pinDir });
  return {
    sync(activePorts) {
      const change = steering.sync(activePorts);
      if (change.registered.length) log.info('steering to the agent', { ports: change.registered.join(',') });
      if (change.unregistered.length) log.info('back to the app', { ports: change.unregistered.join(',') });
      for (const f of change.failed)
        log.error('cannot steer a port to the agent: its intercept gets no connections', {
          port: f.port,
          reason: f.message,
        });
    },
  };
}
