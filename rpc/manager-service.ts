// The Manager service as every tp component uses it: the generated definition (rpc/gen/manager.ts) with
// the Tunnel method's payload codec swapped for the zero-copy one (rpc/tunnel-codec.ts). The bytes on the
// wire are the same, so any generated client or server of manager.proto interoperates.
import { makeGenericClientConstructor } from '@grpc/grpc-js';
import {
  AgentService,
  type AgentClient as GeneratedAgentClient,
  type ManagerClient as GeneratedManagerClient,
  ManagerService,
} from './gen/manager.js';
import { deserializeTunnelMessage, serializeTunnelMessage } from './tunnel-codec.js';

/** A Tunnel method's definition with the zero-copy payload codec. */
function zeroCopyTunnel<T extends object>(method: T): T {
  return {
    ...method,
    requestSerialize: serializeTunnelMessage,
    requestDeserialize: deserializeTunnelMessage,
    responseSerialize: serializeTunnelMessage,
    responseDeserialize: deserializeTunnelMessage,
  };
}

export const ManagerServiceDefinition = {
  ...ManagerService,
  tunnel: zeroCopyTunnel(ManagerService.tunnel),
} as const;

/** The agent's own service (direct intercepted connections, agent/direct.ts), with the same codec. */
export const AgentServiceDefinition = {
  ...AgentService,
  tunnel: zeroCopyTunnel(AgentService.tunnel),
} as const;

export const ManagerClient = makeGenericClientConstructor(
  ManagerServiceDefinition,
  'tp.manager.Manager',
) as unknown as typeof GeneratedManagerClient;
export type ManagerClient = GeneratedManagerClient;

export const AgentClient = makeGenericClientConstructor(
  AgentServiceDefinition,
  'tp.manager.Agent',
) as unknown as typeof GeneratedAgentClient;
export type AgentClient = GeneratedAgentClient;
