// apply, status and cleanup against a recording stub: the commands tp-init would run (and what it feeds
// them) are compared with golden transcripts; the kernel's answers come from a script. The same flows run
// against the real binaries in capture.netns.test.ts.
import type * as os from 'node:os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger, setLevel } from '../../logging/logger.js';
import { UsageError } from '../../netaddr/parse.js';
import { type BackendProbe, chooseBackend } from '../backend.js';
import { applyCapture, captureStatus, cleanupCapture, discoverCaptureStatus } from '../capture.js';
import { type CommandResult, type RecordedCall, RecordingRunner } from '../command-runner.js';
import { type CaptureConfig, captureConfigFromFlags, type Family } from '../config.js';
import { renderRules, ruleLine } from '../render.js';
import { formatDiscoveredStatus } from '../report.js';
import { inferCapture, parseSavedTable } from '../saved-rules.js';
import { assertGolden } from './golden.js';

setLevel('error');
const log = createLogger('test');

type Reply = Partial<CommandResult>;

/** Answers calls whose command line starts with a prefix; several replies are used in turn, the last repeats. */
class KernelScript {
  private readonly entries: { prefix: string; replies: Reply[] }[] = [];

  on(prefix: string, ...replies: Reply[]): this {
    this.entries.push({ prefix, replies });
    return this;
  }

  readonly respond = (call: RecordedCall): Reply => {
    const line = [call.command, ...call.args].join(' ');
    // The longest matching prefix wins, so `iptables-nft-save -c -t nat` beats `iptables-nft-save -c`.
    const entry = this.entries
      .filter((e) => line === e.prefix || line.startsWith(`${e.prefix} `))
      .sort((a, b) => b.prefix.length - a.prefix.length)[0];
    if (!entry) return {};
    return entry.replies.length > 1 ? entry.replies.shift()! : entry.replies[0]!;
  };
}

const notFound: Reply = { code: 127, notFound: true };
const emptyNat =
  '*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n';

/** What `iptables-save -c -t nat` prints once the rendered rules are installed. */
function installedSave(config: CaptureConfig, family: Family): string {
  const set = renderRules(config, family);
  const lines = ['*nat', ':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]'];
  lines.push(
    ':POSTROUTING ACCEPT [0:0]',
    ':TP_INBOUND - [0:0]',
    ':TP_OUTPUT - [0:0]',
    ':TP_REDIRECT - [0:0]',
  );
  for (const rule of [...set.jumps, ...set.rules]) lines.push(`[3:180] ${ruleLine(rule)}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

const noIpv6: NodeJS.Dict<os.NetworkInterfaceInfo[]> = {};
const globalIpv6: NodeJS.Dict<os.NetworkInterfaceInfo[]> = {
  eth0: [
    {
      address: 'fd00:10::2',
      netmask: 'ffff:ffff:ffff:ffff::',
      family: 'IPv6',
      mac: '02:00:00:00:00:01',
      internal: false,
      cidr: 'fd00:10::2/64',
      scopeid: 0,
    },
  ],
};

async function rejection(promise: Promise<unknown>): Promise<UsageError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof UsageError) return err;
    throw err;
  }
  throw new Error('expected a UsageError');
}

test('apply on a fresh nft namespace: one transaction with both jumps, then verified and shown', async () => {
  const config = captureConfigFromFlags({ ports: '8080,9090', ipv6: 'off' });
  const script = new KernelScript()
    .on('iptables-legacy-save -c', { stdout: '' })
    .on('iptables-nft-save -c', { stdout: '' })
    .on('iptables-nft-save -c -t nat', { stdout: '' }, { stdout: installedSave(config, 4) });
  const runner = new RecordingRunner(script.respond);
  const applied = await applyCapture({ runner, log, interfaces: noIpv6 }, config);
  assert.equal(applied.length, 1);
  assert.equal(applied[0]!.backend, 'nft');
  assert.ok(applied[0]!.installed.some((l) => l.includes('-j REDIRECT --to-ports 15001')));
  assertGolden('apply-fresh-nft.transcript', runner.transcript());
});

test('apply again: -C finds both jumps, so the transaction rewrites the chains and adds no jump', async () => {
  const config = captureConfigFromFlags({ ports: '8080,9090', ipv6: 'off' });
  const script = new KernelScript()
    .on('iptables-legacy-save -c', { stdout: '' })
    .on('iptables-nft-save -c', { stdout: installedSave(config, 4) });
  const runner = new RecordingRunner(script.respond);
  await applyCapture({ runner, log, interfaces: noIpv6 }, config);
  assertGolden('apply-again-nft.transcript', runner.transcript());
  const commit = runner.calls.find(
    (c) => c.command === 'iptables-nft-restore' && !c.args.includes('--test'),
  )!;
  assert.not.match(commit.input!, /-A (PREROUTING|OUTPUT) /);
});

test('apply replaces a jump written by another tp version', async () => {
  const config = captureConfigFromFlags({ ports: '8080', ipv6: 'off' });
  const old = installedSave(config, 4).replace(/tp:[\d.]+ inbound capture/, 'tp:0.0.9 inbound capture');
  const script = new KernelScript()
    .on('iptables-legacy-save -c', { stdout: '' })
    .on('iptables-nft-save -c', { stdout: old })
    .on('iptables-nft-save -c -t nat', { stdout: old }, { stdout: installedSave(config, 4) })
    // -C: the new inbound jump is missing, the in-pod one is there.
    .on('iptables-nft -w 30 -t nat -C PREROUTING', { code: 1 }, {});
  const runner = new RecordingRunner(script.respond);
  await applyCapture({ runner, log, interfaces: noIpv6 }, config);
  const commit = runner.calls.find(
    (c) => c.command === 'iptables-nft-restore' && !c.args.includes('--test'),
  )!;
  assert.match(commit.input!, /^-D PREROUTING .*tp:0\.0\.9 inbound capture.*$/m);
  assert.match(commit.input!, /^-A PREROUTING .* -j TP_INBOUND$/m);
  assert.not.match(commit.input!, /^-A OUTPUT /m);
});

test('IPv6 rejected after IPv4 was committed: IPv4 is rolled back and the missing owner match is named', async () => {
  const config = captureConfigFromFlags({ ports: '8080,9090', ipv6: 'on' });
  const script = new KernelScript()
    .on('iptables-legacy-save -c', { stdout: '' })
    .on('iptables-nft-save -c', { stdout: '' })
    .on('iptables-nft-save -c -t nat', { stdout: emptyNat })
    .on('ip6tables-legacy-save -c', { stdout: '' })
    .on('ip6tables-nft-save -c', { stdout: '' })
    .on('ip6tables-nft-save -c -t nat', { stdout: '' })
    // The commit (not the --test run) fails on line 7, the owner rule; so does the owner probe.
    .on('ip6tables-nft-restore --noflush -w 30', {
      code: 4,
      stderr:
        'ip6tables-nft-restore v1.8.9 (nf_tables): \nline 7: RULE_APPEND failed (No such file or directory): rule in chain TP_OUTPUT\n',
    })
    .on('ip6tables-nft-restore --noflush -w 30 --test', {});
  const owner = /-m owner/;
  const runner = new RecordingRunner((call) => {
    if (
      call.command === 'ip6tables-nft-restore' &&
      call.input?.includes('TP_PROBE') &&
      owner.test(call.input)
    )
      return {
        code: 4,
        stderr: 'line 3: RULE_APPEND failed (No such file or directory): rule in chain TP_PROBE',
      };
    if (call.command === 'ip6tables-nft-restore' && call.input?.includes('TP_PROBE')) return {};
    return script.respond(call);
  });
  const error = await rejection(applyCapture({ runner, log, interfaces: globalIpv6 }, config));
  assert.match(error.message, /owner match \(xt_owner\)/);
  assert.match(error.message, /--ipv6 off/);
  const rollback = runner.calls.find(
    (c) => c.command === 'iptables-nft-restore' && c.args.join(' ') === '-c -w 30',
  );
  assert.ok(rollback, 'the IPv4 nat table is restored from its snapshot');
  assert.equal(rollback!.input, emptyNat);
  assertGolden('apply-ipv6-fails-rollback.transcript', runner.transcript());
});

test('legacy backend chosen when it holds rules; a bare "line N failed" is diagnosed with probe chains', async () => {
  const config = captureConfigFromFlags({ ports: '8080', ipv6: 'off' });
  const legacyRules = '*filter\n:INPUT ACCEPT [0:0]\n[0:0] -A INPUT -i lo -j ACCEPT\nCOMMIT\n';
  const runner = new RecordingRunner((call) => {
    const line = [call.command, ...call.args].join(' ');
    if (line === 'iptables-legacy-save -c') return { stdout: legacyRules };
    if (line === 'iptables-nft-save -c') return { stdout: '' };
    if (line === 'iptables-legacy-save -c -t nat') return { stdout: emptyNat };
    if (call.command === 'iptables-legacy-restore' && call.input?.includes('TP_PROBE'))
      return call.input.includes('-m owner') ? { code: 1, stderr: 'iptables-restore: line 4 failed\n' } : {};
    if (line === 'iptables-legacy-restore --noflush -w 30')
      return { code: 1, stderr: 'iptables-restore: line 12 failed\n' };
    return {};
  });
  const error = await rejection(applyCapture({ runner, log, interfaces: noIpv6 }, config));
  assert.match(error.message, /kernel lacks the owner match \(xt_owner\)/, error.message);
  assert.match(error.message, /load xt_owner on the node/);
  assert.ok(
    runner.calls.every((c) => !c.command.startsWith('iptables-nft-restore')),
    'nft is never written',
  );
  // Every probe that succeeded was removed again.
  const probes = runner.calls.filter((c) => c.input?.includes(':TP_PROBE')).length;
  const removals = runner.calls.filter((c) => c.input?.includes('-X TP_PROBE')).length;
  assert.equal(removals, probes - 1);
});

test('no NET_ADMIN: the error names the capability to add', async () => {
  const config = captureConfigFromFlags({ ports: '8080', ipv6: 'off' });
  const script = new KernelScript().on('iptables-legacy-save -c', { stdout: '' }).on('iptables-nft-save -c', {
    code: 4,
    stderr:
      'iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)\n',
  });
  const runner = new RecordingRunner(script.respond);
  const error = await rejection(applyCapture({ runner, log, interfaces: noIpv6 }, config));
  assert.match(error.message, /NET_ADMIN/);
  assert.match(error.message, /securityContext\.capabilities\.add/);
});

test('no iptables binary: the error says to install the iptables package', async () => {
  const config = captureConfigFromFlags({ ports: '8080', ipv6: 'off' });
  const runner = new RecordingRunner(() => notFound);
  const error = await rejection(applyCapture({ runner, log, interfaces: noIpv6 }, config));
  assert.match(error.message, /no iptables binary found on PATH .*install the iptables package/);
  const cleanupError = await rejection(cleanupCapture({ runner, log, interfaces: noIpv6 }));
  assert.match(cleanupError.message, /no iptables binary found/);
});

test('no nat table: the error names the kernel module, and nothing is committed', async () => {
  const config = captureConfigFromFlags({ ports: '8080', ipv6: 'off' });
  const script = new KernelScript()
    .on('iptables-legacy-save -c', { stdout: '*filter\n[0:0] -A INPUT -j ACCEPT\nCOMMIT\n' })
    .on('iptables-nft-save -c', notFound)
    .on('iptables-legacy-save -c -t nat', {
      code: 1,
      stderr:
        "iptables-save v1.8.9 (legacy): can't initialize iptables table `nat': Table does not exist (do you need to insmod?)\n",
    });
  const runner = new RecordingRunner(script.respond);
  const error = await rejection(applyCapture({ runner, log, interfaces: noIpv6 }, config));
  assert.match(error.message, /IPv4 nat table is not available .*iptable_nat/);
  assert.ok(runner.calls.every((c) => !c.command.endsWith('-restore')));
});

test('status: drift is reported rule by rule, with counters, and is not in place', async () => {
  const config = captureConfigFromFlags({ ports: '8080', ipv6: 'off' });
  const redirect = ruleLine(renderRules(config, 4).rules.find((r) => r.chain === 'TP_REDIRECT')!);
  const drifted = installedSave(config, 4)
    .replace(`[3:180] ${redirect}\n`, '')
    .replace('COMMIT', '[0:0] -A TP_OUTPUT -p tcp -j ACCEPT\nCOMMIT');
  const script = new KernelScript()
    .on('iptables-legacy-save -c', { stdout: '' })
    .on('iptables-nft-save -c', { stdout: drifted })
    .on('iptables-nft -w 30 -t nat -C TP_REDIRECT', { code: 1 });
  const runner = new RecordingRunner(script.respond);
  const status = await captureStatus({ runner, log, interfaces: noIpv6 }, config);
  assert.not.ok(status.inPlace);
  const v4 = status.families[0]!;
  assert.equal(v4.rules.find((r) => r.line === redirect)?.present, false);
  assert.equal(v4.rules.find((r) => r.line.startsWith('-A TP_INBOUND'))?.packets, 3);
  assert.equal(v4.unexpected, ['-A TP_OUTPUT -p tcp -j ACCEPT']);
  assert.ok(v4.problems.includes('chain TP_OUTPUT has 3 rules, expected 2'));
  assert.ok(v4.problems.includes('chain TP_REDIRECT has 0 rules, expected 1'));
});

test('status when nothing is installed: every chain missing', async () => {
  const config = captureConfigFromFlags({ ports: '8080', ipv6: 'off' });
  const script = new KernelScript().on('iptables-legacy-save -c', { stdout: '' }).on('iptables-nft-save -c', {
    stdout: '',
  });
  const status = await captureStatus(
    { runner: new RecordingRunner(script.respond), log, interfaces: noIpv6 },
    config,
  );
  assert.not.ok(status.inPlace);
  assert.ok(status.families[0]!.chains.every((c) => !c.present));
});

test('cleanup: one transaction per family and backend holding tp chains; nothing installed is a no-op', async () => {
  const config = captureConfigFromFlags({ ports: '8080', ipv6: 'off' });
  const script = new KernelScript()
    .on('iptables-legacy-save -c', { stdout: '' })
    .on('iptables-nft-save -c', { stdout: installedSave(config, 4) })
    .on('iptables-nft-save -c -t nat', { stdout: emptyNat })
    .on('ip6tables-legacy-save -c', { stdout: '' })
    .on('ip6tables-nft-save -c', { stdout: installedSave(config, 6) })
    .on('ip6tables-nft-save -c -t nat', { stdout: emptyNat });
  const runner = new RecordingRunner(script.respond);
  const cleaned = await cleanupCapture({ runner, log, interfaces: noIpv6 });
  assert.equal(
    cleaned.map((c) => `${c.family}/${c.backend}`),
    ['4/nft', '6/nft'],
  );
  assertGolden('cleanup-nft.transcript', runner.transcript());

  const empty = new RecordingRunner(new KernelScript().on('iptables-legacy-save -c', { stdout: '' }).respond);
  assert.equal(await cleanupCapture({ runner: empty, log, interfaces: noIpv6 }), []);
  assert.ok(empty.calls.every((c) => !c.command.endsWith('-restore')));
});

test('backend choice: forced, then the one holding tp, then legacy with rules, then nft', () => {
  const probe = (name: 'nft' | 'legacy', saved: string): BackendProbe => ({
    backend: { name, family: 4, iptables: `iptables-${name}`, save: `iptables-${name}-save`, restore: '' },
    saved,
  });
  const tp = '*nat\n:TP_INBOUND - [0:0]\nCOMMIT\n';
  const rules = '*filter\n[0:0] -A INPUT -j ACCEPT\nCOMMIT\n';
  assert.equal(chooseBackend([probe('legacy', ''), probe('nft', '')], 'auto', 4).name, 'nft');
  assert.equal(chooseBackend([probe('legacy', rules), probe('nft', '')], 'auto', 4).name, 'legacy');
  assert.equal(chooseBackend([probe('legacy', rules), probe('nft', tp)], 'auto', 4).name, 'nft');
  assert.equal(chooseBackend([probe('legacy', ''), probe('nft', '')], 'legacy', 4).name, 'legacy');
  assert.equal(chooseBackend([probe('legacy', ''), probe('nft', '')], 'auto', 6, 'legacy').name, 'legacy');
  assert.throws(
    () => chooseBackend([probe('nft', '')], 'legacy', 4),
    /legacy backend for IPv4 is not usable/,
  );
});

test('the flags read back from the installed rules: ports, every port with exclusions, agent port and UID', () => {
  const cases = [
    captureConfigFromFlags({ ports: '8080', ipv6: 'off' }),
    captureConfigFromFlags({ ports: '8080,9090', agentPort: '15006', agentUid: '1337', ipv6: 'off' }),
    captureConfigFromFlags({ ports: '*', excludePorts: '22,15020', ipv6: 'off' }),
    captureConfigFromFlags({
      ports: Array.from({ length: 20 }, (_, i) => 9000 + i).join(','),
      ipv6: 'off',
    }),
  ];
  for (const config of cases) {
    const { appPorts, excludePorts, agentPort, agentUid } = config;
    assert.equal(inferCapture(parseSavedTable(installedSave(config, 4))), {
      appPorts,
      excludePorts,
      agentPort,
      agentUid,
    });
  }
  assert.equal(inferCapture(parseSavedTable(emptyNat)), {
    appPorts: [],
    excludePorts: [],
    agentPort: 0,
    agentUid: 0,
  });
});

test('status without flags: finds tp in each family and backend, checks it, reports drift and nothing', async () => {
  const config = captureConfigFromFlags({ ports: '8080,9090', agentPort: '15006', ipv6: 'off' });
  const both = new KernelScript()
    .on('iptables-legacy-save -c', { stdout: '' })
    .on('iptables-nft-save -c', { stdout: installedSave(config, 4) })
    .on('ip6tables-legacy-save -c', { stdout: '' })
    .on('ip6tables-nft-save -c', { stdout: installedSave(config, 6) });
  const found = await discoverCaptureStatus({
    runner: new RecordingRunner(both.respond),
    log,
    interfaces: noIpv6,
  });
  assert.ok(found.inPlace);
  assert.equal(
    found.families.map((f) => `${f.family}/${f.backend} ${f.capture}`),
    [
      '4/nft IPv4 capture of app ports 8080,9090 to agent port 15006, agent uid 7777',
      '6/nft IPv6 capture of app ports 8080,9090 to agent port 15006, agent uid 7777',
    ],
  );
  assert.equal(found.families[0]!.rules[0]!.packets, 3, 'each rule with its counters');
  const text = formatDiscoveredStatus(found);
  assert.match(text, 'read back: IPv4 capture of app ports 8080,9090 to agent port 15006');
  assert.match(text, /capture is in place\n$/);

  // The REDIRECT rule gone (legacy backend this time): the agent port cannot be read back; drift.
  const redirect = ruleLine(renderRules(config, 4).rules.find((r) => r.chain === 'TP_REDIRECT')!);
  const drifted = installedSave(config, 4).replace(`[3:180] ${redirect}\n`, '');
  const legacy = new KernelScript()
    .on('iptables-legacy-save -c', { stdout: drifted })
    .on('iptables-nft-save -c', { stdout: '' })
    .on('iptables-legacy -w 30 -t nat -C TP_REDIRECT', { code: 1 });
  const drift = await discoverCaptureStatus({
    runner: new RecordingRunner(legacy.respond),
    log,
    interfaces: noIpv6,
  });
  assert.not.ok(drift.inPlace);
  assert.is(drift.families[0]!.backend, 'legacy');
  assert.match(drift.families[0]!.problems.join('\n'), /the agent port cannot be read back/);
  assert.match(formatDiscoveredStatus(drift), /capture is NOT in place \(drift from what tp installs\)/);

  const none = new KernelScript().on('iptables-legacy-save -c', { stdout: '' }).on('iptables-nft-save -c', {
    stdout: emptyNat,
  });
  const nothing = await discoverCaptureStatus({
    runner: new RecordingRunner(none.respond),
    log,
    interfaces: noIpv6,
  });
  assert.not.ok(nothing.inPlace);
  assert.equal(nothing.families, []);
  assert.match(formatDiscoveredStatus(nothing), /^no tp capture rules/);

  // Without NET_ADMIN (the tp-agent container): the refusal, which tp-init status turns into the advice.
  const denied = new KernelScript().on('iptables-legacy-save -c', {
    code: 3,
    stderr: 'iptables-legacy-save v1.8.9 (legacy): Cannot initialize: Permission denied (you must be root)',
  });
  const refused = await rejection(
    discoverCaptureStatus({ runner: new RecordingRunner(denied.respond), log, interfaces: noIpv6 }),
  );
  assert.match(refused.message, /NET_ADMIN/);
});

test.run();
