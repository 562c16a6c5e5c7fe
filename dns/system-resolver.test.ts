import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger } from '../logging/logger.js';
import { isManagedResolvConf, parseResolvConf, renderManagedResolvConf } from './resolv-conf.js';
import {
  configureSystemResolver,
  parseMountPoints,
  type ResolverTarget,
  restoreLeftoverResolvConf,
} from './system-resolver.js';

const log = createLogger('test');
const target: ResolverTarget = {
  vifName: 'tp0',
  dnsAddress: '198.18.0.1',
  routingDomains: ['cluster.local', 'svc', 'default'],
  searchDomain: 'default.svc.cluster.local',
};
// Odd but valid bytes: comments, options, no trailing newline, a zone index.
const ORIGINAL =
  '# from DHCP\nsearch corp.example\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\noptions edns0 trust-ad';

function scratch() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tpv-resolv-'));
  return { dir, file: path.join(dir, 'resolv.conf'), state: path.join(dir, 'state') };
}

test('parses nameservers, search and options', () => {
  assert.equal(parseResolvConf(ORIGINAL), {
    nameservers: ['10.0.0.2', 'fe80::1'],
    search: ['corp.example'],
    options: ['edns0', 'trust-ad'],
  });
  const managed = renderManagedResolvConf(ORIGINAL, '198.18.0.1', 'tp0');
  assert.ok(isManagedResolvConf(managed));
  assert.equal(parseResolvConf(managed).nameservers, ['198.18.0.1']);
  assert.equal(parseResolvConf(managed).search, ['corp.example']);
  assert.equal(parseResolvConf(managed).options, ['edns0', 'trust-ad']);
});

test('the managed resolv.conf is restored byte for byte, in place', async () => {
  const s = scratch();
  try {
    fs.writeFileSync(s.file, ORIGINAL, { mode: 0o640 });
    const inode = fs.statSync(s.file).ino;
    const cfg = await configureSystemResolver(
      { mode: 'resolv.conf', resolvConfPath: s.file, stateDir: s.state, log },
      target,
    );
    assert.is(cfg.mode, 'resolv.conf');
    assert.equal(cfg.upstream, [
      { address: '10.0.0.2', port: 53 },
      { address: 'fe80::1', port: 53 },
    ]);
    assert.ok(isManagedResolvConf(fs.readFileSync(s.file, 'utf8')));
    assert.is(fs.statSync(s.file).ino, inode, 'rewritten in place (bind mounts stay valid)');
    await cfg.restore();
    assert.is(fs.readFileSync(s.file, 'utf8'), ORIGINAL);
    assert.is(fs.statSync(s.file).mode & 0o777, 0o640);
    assert.equal(fs.readdirSync(s.state), [], 'no backup left');
  } finally {
    fs.rmSync(s.dir, { recursive: true, force: true });
  }
});

test('after a crash the next start restores the original; a symlink comes back as the symlink', async () => {
  const s = scratch();
  try {
    const real = path.join(s.dir, 'stub-resolv.conf');
    fs.writeFileSync(real, ORIGINAL);
    fs.symlinkSync(real, s.file);
    await configureSystemResolver(
      { mode: 'resolv.conf', resolvConfPath: s.file, stateDir: s.state, log },
      target,
    );
    assert.not.ok(fs.lstatSync(s.file).isSymbolicLink());
    assert.is(fs.readFileSync(real, 'utf8'), ORIGINAL, 'the link target is never written');
    // The daemon "crashed": no restore() call. The next start:
    assert.ok(restoreLeftoverResolvConf(s.state, log));
    assert.is(fs.readlinkSync(s.file), real);
    assert.not.ok(restoreLeftoverResolvConf(s.state, log), 'nothing left the second time');
  } finally {
    fs.rmSync(s.dir, { recursive: true, force: true });
  }
});

test('a resolv.conf rewritten by something else meanwhile is left alone', async () => {
  const s = scratch();
  try {
    fs.writeFileSync(s.file, ORIGINAL);
    const cfg = await configureSystemResolver(
      { mode: 'resolv.conf', resolvConfPath: s.file, stateDir: s.state, log },
      target,
    );
    fs.writeFileSync(s.file, 'nameserver 10.9.9.9\n');
    await cfg.restore();
    assert.is(fs.readFileSync(s.file, 'utf8'), 'nameserver 10.9.9.9\n');
  } finally {
    fs.rmSync(s.dir, { recursive: true, force: true });
  }
});

test('systemd-resolved gets the VIF as a link with routing domains, and reverts it', async () => {
  const calls: string[] = [];
  const resolvectl = async (args: string[]) => {
    calls.push(args.join(' '));
    return '';
  };
  const s = scratch();
  try {
    const cfg = await configureSystemResolver(
      { mode: 'systemd-resolved', resolvConfPath: s.file, stateDir: s.state, log, resolvectl },
      target,
    );
    await cfg.restore();
    assert.equal(calls, [
      'dns tp0 198.18.0.1',
      'domain tp0 default.svc.cluster.local ~cluster.local ~svc ~default',
      'default-route tp0 false',
      'revert tp0',
    ]);
    assert.not.ok(fs.existsSync(s.file), 'resolv.conf untouched');
  } finally {
    fs.rmSync(s.dir, { recursive: true, force: true });
  }
});

test('mount points come from mountinfo, octal escapes decoded', () => {
  const points = parseMountPoints(
    [
      '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw',
      '640 22 8:1 /home/u/lab/ws/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/sda1 rw',
      '641 22 0:50 / /mnt/with\\040space rw - tmpfs tmpfs rw',
      '',
    ].join('\n'),
  );
  assert.ok(points.has('/etc/resolv.conf'));
  assert.ok(points.has('/mnt/with space'));
  assert.not.ok(points.has('/home/u/lab/ws/resolv.conf'));
});

test.run();
