// The Manager service as every tp component uses it: the generated definition (rpc/gen/manager.ts) with
// the Tunnel method's payload codec swapped for the zero-copy one (rpc/tunnel-codec.ts). The bytes on the
// wire are the same, so any generated client or server of manager.proto interoperates.
import { makeGenericClientConstructor } from '@grpc/grpc-js';
import { type ManagerClient as GeneratedManagerClient, ManagerService } from './gen/manager.js';
import { deserializeTunnelMessage, serializeTunnelMessage } from './tunnel-codec.js';

export const ManagerServiceDefinition = {
  ...ManagerService,
  tunnel: {
    ...ManagerService.tunnel,
    requestSerialize: serializeTunnelMessage,
    requestDeserialize: deserializeTunnelMessage,
    responseSerialize: serializeTunnelMessage,
    responseDeserialize: deserializeTunnelMessage,
  },
} as const;

export const ManagerClient = makeGenericClientConstructor(
  ManagerServiceDefinition,
  'tp.manager.Manager',
) as unknown as typeof GeneratedManagerClient;
export type ManagerClient = GeneratedManagerClient;
