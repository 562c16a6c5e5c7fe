// `tp-lab exec`'s way into the workstation: the command runs in the network namespace and sees the lab's
// own resolv.conf at /etc/resolv.conf (a private bind mount); what it writes there lands in the lab's
// file, and the host's /etc/resolv.conf stays byte-identical. Uses a scratch namespace (tpv-labws).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { notRoot, requirementSuite } from '../../testbed/suite.js';
import { labPaths } from '../paths.js';
import { ensureWorkstationResolvConf, labExecArgv, WORKSTATION_RESOLV_CONF } from '../workstation.js';

const NETNS = 'tpv-labws';

function run(argv: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('labExecArgv: nsenter alone for the node, plus a private mount of resolv.conf for the workstation', () => {
  assert.equal(labExecArgv('tplab-node', ['iptables-save']), [
    'nsenter',
    '--net=/run/netns/tplab-node',
    '--',
    'iptables-save',
  ]);
  const ws = labExecArgv('tplab-ws', ['curl', 'http://echo/'], '/lab/ws/resolv.conf');
  assert.equal(ws.slice(0, 4), ['nsenter', '--net=/run/netns/tplab-ws', '--', 'unshare']);
  assert.equal(ws.slice(-3), ['/lab/ws/resolv.conf', 'curl', 'http://echo/']);
  assert.throws(() => labExecArgv('tplab-ws', ['true'], 'relative/resolv.conf'), /must be absolute/);
});

const asRoot = requirementSuite('workstation exec, in namespaces', notRoot());
if (asRoot.ready)
  asRoot.test('a command in the workstation writes the lab resolv.conf, never the host one', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tpv-labws-'));
    const hostBefore = fs.readFileSync('/etc/resolv.conf');
    run(['ip', 'netns', 'del', NETNS]);
    assert.is(run(['ip', 'netns', 'add', NETNS]).code, 0);
    try {
      const file = ensureWorkstationResolvConf(labPaths(dir));
      assert.is(fs.readFileSync(file, 'utf8'), WORKSTATION_RESOLV_CONF);
      // Writes only when /etc/resolv.conf really is the lab's file (same device and inode): a broken mount
      // must fail this test, not overwrite the host's resolver.
      const script = [
        'set -e',
        'cat /etc/resolv.conf',
        `[ "$(stat -Lc %d:%i /etc/resolv.conf)" = "$(stat -Lc %d:%i ${file})" ]`,
        'printf "nameserver 198.18.0.1\\n" > /etc/resolv.conf',
        'ip -o link show | wc -l',
      ].join('\n');
      const r = run(labExecArgv(NETNS, ['sh', '-c', script], file));
      assert.is(r.code, 0, r.stderr);
      assert.match(r.stdout, /^# tp-lab: \/etc\/resolv.conf of the commands/);
      assert.match(r.stdout, /\n1\n$/, 'only lo: the command ran in the scratch network namespace');
      assert.is(fs.readFileSync(file, 'utf8'), 'nameserver 198.18.0.1\n');
      assert.ok(
        fs.readFileSync('/etc/resolv.conf').equals(hostBefore),
        "the host's resolv.conf is untouched",
      );
      // ensure… keeps an existing file (a connected tp may be managing it).
      ensureWorkstationResolvConf(labPaths(dir));
      assert.is(fs.readFileSync(file, 'utf8'), 'nameserver 198.18.0.1\n');
    } finally {
      run(['ip', 'netns', 'del', NETNS]);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

test.run();
asRoot.test.run();
