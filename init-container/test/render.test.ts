// Rendering is pure: each configuration's iptables-restore input is compared with a golden file.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { UsageError } from '../../netaddr/parse.js';
import { type CaptureFlags, captureConfigFromFlags, hasGlobalIpv6 } from '../config.js';
import { renderApplyTransaction, renderDryRun, renderRules, ruleLine } from '../render.js';
import { parseSavedTable, renderCleanupTransaction, tpLinesIn } from '../saved-rules.js';
import { assertGolden, readTestdata } from './golden.js';

const configurations: [string, CaptureFlags, 4 | 6][] = [
  ['single-port', { ports: '8080' }, 4],
  ['several-ports', { ports: '8080,9090', agentPort: '15001', agentUid: '7777' }, 4],
  ['all-ports-exclude', { ports: '*', excludePorts: '22,15020' }, 4],
  ['ipv6', { ports: '8080,9090' }, 6],
  ['custom-agent-uid', { ports: '8080', agentPort: '15006', agentUid: '1337' }, 4],
  ['many-ports', { ports: Array.from({ length: 20 }, (_, i) => 9000 + i).join(',') }, 4],
];

for (const [name, flags, family] of configurations) {
  test(`renders ${name} (IPv${family})`, () => {
    const config = captureConfigFromFlags(flags);
    assertGolden(`render-${name}.v${family}.rules`, renderDryRun(config, renderRules(config, family)));
  });
}

test('every rule carries the version comment and only tp chains are written', () => {
  const config = captureConfigFromFlags({ ports: '*', excludePorts: '22' });
  for (const family of [4, 6] as const) {
    const set = renderRules(config, family);
    for (const rule of [...set.rules, ...set.jumps]) {
      assert.match(ruleLine(rule), / -m comment --comment "tp:\d+\.\d+\.\d+ [^"]+" /);
      if (!['PREROUTING', 'OUTPUT'].includes(rule.chain)) assert.match(rule.chain, /^TP_/);
    }
  }
});

test('loopback calls stay uncaptured: the in-pod rule excludes the loopback range', () => {
  const config = captureConfigFromFlags({ ports: '8080' });
  const v4 = renderRules(config, 4).rules.map((r) => ruleLine(r));
  const v6 = renderRules(config, 6).rules.map((r) => ruleLine(r));
  assert.ok(v4.some((l) => l.includes('! -d 127.0.0.0/8 -o lo')));
  assert.ok(v6.some((l) => l.includes('! -d ::1/128 -o lo')));
});

test('a second apply writes no jump: only the missing jumps are appended', () => {
  const config = captureConfigFromFlags({ ports: '8080' });
  const set = renderRules(config, 4);
  const text = renderApplyTransaction(config, set, { missingJumps: [], staleJumpLines: [] });
  assert.not.match(text, /-A (PREROUTING|OUTPUT) /);
  const stale = '-A PREROUTING -p tcp -m comment --comment "tp:0.0.9 inbound capture" -j TP_INBOUND';
  const replacing = renderApplyTransaction(config, set, {
    missingJumps: [set.jumps[0]!],
    staleJumpLines: [stale],
  });
  assert.match(
    replacing,
    /^-D PREROUTING -p tcp -m comment --comment "tp:0\.0\.9 inbound capture" -j TP_INBOUND$/m,
  );
  assert.match(replacing, /^-A PREROUTING .* -j TP_INBOUND$/m);
});

test('flags: clear errors for collisions and bad values', () => {
  const bad: [CaptureFlags, RegExp][] = [
    [{}, /--ports is required/],
    [{ ports: '8080,15001' }, /agent port 15001 is also an app port/],
    [{ ports: '8080', agentPort: '8080' }, /agent port 8080 is also an app port/],
    [{ ports: '8080', excludePorts: '8080' }, /both captured .* and excluded/],
    [{ ports: '8080', excludePorts: '22' }, /only applies with --ports "\*"/],
    [{ ports: '*', excludePorts: '15001' }, /agent port 15001 is in --exclude-ports/],
    [{ ports: '8080', agentUid: '0' }, /uid 0 would leave every process running as root uncaptured/i],
    [{ ports: '8080', agentUid: 'tp' }, /invalid --agent-uid/],
    [{ ports: '8080', ipv6: 'maybe' }, /invalid --ipv6 "maybe": use one of auto, on, off/],
    [{ ports: '8080,x' }, /invalid app port "x"/],
  ];
  for (const [flags, message] of bad) {
    assert.throws(
      () => captureConfigFromFlags(flags),
      (e: unknown) => e instanceof UsageError && message.test(e.message),
      JSON.stringify(flags),
    );
  }
});

test('--ipv6 auto: only a global address counts', () => {
  const v6 = (address: string, internal = false) => ({
    address,
    netmask: 'ffff:ffff:ffff:ffff::',
    family: 'IPv6' as const,
    mac: '00:00:00:00:00:00',
    internal,
    cidr: `${address}/64`,
    scopeid: 0,
  });
  assert.not.ok(hasGlobalIpv6({ lo: [v6('::1', true)], eth0: [v6('fe80::1')] }));
  assert.ok(hasGlobalIpv6({ eth0: [v6('fe80::1'), v6('fd00:10::5')] }));
});

test('cleanup removes the jumps, then flushes and deletes every tp chain, in one transaction', () => {
  const saved = readTestdata('installed-with-other-rules.save');
  const table = parseSavedTable(saved);
  assertGolden('cleanup.v4.rules', renderCleanupTransaction(table)!);
  assert.equal(
    renderCleanupTransaction(parseSavedTable('*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n')),
    undefined,
  );
  // What an admin is shown after apply: tp's lines only, never another component's.
  assert.ok(tpLinesIn(table).every((l) => /TP_/.test(l)));
  assert.equal(table.rules.find((r) => r.chain === 'TP_INBOUND')?.packets, 12);
});

test.run();
