// The VIF's flows as tunnel streams to the traffic manager, which dials each destination in the cluster.
//
// TCP: the VIF holds the client's SYN until the destination answered, so this dials first (OPEN, then
// DIAL_OK or DIAL_REJECT) and only then gets the accepted socket to pump. tunnel/flow.ts's originate()
// takes the socket first and does both steps; DialedStream below lets it run on a stream whose dial is
// already done (its OPEN is not sent twice, and the DIAL_OK it waits for is replayed).
import type * as net from 'node:net';
import type { Logger } from '../../logging/logger.js';
import type { ManagerClient } from '../../rpc/gen/manager.js';
import { originate } from '../../tunnel/flow.js';
import { msg, type StreamInfo, streamInfo, TunnelCode, type TunnelMessage } from '../../tunnel/messages.js';
import { type MessageHandler, TunnelStream } from '../../tunnel/stream.js';
import { DEFAULT_UDP_IDLE_TIMEOUT_MS, openUdp, UdpDialRejected } from '../../tunnel/udp-flow.js';
import {
  DialRejectedError,
  type FlowDialer,
  type FlowId,
  type TcpDial,
  type UdpFlow,
} from '../../vif/flows.js';

/** How long the manager may take to dial a destination in the cluster. */
export const DIAL_TIMEOUT_MS = 5_000;

/**
 * A tunnel stream that performs the OPEN/DIAL_OK exchange on its own, then hands itself to originate():
 * the OPEN originate() sends is dropped and the DIAL_OK it waits for is delivered once more, after
 * originate() has set itself up (a microtask later) and before the DATA that may have queued meanwhile.
 */
class DialedStream extends TunnelStream {
  private dialDone = false;
  private replayed = false;

  /** Sends OPEN and waits for DIAL_OK; rejects with DialRejectedError when the dial fails. */
  dial(info: StreamInfo): Promise<void> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (error?: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.off('peer-end', onEnd);
        this.off('failure', onFailure);
        if (error === undefined) {
          this.dialDone = true;
          super.onMessage(undefined);
          resolve();
          return;
        }
        super.onMessage(undefined);
        this.end();
        reject(new DialRejectedError(error));
      };
      // The manager has its own dial timeout (info.dialTimeoutMs); this one covers a manager that is gone.
      const timer = setTimeout(() => {
        this.send(msg.reset('no answer to OPEN'));
        settle(`the traffic manager did not answer within ${info.dialTimeoutMs + 2_000} ms`);
      }, info.dialTimeoutMs + 2_000);
      const onEnd = () => settle('the traffic manager ended the stream before answering');
      const onFailure = (reason?: string) =>
        settle(`the tunnel to the traffic manager failed: ${reason ?? 'unknown'}`);
      this.once('peer-end', onEnd);
      this.once('failure', onFailure);
      super.onMessage((m: TunnelMessage) => {
        if (m.code === TunnelCode.DIAL_OK) settle();
        else if (m.code === TunnelCode.DIAL_REJECT)
          settle(m.error || 'the destination refused the connection');
        else if (m.code === TunnelCode.RESET) settle(m.error || 'the traffic manager reset the flow');
        else if (m.code !== TunnelCode.KEEPALIVE) {
          this.send(msg.reset(`unexpected message ${m.code} before DIAL_OK`));
          settle(`the traffic manager answered OPEN with message ${m.code}`);
        }
      });
      this.send(msg.open(info));
    });
  }

  override send(m: TunnelMessage): boolean {
    if (this.dialDone && m.code === TunnelCode.OPEN) return true;
    return super.send(m);
  }

  override onMessage(handler: MessageHandler | undefined): void {
    if (handler && this.dialDone && !this.replayed) {
      this.replayed = true;
      queueMicrotask(() => {
        handler(msg.dialOk());
        super.onMessage(handler);
      });
      return;
    }
    super.onMessage(handler);
  }
}

export interface TunnelDialerOptions {
  client: ManagerClient;
  /** The client session the flows belong to (it can change when the user daemon reconnects). */
  sessionId: () => string;
  log: Logger;
  dialTimeoutMs?: number;
  udpIdleTimeoutMs?: number;
}

export class TunnelFlowDialer implements FlowDialer {
  constructor(private readonly o: TunnelDialerOptions) {}

  private info(id: FlowId, idleTimeoutMs?: number): StreamInfo {
    return streamInfo({
      connId: { ...id },
      sessionId: this.o.sessionId(),
      dialTimeoutMs: this.o.dialTimeoutMs ?? DIAL_TIMEOUT_MS,
      ...(idleTimeoutMs !== undefined ? { idleTimeoutMs } : {}),
    });
  }

  async dialTcp(id: FlowId): Promise<TcpDial> {
    const info = this.info(id);
    const stream = new DialedStream(this.o.client.tunnel());
    await stream.dial(info);
    const log = this.o.log;
    return {
      attach(socket: net.Socket) {
        void originate(socket, stream, info, { log }).then((outcome) => {
          if (outcome.kind === 'reset' && outcome.by === 'peer')
            log.debug('flow reset by the cluster side', {
              to: `${id.dstIp}:${id.dstPort}`,
              reason: outcome.reason,
            });
        });
      },
      abandon(reason: string) {
        stream.send(msg.reset(reason));
        stream.end();
      },
    };
  }

  async dialUdp(id: FlowId): Promise<UdpFlow> {
    const info = this.info(id, this.o.udpIdleTimeoutMs ?? DEFAULT_UDP_IDLE_TIMEOUT_MS);
    const stream = new TunnelStream(this.o.client.tunnel());
    try {
      const flow = await openUdp(stream, info, { log: this.o.log });
      const out: UdpFlow = {
        send: (d) => {
          flow.send(d);
        },
        onDatagram: undefined,
        onClose: undefined,
        close: () => flow.close(),
      };
      flow.onDatagram = (d) => out.onDatagram?.(d);
      flow.onClose = (reason) => out.onClose?.(reason);
      return out;
    } catch (e) {
      if (e instanceof UdpDialRejected) throw new DialRejectedError(e.message);
      throw e;
    }
  }
}
