// The layers tp's image and the lab's images share (containerd stores a layer once, by digest), and the
// small generated files every image has. Pure: specs only; build.ts resolves them against the host.
import type { LayerSpec } from './rootfs.js';

export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * The bottom layer of every image: Debian's merged /usr (so libraries found on the host under /lib land
 * under /usr/lib as on the host), /tmp, /run (iptables' lock file lives there) and name service
 * configuration that reads only files and DNS.
 */
export function baseLayer(): LayerSpec {
  return {
    comment: 'base: merged /usr, /etc, /tmp, /run',
    items: [
      { symlink: '/bin', target: 'usr/bin' },
      { symlink: '/sbin', target: 'usr/sbin' },
      { symlink: '/lib', target: 'usr/lib' },
      { symlink: '/lib64', target: 'usr/lib64' },
      { dir: '/etc' },
      { dir: '/root', mode: 0o700 },
      { dir: '/run' },
      { dir: '/tmp', mode: 0o1777 },
      {
        file: '/etc/nsswitch.conf',
        data: 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n',
      },
    ],
  };
}

/** The host's node binary at /usr/local/bin/node, stripped of debug info, with its shared libraries. */
export function nodeRuntimeLayer(node: string, version: string): LayerSpec {
  return {
    comment: `node runtime: Node ${version} and its shared libraries`,
    items: [{ copy: node, to: '/usr/local/bin/node', strip: true, libraries: true, package: 'nodejs' }],
  };
}

/** Debian's static busybox with a symlink per applet: sh, cat, ls, ps, env, … for `kubectl exec`. */
export function busyboxLayer(busybox = '/bin/busybox'): LayerSpec {
  return { comment: 'busybox: sh and the basic tools', items: [{ busybox, package: 'busybox-static' }] };
}

export interface Account {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

export const ROOT: Account = { name: 'root', uid: 0, gid: 0, home: '/root' };
export const NOBODY: Account = { name: 'nobody', uid: 65534, gid: 65534, home: '/nonexistent' };

/** /etc/passwd and /etc/group for these accounts (one group per account, named after it). */
export function accountFiles(accounts: Account[]): LayerSpec['items'] {
  const shell = (a: Account) => (a.uid === 0 ? '/bin/sh' : '/usr/sbin/nologin');
  const passwd = accounts
    .map((a) => `${a.name}:x:${a.uid}:${a.gid}:${a.name}:${a.home}:${shell(a)}\n`)
    .join('');
  const group = accounts.map((a) => `${a.name === 'nobody' ? 'nogroup' : a.name}:x:${a.gid}:\n`).join('');
  return [
    { file: '/etc/passwd', data: passwd },
    { file: '/etc/group', data: group },
  ];
}
