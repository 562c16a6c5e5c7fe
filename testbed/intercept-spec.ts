// The intercept spec tests start from: the "echo" workload in namespace "default", by TCP, to the
// workstation's port 18090, with the fields a test sets on top.
import type { InterceptSpec } from '../rpc/gen/manager.js';

export function echoSpec(fields: Partial<InterceptSpec> = {}): InterceptSpec {
  return {
    name: '',
    workload: 'echo',
    namespace: 'default',
    workloadKind: '',
    mechanism: 'tcp',
    remotePort: 0,
    portName: '',
    targetHost: '',
    targetPort: 18090,
    client: '',
    serviceName: '',
    ingest: false,
    container: '',
    httpFilter: undefined,
    ...fields,
  };
}
