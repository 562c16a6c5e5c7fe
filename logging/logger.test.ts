import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  createLogger,
  levelText,
  logTarget,
  logToFile,
  onLevelChange,
  setLevel,
  setLevelFor,
} from './logger.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tp-logger-'));
const file = path.join(dir, 'daemon.log');
logToFile(file);
const log = createLogger('test');
const text = () => fs.readFileSync(file, 'utf8');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('setLevelFor without a duration: the level stays; the change is in the log, listeners are told', () => {
  setLevel('info');
  const seen: string[] = [];
  const undo = onLevelChange((l) => seen.push(l));
  assert.is(setLevelFor('debug'), 'info');
  log.debug('a debug line');
  assert.is(logTarget().level, 'debug');
  assert.match(text(), /INFO {2}logging: log level debug \(tp loglevel\) until the daemon stops/);
  assert.match(text(), /DEBUG test: a debug line/);
  undo();
  setLevelFor('info');
  assert.equal(seen, ['debug']);
});

test('setLevelFor with a duration: back to the level before by itself; a second change keeps that level', async () => {
  setLevel('warn');
  const seen: string[] = [];
  const undo = onLevelChange((l) => seen.push(l));
  assert.is(setLevelFor('debug', 200), 'warn');
  assert.is(setLevelFor('trace', 200), 'warn', 'the level to go back to is still the one before both');
  assert.is(logTarget().level, 'trace');
  assert.match(levelText(), /^trace until \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, then warn$/);
  // Said even though warn would hide an info line: a log that goes quiet says why.
  assert.match(text(), /log level trace for 0 s \(tp loglevel\), then warn/);
  await sleep(400);
  assert.is(logTarget().level, 'warn');
  assert.is(levelText(), 'warn');
  assert.match(text(), /log level back to warn \(tp loglevel's duration has passed\)/);
  assert.equal(seen, ['debug', 'trace', 'warn']);
  log.info('hidden');
  assert.not.match(text(), /hidden/);
  undo();
  setLevel('info');
});

test.run();
