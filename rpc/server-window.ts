// grpc-js servers keep HTTP/2's default 64 KiB receive windows (per stream and per connection) and take no
// option to raise them, unlike channels ('grpc-node.flow_control_window'). For tunnel traffic flowing
// towards the manager (agent -> manager on an upload, user daemon -> manager on a download) that means a
// WINDOW_UPDATE round trip through both event loops every 32 KiB. The manager therefore widens the windows
// of each client connection the first time a Tunnel call arrives on it.
//
// This reaches into grpc-js internals (pinned at 1.14.7): server call -> its BaseServerInterceptingCall
// (`call`) -> the HTTP/2 stream (`stream`) -> its session. rpc/server-window.test.ts fails if an upgrade
// moves them; widening is skipped (never fatal) when the path is not there.
import type { Http2Session } from 'node:http2';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { FLOW_CONTROL_WINDOW_BYTES } from './grpc-options.js';

/** The window each connection was widened to. */
const widened = new WeakMap<Http2Session, number>();

/** The HTTP/2 session a server call arrived on, if grpc-js still keeps it where 1.14 does. */
export function sessionOf(call: ServerDuplexStream<unknown, unknown>): Http2Session | undefined {
  const inner = (call as unknown as { call?: { stream?: { session?: Http2Session } } }).call;
  const session = inner?.stream?.session;
  return session && typeof session.setLocalWindowSize === 'function' ? session : undefined;
}

/**
 * Raises the connection's and its streams' receive windows to at least `bytes` (never lowers them); false if
 * not possible.
 */
export function widenReceiveWindow(
  call: ServerDuplexStream<unknown, unknown>,
  bytes = FLOW_CONTROL_WINDOW_BYTES,
): boolean {
  const session = sessionOf(call);
  if (!session || session.destroyed) return false;
  if ((widened.get(session) ?? 0) >= bytes) return true;
  widened.set(session, bytes);
  try {
    session.setLocalWindowSize(bytes);
    // SETTINGS_INITIAL_WINDOW_SIZE applies to the streams open now and later on this connection.
    session.settings({ initialWindowSize: bytes });
    return true;
  } catch {
    return false;
  }
}
