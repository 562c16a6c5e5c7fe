// Where the user daemon serves the Connector API: part of the contract between the CLI and the daemon.
import * as os from 'node:os';
import * as path from 'node:path';
import { UsageError } from '../netaddr/parse.js';

/** $TP_RUN_DIR, else $XDG_RUNTIME_DIR/tp, else /tmp/tp-$UID. */
export function runDir(): string {
  if (process.env.TP_RUN_DIR) return process.env.TP_RUN_DIR;
  if (process.env.XDG_RUNTIME_DIR) return path.join(process.env.XDG_RUNTIME_DIR, 'tp');
  return path.join(os.tmpdir(), `tp-${process.getuid?.() ?? 'user'}`);
}

export function connectorSocketPath(): string {
  return path.join(runDir(), 'connector.sock');
}

/** The gRPC target of the connector socket. */
export function connectorTarget(): string {
  return `unix://${connectorSocketPath()}`;
}

/** Linux limits a unix socket path to 107 bytes; say so before anything tries to bind it. */
export function checkConnectorSocketPath(): void {
  const p = connectorSocketPath();
  if (Buffer.byteLength(p) > 107)
    throw new UsageError(
      `the run directory is too deep for a unix socket (${p} is ${Buffer.byteLength(p)} bytes, at most 107): set TP_RUN_DIR to a shorter path`,
    );
}
