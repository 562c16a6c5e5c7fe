// `tp-lab down` leaves nothing behind: no tplab-* namespace, no lab process (containerd, its shims and
// the containers included), no mount under the state directory, no cgroup of the node's, no listener on
// the root namespace's forward port, no lab interface or rule in the root namespace. The test runner
// runs this file after every other e2e file (it ends the lab they share).
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as assert from 'uvu/assert';
import { cachedBinDir } from '../../lab/binaries.js';
import { runCommand } from '../../lab/command.js';
import { cgroupHierarchies, mountsUnder } from '../../lab/node-runtime.js';
import { hostApiPort, labPaths } from '../../lab/paths.js';
import { CGROUP_ROOT } from '../../lab/topology.js';
import { repoRoot } from './cluster.js';
import { runTpLab } from './session.js';
import { clusterSuite } from './suite.js';

const { test, cluster } = await clusterSuite('tp-lab down');

/** Every process whose command line mentions the lab's binaries, its state directory (containerd and its shims) or tp-lab, except us. */
function labProcesses(): string[] {
  const markers = [cachedBinDir(), `${repoRoot}/dist/lab/`, `${labPaths().root}/`];
  const found: string[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let cmdline: string;
    try {
      cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
    } catch {
      continue;
    }
    if (markers.some((m) => cmdline.includes(m))) found.push(`${entry}: ${cmdline}`);
  }
  return found;
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

if (cluster?.kind === 'lab') {
  if (process.env.TP_E2E_KEEP_LAB) {
    process.stdout.write(
      '# tp-lab down: skipped: the lab was running before this test run, so it stays up\n',
    );
    test.skip('tp-lab down leaves nothing', () => {});
  } else {
    test('tp-lab down leaves no namespace, process, listener, interface or rule', async () => {
      const down = await runTpLab(['down']);
      assert.is(down.code, 0, `tp-lab down failed: ${down.lastLine}`);

      const netns = (await runCommand(['ip', 'netns', 'list'])).stdout;
      assert.not.match(netns, /tplab-/, 'no tplab-* network namespace is left');
      assert.equal(labProcesses(), [], 'no lab process is left');
      assert.ok(await refused(hostApiPort()), `nothing listens on 127.0.0.1:${hostApiPort()}`);
      const links = (await runCommand(['ip', '-o', 'link', 'show'])).stdout;
      assert.not.match(links, /tplab/, 'no lab interface in the root namespace');
      const rules = (await runCommand(['iptables-save'])).stdout;
      assert.not.match(rules, /KUBE-|tplab/, 'no lab iptables rule in the root namespace');
      assert.not.ok(fs.existsSync(labPaths().pids) && fs.readdirSync(labPaths().pids).length, 'no PID file');
      assert.equal(mountsUnder(labPaths().root), [], 'nothing stays mounted under the state directory');
      const cgroups = cgroupHierarchies().filter((h) => fs.existsSync(`${h}/${CGROUP_ROOT}`));
      assert.equal(cgroups, [], "no cgroup of the node's is left");
    });

    test('tp-lab down again is harmless', async () => {
      const again = await runTpLab(['down']);
      assert.is(again.code, 0);
    });
  }
} else if (cluster) {
  test.skip('tp-lab down (the scenarios run against an external cluster)', () => {});
}

test.run();
