// A tunnel flow's gRPC stream, the same on both sides of the bidi RPC: the client call (agents, daemons)
// and the server call (the manager). It adds what the flow needs on top of grpc-js:
// - one message handler at a time, and messages that arrive between handlers are queued, so a caller can
//   read OPEN, decide, then hand the stream on without losing the DATA that follows;
// - a send budget in bytes: grpc-js buffers 16 messages before write() returns false, i.e. 16 MiB of
//   1 MiB messages per flow; counting the bytes not yet handed to HTTP/2 keeps it to a few MiB.
import { EventEmitter } from 'node:events';
import type { ClientDuplexStream, ServerDuplexStream } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import { widenConnectionWindow } from '../rpc/client-window.js';
import type { FlowWindows } from '../rpc/grpc-options.js';
import type { AgentClient, ManagerClient } from '../rpc/manager-service.js';
import type { FramedCall } from './framed-call.js';
import type { TunnelMessage } from './messages.js';

export type TunnelCall =
  | ClientDuplexStream<TunnelMessage, TunnelMessage>
  | ServerDuplexStream<TunnelMessage, TunnelMessage>
  /** A flow on a byte stream of its own (tunnel/framed-call.ts). */
  | FramedCall;

/** Bytes a flow may have queued in grpc-js before its producer pauses. */
export const SEND_BUDGET_BYTES = 2 << 20;
/** Messages a flow may have queued (small messages: keystrokes, KEEPALIVE). */
const SEND_BUDGET_MESSAGES = 16;

export type MessageHandler = (m: TunnelMessage) => void;

/**
 * Events: 'drain' (the send budget has room again), 'peer-end' (the peer finished its side of the gRPC
 * stream), 'failure' (reason: the stream failed: cancelled, the peer vanished, a transport error).
 */
export class TunnelStream extends EventEmitter {
  private handler: MessageHandler | undefined;
  private queue: TunnelMessage[] = [];
  private inflightBytes = 0;
  private inflightMessages = 0;
  private blocked = false;
  private ended = false;
  private finished = false;
  private endPending = false;
  private endedWith: { event: 'peer-end' | 'failure'; reason?: string } | undefined;
  /** Set when the flow was paused by its consumer (as opposed to by the handler gap). */
  private consumerPaused = false;

  /**
   * A new Tunnel call on `client`'s channel. Its connection's receive window is widened to
   * `windows.connection` (the channel was created with the stream window, rpc/grpc-options.ts).
   */
  /** A new Tunnel call on the manager's service, or on an agent's (agent/direct.ts). */
  static open(client: ManagerClient | AgentClient, windows: FlowWindows): TunnelStream {
    const call = client.tunnel();
    widenConnectionWindow(call as ClientDuplexStream<unknown, unknown>, windows.connection);
    return new TunnelStream(call);
  }

  constructor(readonly call: TunnelCall) {
    super();
    // The same events on every kind of call (their typings' overloads do not unite).
    const events = call as EventEmitter;
    events.on('data', (m: TunnelMessage) => this.deliver(m));
    events.on('end', () => this.finish('peer-end'));
    events.on('error', (e: Error & { details?: string }) => this.finish('failure', e.details || e.message));
    // A server call whose client went away (connection lost, call cancelled) emits only 'cancelled'.
    events.on('cancelled', () => this.finish('failure', 'the peer cancelled the stream'));
    events.on('close', () => this.finish('failure', 'the stream closed'));
  }

  /** Where this stream's messages go from now on; messages queued meanwhile are delivered first. */
  onMessage(handler: MessageHandler | undefined): void {
    this.handler = handler;
    if (!handler) return;
    while (this.queue.length > 0 && this.handler === handler) handler(this.queue.shift()!);
    if (this.endPending && this.queue.length === 0) {
      this.endPending = false;
      this.finish('peer-end');
      return;
    }
    if (!this.consumerPaused) this.call.resume();
  }

  /**
   * True for the server call: once grpc-js reports a message written it keeps no reference to it. A client
   * call may keep written messages for a transparent retry until the call commits. A FramedCall says.
   */
  get writesAreFinal(): boolean {
    if ('writesAreFinal' in this.call) return this.call.writesAreFinal;
    return !('cancel' in this.call);
  }

  /**
   * Sends a message; false: over budget, stop producing until 'drain'. `written` runs once grpc-js has
   * written it (not when the write failed).
   */
  send(m: TunnelMessage, written?: (m: TunnelMessage) => void): boolean {
    if (this.ended) return false;
    const bytes = m.data.length;
    this.inflightBytes += bytes;
    this.inflightMessages++;
    this.call.write(m, (error?: Error | null) => {
      if (!error) written?.(m);
      this.inflightBytes -= bytes;
      this.inflightMessages--;
      if (this.blocked && this.hasRoom()) {
        this.blocked = false;
        this.emit('drain');
      }
    });
    if (!this.hasRoom()) this.blocked = true;
    return !this.blocked;
  }

  get writable(): boolean {
    return !this.ended;
  }

  /** Stop delivering messages (the consumer is full); the peer's sends stall once HTTP/2 windows fill. */
  pause(): void {
    this.consumerPaused = true;
    this.call.pause();
  }

  resume(): void {
    this.consumerPaused = false;
    if (this.handler) this.call.resume();
  }

  /** This side sends nothing more: finishes the gRPC stream (half close; the server's end sends OK). */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.call.end();
  }

  /**
   * Turns the stream away: sends `last` (a RESET or DIAL_REJECT saying why) if given, ends this side, and
   * reads and drops whatever the peer still sends, so that its end is seen and the stream forgotten.
   */
  dismiss(last?: TunnelMessage): void {
    if (last) this.send(last);
    this.end();
    this.onMessage(() => {});
  }

  /** Ends the gRPC stream with an error: the client cancels, the server answers ABORTED. */
  abort(reason: string): void {
    this.ended = true;
    if ('cancel' in this.call) this.call.cancel();
    else if (!this.call.cancelled) this.call.emit('error', { code: status.ABORTED, details: reason });
    this.finish('failure', reason);
  }

  /** The peer's address as grpc-js reports it, for logs. */
  get peer(): string {
    try {
      return this.call.getPeer();
    } catch {
      return 'unknown';
    }
  }

  private hasRoom(): boolean {
    return this.inflightBytes < SEND_BUDGET_BYTES && this.inflightMessages < SEND_BUDGET_MESSAGES;
  }

  private deliver(m: TunnelMessage): void {
    if (this.handler && this.queue.length === 0) {
      this.handler(m);
      return;
    }
    this.queue.push(m);
    // No one reads: stop pulling from grpc-js so the queue stays short.
    if (!this.handler) this.call.pause();
  }

  /** How the stream ended, once it has: late listeners check this instead of waiting for an event. */
  get ending(): { event: 'peer-end' | 'failure'; reason?: string } | undefined {
    return this.endedWith;
  }

  private finish(event: 'peer-end' | 'failure', reason?: string): void {
    if (this.finished) return;
    // The peer ended normally but its last messages wait in the queue: the end is reported after them,
    // and the 'close' that follows the end is not a failure.
    if (this.endPending && event === 'failure') return;
    if (event === 'peer-end' && this.queue.length > 0) {
      // The queued messages come first (the peer's CLOSE_SEND may be among them): the next handler
      // drains them, then sees the end.
      this.endPending = true;
      return;
    }
    this.finished = true;
    this.endedWith = { event, reason };
    this.emit(event, reason);
  }
}
