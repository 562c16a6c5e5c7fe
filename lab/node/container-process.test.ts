import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  type ContainerLaunch,
  findHostTools,
  type HostTools,
  renderStartScript,
  shellQuote,
} from './container-process.js';

const tools: HostTools = {
  sh: '/bin/sh',
  nsenter: '/usr/bin/nsenter',
  unshare: '/usr/bin/unshare',
  mount: '/bin/mount',
  hostname: '/bin/hostname',
  setpriv: '/usr/bin/setpriv',
  env: '/usr/bin/env',
  ip: '/sbin/ip',
};

const launch: ContainerLaunch = {
  netnsPath: '/run/netns/tplab-p-1',
  hostname: 'echo-1',
  mounts: [
    { source: '/state/etc/resolv.conf', target: '/etc/resolv.conf', readOnly: false, isFile: true },
    { source: "/state/volumes/it's", target: '/data', readOnly: true, isFile: false },
  ],
  workingDir: '/srv/app dir',
  uid: 1000,
  gid: 2000,
  supplementalGroups: [3000],
  env: { 'my.var': 'x y', PATH: '/usr/bin' },
  argv: ['sh', '-c', "echo '$HOME'"],
};

test('shell quoting survives spaces, quotes and dollars', () => {
  for (const s of ['plain', 'a b', "it's", '$HOME', 'a\nb', '']) {
    assert.is(execFileSync('/bin/sh', ['-c', `printf %s ${shellQuote(s)}`]).toString(), s);
  }
});

test('the start script mounts, sets the hostname, drops to the user and passes the env verbatim', () => {
  const script = renderStartScript(launch, tools);
  assert.match(script, /\/bin\/mount --bind \/state\/etc\/resolv\.conf \/etc\/resolv\.conf/);
  assert.match(
    script,
    /\/bin\/mount --bind '\/state\/volumes\/it'\\''s' \/data\n\/bin\/mount -o remount,bind,ro \/data/,
  );
  assert.match(script, /\/bin\/hostname echo-1/);
  assert.match(script, /cd '\/srv\/app dir'/);
  assert.match(
    script,
    /setpriv \\\n {2}--pdeathsig \\\n {2}KILL \\\n {2}--reuid \\\n {2}1000 \\\n {2}--regid \\\n {2}2000 \\\n {2}--groups \\\n {2}3000/,
  );
  // env -i with the container's variables, including names a shell would drop.
  assert.match(script, /\/usr\/bin\/env \\\n {2}-i \\\n {2}'my\.var=x y'/);
  // Without a user: no credential change, but still the parent-death signal.
  const root = renderStartScript({ ...launch, uid: undefined, hostname: undefined }, tools);
  assert.not.match(root, /--reuid/);
  assert.not.match(root, /hostname/);
  assert.match(root, /--pdeathsig/);
});

test('the command runs with exactly the given environment (run the tail of the script locally)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tpn-script-'));
  try {
    const local = renderStartScript(
      { ...launch, mounts: [], hostname: undefined, uid: undefined, workingDir: dir, argv: ['/usr/bin/env'] },
      {
        ...findHostTools(),
      },
    );
    const file = path.join(dir, 'start.sh');
    fs.writeFileSync(file, local);
    const out = execFileSync('/bin/sh', [file], { env: { PATH: '/usr/bin:/bin', LEAK: 'no' } }).toString();
    assert.equal(out.trim().split('\n').sort(), ['PATH=/usr/bin', 'my.var=x y']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
