// The one way tp's gRPC servers run a unary method: the body returns a value or throws; errors a caller can
// act on map to their gRPC status (the service says which), anything else is logged and answered INTERNAL.
import type { ServerUnaryCall, ServiceError, sendUnaryData } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import type { Logger } from '../logging/logger.js';
import { grpcError } from './unary-call.js';

export type UnaryHandler<Req, Res> = (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void;

/** Maps an expected error to the status the caller gets; undefined for an unexpected one. */
export type ErrorStatus = (e: unknown) => status | undefined;

export function unaryHandlers(log: Logger, expected: ErrorStatus) {
  return function unary<Req, Res>(
    name: string,
    body: (req: Req, call: ServerUnaryCall<Req, Res>) => Res | Promise<Res>,
  ): UnaryHandler<Req, Res> {
    return (call, callback) => {
      Promise.resolve()
        .then(() => body(call.request, call))
        .then(
          (res) => callback(null, res),
          (e: unknown) => {
            const code = expected(e);
            const message = e instanceof Error ? e.message : String(e);
            if (code !== undefined) return callback(grpcError(code, message) as ServiceError);
            log.error(`${name} failed`, { error: e });
            callback(grpcError(status.INTERNAL, `${name} failed: ${message}`) as ServiceError);
          },
        );
    };
  };
}
