// Golden files for tp-init's tests: compares text with init-container/testdata/NAME;
// REFRESH_GOLDEN=true writes the text instead (then review the diff before committing).
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as assert from 'uvu/assert';

// Compiled to dist/init-container/test/: the sources' testdata is three levels up from here.
const testdata = path.resolve(
  path.dirname(new URL(import.meta.url).pathname),
  '../../../init-container/testdata',
);

export function assertGolden(name: string, actual: string): void {
  const file = path.join(testdata, name);
  if (process.env.REFRESH_GOLDEN === 'true') {
    fs.mkdirSync(testdata, { recursive: true });
    fs.writeFileSync(file, actual);
    return;
  }
  if (!fs.existsSync(file))
    assert.unreachable(`golden file ${file} is missing: run the test with REFRESH_GOLDEN=true to create it`);
  assert.fixture(
    actual,
    fs.readFileSync(file, 'utf8'),
    `differs from ${file} (REFRESH_GOLDEN=true regenerates it)`,
  );
}

export function readTestdata(name: string): string {
  return fs.readFileSync(path.join(testdata, name), 'utf8');
}
