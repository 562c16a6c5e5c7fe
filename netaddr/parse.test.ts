import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  bytesToIp,
  cidrAddress,
  cidrContains,
  cidrsOverlap,
  formatHostPort,
  ipToBytes,
  parseCidr,
  parseDuration,
  parseHostPort,
  parsePortList,
  parsePortMappings,
  UsageError,
} from './parse.js';

test('ports and host:port', () => {
  assert.equal(parsePortList('8080,9090'), [8080, 9090]);
  assert.throws(() => parsePortList('8080,x'), /invalid port "x"/);
  assert.throws(() => parsePortList('8080,8080'), /listed twice/);
  assert.equal(parseHostPort('127.0.0.1:18081'), { host: '127.0.0.1', port: 18081 });
  assert.equal(parseHostPort('[::1]:80'), { host: '::1', port: 80 });
  assert.is(formatHostPort('127.0.0.1', 18081), '127.0.0.1:18081');
  assert.is(formatHostPort('::1', 80), '[::1]:80');
  assert.equal(parseHostPort(formatHostPort('fd00::7', 15022)), { host: 'fd00::7', port: 15022 });
  assert.throws(
    () => parseHostPort('localhost'),
    (e: unknown) => e instanceof UsageError,
  );
});

test('TP_PORTS mappings', () => {
  assert.equal(parsePortMappings('18080:15001,9090:15002', 'TP_PORTS'), [
    { appPort: 18080, agentPort: 15001 },
    { appPort: 9090, agentPort: 15002 },
  ]);
  assert.throws(() => parsePortMappings('8080', 'TP_PORTS'), /expected appPort:agentPort/);
  assert.throws(() => parsePortMappings('8080:15001,9090:8080', 'TP_PORTS'), /collides with an app port/);
  assert.throws(() => parsePortMappings('8080:8080', 'TP_PORTS'), /must differ/);
  assert.throws(() => parsePortMappings('8080:15001,8080:15002', 'TP_PORTS'), /app port is listed twice/);
  assert.equal(parsePortMappings('8080:15001,9090:15001', 'TP_PORTS').length, 2);
});

test('CIDRs normalize, contain and overlap', () => {
  const c = parseCidr('10.96.3.7/12');
  assert.is(c.text, '10.96.0.0/12');
  assert.ok(cidrContains(c, '10.111.255.1'));
  assert.not.ok(cidrContains(c, '10.112.0.1'));
  assert.ok(cidrsOverlap(c, parseCidr('10.100.0.0/16')));
  assert.not.ok(cidrsOverlap(c, parseCidr('10.244.0.0/16')));
  assert.is(parseCidr('fd00:10:96::1/112').text, 'fd00:10:96::/112');
  assert.throws(() => parseCidr('10.0.0.0/33'), /invalid CIDR/);
  assert.throws(() => parseCidr('nonsense'), /expected ADDRESS\/PREFIX/);
});

test('durations', () => {
  assert.is(parseDuration('15s'), 15_000);
  assert.is(parseDuration('500ms'), 500);
  assert.is(parseDuration('1m30s'), 90_000);
  assert.is(parseDuration('1.5s'), 1500);
  assert.throws(() => parseDuration('15'), /expected a duration such as 15s/);
  assert.throws(() => parseDuration('0s'), /expected a duration/);
  assert.throws(() => parseDuration('5 minutes', '--client-ttl'), /invalid --client-ttl "5 minutes"/);
});

test('addresses as bytes, and the nth address of a CIDR', () => {
  assert.equal([...ipToBytes('10.96.0.10')], [10, 96, 0, 10]);
  assert.is(ipToBytes('fd00::1').length, 16);
  assert.is(bytesToIp(ipToBytes('fd00:0:0:0:0:0:0:a')), 'fd00::a');
  assert.is(bytesToIp(Uint8Array.from([198, 18, 0, 1])), '198.18.0.1');
  assert.throws(() => bytesToIp(new Uint8Array(5)), /4 or 16 bytes/);
  assert.is(cidrAddress(parseCidr('198.18.0.0/28'), 1), '198.18.0.1');
  assert.is(cidrAddress(parseCidr('fd74:7000::/124'), 15), 'fd74:7000::f');
  assert.throws(() => cidrAddress(parseCidr('198.18.0.0/28'), 16), /no address at offset 16/);
});

test.run();
