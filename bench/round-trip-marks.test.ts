import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type PathFigures, type RoundTripFigures, renderMarks, roundTripMarks } from './round-trip-marks.js';

const path = (rps: number, newP50Ms: number, mibs: number): PathFigures => ({
  keepAlive: { rps, p50Ms: 1000 / rps, p99Ms: 3000 / rps },
  newConnection: { rps: 1000 / newP50Ms, p50Ms: newP50Ms, p99Ms: newP50Ms * 2 },
  parallel: { rps: rps * 4, p50Ms: 10, p99Ms: 30 },
  toWorkstationMiBs: mibs,
  toClusterMiBs: mibs,
});

const anchor = path(2000, 3, 120);

function figures(
  tp: PathFigures,
  hol = { idleP99Ms: 1, loadedP99Ms: 2, downloadMiBs: 100 },
): RoundTripFigures {
  return { intercept: tp, interceptAnchor: anchor, vif: tp, vifAnchor: anchor, headOfLine: hol };
}

test('every mark is listed for both paths, plus head-of-line', () => {
  const marks = roundTripMarks(figures(path(1800, 4, 115)));
  assert.is(marks.length, 2 * 5 + 1);
  assert.ok(marks.every((m) => m.met));
  assert.is(marks[0]!.figure, '0.90');
  assert.is(marks[2]!.figure, '+1.00 ms');
});

test('the 44 ms of Nagle meets no mark but bulk', () => {
  const marks = roundTripMarks(
    figures(path(22, 95, 115), { idleP99Ms: 44, loadedP99Ms: 500, downloadMiBs: 90 }),
  );
  const unmet = marks.filter((m) => !m.met).map((m) => m.mark);
  const perPath = ['first mark >= 0.5', 'goal >= 0.8', '<= 2 ms'];
  assert.equal(unmet, [...perPath, ...perPath, '<= 5x']);
});

test('the first mark and the goal are separate: 0.6 meets one', () => {
  const marks = roundTripMarks(figures(path(1200, 3, 120)));
  assert.equal(
    marks.filter((m) => m.what.startsWith('intercept: one connection')).map((m) => m.met),
    [true, false],
  );
});

test('bulk just under 0.9 is below', () => {
  const tp = path(2000, 3, 107);
  const marks = roundTripMarks(figures(tp));
  assert.ok(marks.filter((m) => m.what.includes('bulk')).every((m) => !m.met));
});

test('rendered marks say MET or BELOW with the mark', () => {
  const lines = renderMarks(roundTripMarks(figures(path(900, 6, 50))));
  assert.match(lines[0]!, /0\.45\s+BELOW \(first mark >= 0\.5\)/);
  assert.match(lines[2]!, /\+3\.00 ms\s+BELOW \(<= 2 ms\)/);
  assert.match(lines[lines.length - 1]!, /2\.0x\s+MET/);
});

test.run();
