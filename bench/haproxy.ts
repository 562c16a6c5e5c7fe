// Debian's HAProxy as the benches' reference relay: TCP mode, one thread (as each of tp's relays is one
// Node thread). bench/capture puts one in front of the app, as the agent is; bench/vif puts two in series
// on the VIF's hops (the workstation's namespace, the manager's, the pod), with and without the kernel's
// splice, to show what a relay written for the job reaches on the same path.

export interface HaproxyRelay {
  /** Where it listens (HAProxy's `bind`: `host:port`, `*:port`). */
  bind: string;
  /** Where it relays each connection to (`host:port`). */
  server: string;
  /** Moves the bytes with splice(2) both ways instead of reading and writing them (HAProxy's options). */
  splice?: boolean;
  maxconn?: number;
}

/** HAProxy's configuration file for one relay. */
export function haproxyConfig(relay: HaproxyRelay): string {
  return [
    'global',
    '  nbthread 1',
    ...(relay.maxconn ? [`  maxconn ${relay.maxconn}`] : []),
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    '  timeout client 60s',
    '  timeout server 60s',
    ...(relay.splice ? ['  option splice-request', '  option splice-response'] : []),
    'frontend relay',
    `  bind ${relay.bind}`,
    '  default_backend server',
    'backend server',
    `  server server ${relay.server}`,
    '',
  ].join('\n');
}
