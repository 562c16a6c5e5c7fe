// grpc-js servers keep HTTP/2's default 64 KiB receive windows (per stream and per connection) and take no
// option to raise them, unlike channels ('grpc-node.flow_control_window'). For tunnel traffic flowing
// towards the manager (agent -> manager on an upload, user daemon -> manager on a download) that means a
// WINDOW_UPDATE round trip through both event loops every 32 KiB. The manager therefore widens the windows
// of each client connection the first time a Tunnel call arrives on it (the stream and the connection
// window each to its own size: rpc/grpc-options.ts, FlowWindows).
//
// This reaches into grpc-js internals (pinned at 1.14.7): server call -> its BaseServerInterceptingCall
// (`call`) -> the HTTP/2 stream (`stream`) -> its session. rpc/server-window.test.ts fails if an upgrade
// moves them; widening is skipped (never fatal) when the path is not there.
import type { Http2Session } from 'node:http2';
import type { ServerDuplexStream } from '@grpc/grpc-js';
import type { FlowWindows } from './grpc-options.js';

/** The windows each connection was widened to. */
const widened = new WeakMap<Http2Session, FlowWindows>();

/** The HTTP/2 session a server call arrived on, if grpc-js still keeps it where 1.14 does. */
export function sessionOf(call: ServerDuplexStream<unknown, unknown>): Http2Session | undefined {
  const inner = (call as unknown as { call?: { stream?: { session?: Http2Session } } }).call;
  const session = inner?.stream?.session;
  return session && typeof session.setLocalWindowSize === 'function' ? session : undefined;
}

/**
 * Raises the connection's receive window and its streams' (those open now and later) to at least the given
 * sizes (never lowers either); false if not possible.
 */
export function widenReceiveWindow(
  call: ServerDuplexStream<unknown, unknown>,
  windows: FlowWindows,
): boolean {
  const session = sessionOf(call);
  if (!session || session.destroyed) return false;
  const before = widened.get(session) ?? { stream: 0, connection: 0 };
  if (before.stream >= windows.stream && before.connection >= windows.connection) return true;
  const after = {
    stream: Math.max(before.stream, windows.stream),
    connection: Math.max(before.connection, windows.connection),
  };
  widened.set(session, after);
  try {
    if (after.connection > before.connection) session.setLocalWindowSize(after.connection);
    // SETTINGS_INITIAL_WINDOW_SIZE applies to the streams open now and later on this connection.
    if (after.stream > before.stream) session.settings({ initialWindowSize: after.stream });
    return true;
  } catch {
    return false;
  }
}
