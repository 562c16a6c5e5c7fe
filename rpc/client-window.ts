// A grpc-js channel takes one flow-control option, 'grpc-node.flow_control_window', for its streams'
// windows and its connection's alike, and tp wants a narrow stream window and a wide connection window
// (rpc/grpc-options.ts, FlowWindows). The channel is created with the stream window; the first tunnel stream
// on each connection widens the connection's receive window here.
//
// This reaches into grpc-js internals (pinned at 1.14.7): client call -> its InterceptingCall (`call`) ->
// the ResolvingCall (`call`) -> the InternalChannel (`channel`) -> its current picker -> the subchannel
// (`subchannel`, a wrapper whose `child` is the Subchannel) -> the Http2Transport (`transport`) -> `session`.
// rpc/client-window.test.ts fails if an upgrade moves them; widening is skipped (never fatal) when the
// path is not there, e.g. while the channel is still connecting (the next stream widens it then).
import type { Http2Session } from 'node:http2';
import type { ClientDuplexStream } from '@grpc/grpc-js';

const widened = new WeakMap<Http2Session, number>();

interface Internals {
  call?: {
    call?: {
      channel?: { currentPicker?: { subchannel?: { child?: { transport?: { session?: Http2Session } } } } };
    };
  };
}

/** The HTTP/2 session a client call runs on, if grpc-js still keeps it where 1.14 does. */
export function sessionOfCall(call: ClientDuplexStream<unknown, unknown>): Http2Session | undefined {
  const session = (call as unknown as Internals).call?.call?.channel?.currentPicker?.subchannel?.child
    ?.transport?.session;
  return session && typeof session.setLocalWindowSize === 'function' ? session : undefined;
}

/** Raises the receive window of the call's connection to at least `bytes` (never lowers it); false if not possible. */
export function widenConnectionWindow(call: ClientDuplexStream<unknown, unknown>, bytes: number): boolean {
  const session = sessionOfCall(call);
  if (!session || session.destroyed) return false;
  if ((widened.get(session) ?? 0) >= bytes) return true;
  try {
    session.setLocalWindowSize(bytes);
    widened.set(session, bytes);
    return true;
  } catch {
    return false;
  }
}
