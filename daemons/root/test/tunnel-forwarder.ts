// Bench fixture: the tunnel without the VIF. A listener on 127.0.0.1:PORT in the workstation namespace
// originates each connection through the traffic manager to DST (as the user daemon does for its own
// flows), so the bench can tell the VIF's cost from the tunnel's.
//   node dist/daemons/root/test/tunnel-forwarder.js MANAGER_HOST:PORT SESSION_ID LISTEN_PORT DST_IP DST_PORT
import * as net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { ManagerClient } from '../../../rpc/gen/manager.js';
import { managerChannelOptions } from '../../../rpc/grpc-options.js';
import { originate } from '../../../tunnel/flow.js';
import { streamInfo } from '../../../tunnel/messages.js';
import { TunnelStream } from '../../../tunnel/stream.js';

const [manager, sessionId, listenPort, dstIp, dstPort] = process.argv.slice(2) as [
  string,
  string,
  string,
  string,
  string,
];
const client = new ManagerClient(manager, grpc.credentials.createInsecure(), managerChannelOptions());
net
  .createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) => {
    const connId = {
      protocol: 6,
      srcIp: '127.0.0.1',
      srcPort: socket.remotePort ?? 0,
      dstIp,
      dstPort: Number(dstPort),
    };
    void originate(socket, new TunnelStream(client.tunnel()), streamInfo({ connId, sessionId }));
  })
  .listen(Number(listenPort), '127.0.0.1', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => process.exit(0));
