// The kubelet's side of the streaming upgrade: the API server asks to switch the HTTP connection to
// SPDY/3.1 and offers sub-protocols in X-Stream-Protocol-Version; we answer 101 with the first one it
// offered that we speak (httpstream.Handshake), or a plain HTTP error with a Status body.
import type { IncomingHttpHeaders } from 'node:http';

export const PORT_FORWARD_PROTOCOLS: readonly string[] = ['portforward.k8s.io'];
/**
 * The kubelet's list and order (remotecommandconsts.SupportedStreamingProtocols). v5 is WebSocket-only:
 * the API server translates kubectl's WebSocket exec and speaks v4 over SPDY to the kubelet.
 */
export const EXEC_PROTOCOLS: readonly string[] = [
  'v4.channel.k8s.io',
  'v3.channel.k8s.io',
  'v2.channel.k8s.io',
  'channel.k8s.io',
];

export type Negotiation =
  | { ok: true; protocol: string }
  | { ok: false; status: number; message: string; headers: Record<string, string> };

/** Node joins repeated headers with ", "; the API server sends one header per protocol. */
export function offeredProtocols(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const joined = Array.isArray(value) ? value.join(',') : value;
  return joined
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '');
}

export function negotiateProtocol(offered: string[], supported: readonly string[]): Negotiation {
  if (offered.length === 0) {
    return {
      ok: false,
      status: 400,
      message: 'unable to upgrade: X-Stream-Protocol-Version header is required',
      headers: {},
    };
  }
  const protocol = offered.find((p) => supported.includes(p));
  if (protocol === undefined) {
    return {
      ok: false,
      status: 403,
      message: `unable to upgrade: unable to negotiate protocol: client supports [${offered.join(' ')}], server accepts [${supported.join(' ')}]`,
      headers: { 'X-Accepted-Stream-Protocol-Versions': supported.join(', ') },
    };
  }
  return { ok: true, protocol };
}

export function isSpdyUpgrade(headers: IncomingHttpHeaders): boolean {
  return (
    /\bupgrade\b/i.test(headers.connection ?? '') && /^spdy\/3\.1$/i.test((headers.upgrade ?? '').trim())
  );
}

export function switchingProtocolsResponse(protocol: string): string {
  return [
    'HTTP/1.1 101 Switching Protocols',
    'Connection: Upgrade',
    'Upgrade: SPDY/3.1',
    `X-Stream-Protocol-Version: ${protocol}`,
    '',
    '',
  ].join('\r\n');
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

const STATUS_REASONS: Record<number, string> = {
  400: 'BadRequest',
  403: 'Forbidden',
  404: 'NotFound',
  500: 'InternalError',
  503: 'ServiceUnavailable',
};

/** A metav1.Status failure body, what the API server relays to kubectl. */
export function statusBody(code: number, message: string): string {
  return JSON.stringify({
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason: STATUS_REASONS[code] ?? 'InternalError',
    code,
  });
}

/** A complete HTTP/1.1 error response for a connection that was not upgraded. */
export function errorResponse(code: number, message: string, headers: Record<string, string> = {}): string {
  const body = statusBody(code, message);
  const lines = [
    `HTTP/1.1 ${code} ${REASONS[code] ?? 'Error'}`,
    'Content-Type: application/json',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    '',
    body,
  ];
  return lines.join('\r\n');
}
