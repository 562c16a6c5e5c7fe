// Test fixture: what the user daemon does for the root daemon's sake: arrive at the traffic manager as a
// client and keep the session alive. Prints the session id, then remains until killed.
//   node dist/daemons/root/test/session-keeper.js HOST:PORT
import * as grpc from '@grpc/grpc-js';
import { ManagerClient } from '../../../rpc/gen/manager.js';
import { managerChannelOptions } from '../../../rpc/grpc-options.js';
import { unary } from '../../../rpc/unary-call.js';

const address = process.argv[2]!;
const client = new ManagerClient(address, grpc.credentials.createInsecure(), managerChannelOptions());
const deadline = Date.now() + 20_000;
let session: { sessionId: string; remainIntervalMs: number } | undefined;
while (!session) {
  try {
    session = await unary(
      (md, opts, cb) =>
        client.arriveAsClient(
          { name: 'tpv@workstation', installId: 'tpv-test', version: 'test', namespace: 'default' },
          md,
          opts,
          cb,
        ),
      3_000,
    );
  } catch (e) {
    if (Date.now() > deadline) throw e;
    await new Promise((r) => setTimeout(r, 200));
  }
}
process.stdout.write(`session ${session.sessionId}\n`);
const s = session;
setInterval(
  () => {
    client.remain({ session: s }, () => {});
  },
  Math.max(500, Math.min(s.remainIntervalMs || 3_000, 3_000)),
);
process.on('SIGTERM', () => process.exit(0));
