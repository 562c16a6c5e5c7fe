import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { UsageError } from '../../netaddr/parse.js';
import { parseNodeAgentFlags, parseTaints } from './flags.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tpn-flags-'));
const file = (name: string) => {
  const p = path.join(dir, name);
  fs.writeFileSync(p, 'x');
  return p;
};
const base = [
  `--kubeconfig=${file('kc')}`,
  '--node-name=tplab-node',
  '--node-ip=172.30.0.1',
  `--state-dir=${dir}/state`,
  `--tls-cert=${file('crt')}`,
  `--tls-key=${file('key')}`,
];

test('the flags the control plane passes; --ca-file is --client-ca', () => {
  const c = parseNodeAgentFlags([
    ...base,
    `--ca-file=${file('ca')}`,
    '--port=10250',
    '--cluster-dns=10.96.0.10',
  ]);
  assert.is(c.clientCa, path.join(dir, 'ca'));
  assert.is(c.port, 10250);
  assert.equal(c.clusterDns, ['10.96.0.10']);
  assert.is(c.bridge, 'tplab0');
  assert.is(c.clusterDomain, 'cluster.local');
  assert.ok(fs.existsSync(path.join(c.tpRoot, 'package.json')), 'the default tp root is this checkout');
});

test('bad flags name the problem and the fix', () => {
  const fails = (args: string[], message: RegExp) =>
    assert.throws(
      () => parseNodeAgentFlags(args),
      (e: unknown) => e instanceof UsageError && message.test(e.message),
    );
  fails(base, /--client-ca is required/);
  fails([...base, `--client-ca=${dir}/absent`], /does not exist or is not readable/);
  fails([...base, `--client-ca=${file('ca')}`, '--node-ip=tplab'], /expected an IPv4 address/);
  fails([...base, `--client-ca=${file('ca')}`, '--port=99999'], /1 to 65535/);
  fails([...base, `--client-ca=${file('ca')}`, '--bridge=a-very-long-bridge-name'], /at most 15 characters/);
  fails(base.slice(1), /--kubeconfig/);
});

test('taints as the kubelet writes them', () => {
  assert.equal(parseTaints('dedicated=test:NoSchedule,spare:NoExecute'), [
    { key: 'dedicated', value: 'test', effect: 'NoSchedule' },
    { key: 'spare', effect: 'NoExecute' },
  ]);
  assert.throws(() => parseTaints('dedicated=test'), /expected key\[=value\]:Effect/);
});

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));
test.run();
