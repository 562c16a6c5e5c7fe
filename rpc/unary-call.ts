// Promise wrappers for the generated callback-style unary stubs, and gRPC status helpers.
import { type CallOptions, Metadata, type ServiceError, status } from '@grpc/grpc-js';

type Callback<Res> = (error: ServiceError | null, response: Res) => void;

/**
 * Runs one unary call with a deadline: `unary((md, opts, cb) => client.version({}, md, opts, cb), 5000)`.
 * The stub is called through a closure so it keeps its `this`.
 */
export function unary<Res>(
  start: (metadata: Metadata, options: Partial<CallOptions>, callback: Callback<Res>) => unknown,
  timeoutMs: number,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    start(new Metadata(), { deadline: new Date(Date.now() + timeoutMs) }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

export function isServiceError(e: unknown): e is ServiceError {
  return e instanceof Error && typeof (e as Partial<ServiceError>).code === 'number';
}

export function hasStatus(e: unknown, code: status): boolean {
  return isServiceError(e) && e.code === code;
}

/** A ServiceError to hand to a server callback: `callback(grpcError(status.NOT_FOUND, 'no such …'))`. */
export function grpcError(code: status, details: string): Partial<ServiceError> {
  return { code, details, message: details, metadata: new Metadata() };
}

/**
 * The human part of a gRPC error: the details, without grpc-js's "14 UNAVAILABLE: " prefix, and a
 * failed connection said plainly ("connection refused by 127.0.0.1:18081").
 */
export function errorDetails(e: unknown): string {
  const text = isServiceError(e) ? e.details || e.message : e instanceof Error ? e.message : String(e);
  const connect = /connect (E[A-Z]+) (\S+?)\.?(\s|$)/.exec(text);
  if (connect) {
    const what: Record<string, string> = {
      ECONNREFUSED: 'connection refused by',
      ETIMEDOUT: 'connection timed out to',
      EHOSTUNREACH: 'no route to',
      ENETUNREACH: 'network unreachable for',
      ENOENT: 'no socket at',
    };
    return `${what[connect[1]!] ?? `${connect[1]} from`} ${connect[2]}`;
  }
  // grpc-js: "No connection established. Last error: read ECONNRESET (2026-…Z). Resolution note: " (the note
  // often empty): the failure and the note, without the timestamp.
  const last =
    /^No connection established\. Last error: (.*?)\.?(?: \(\d{4}-\d\d-\d\dT[^)]*\))?\.?(?: Resolution note: ?(.*))?$/s.exec(
      text,
    );
  if (last) {
    const reset = /^read ECONNRESET$/.test(last[1]!)
      ? 'the connection was reset as it opened (ECONNRESET)'
      : last[1];
    const note = last[2]?.trim();
    return `no connection: ${reset}${note ? ` (${note})` : ''}`;
  }
  if (isServiceError(e) && e.code === status.DEADLINE_EXCEEDED) return `no answer in time (${text})`;
  return text;
}
