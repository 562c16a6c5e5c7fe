// A uvu suite for tests that need something this machine may lack (root, a tool, a cluster): where it
// is missing the suite says why and skips, visibly; under CI (CI=true) that is a failure instead, so a
// CI host that lost the capability cannot go green by skipping. Never a silent pass.
import { suite, type Test } from 'uvu';

/** `why` undefined: the suite can run. Otherwise it holds one test that skips (or, under CI, fails) saying why. */
export function requirementSuite(title: string, why: string | undefined): { test: Test; ready: boolean } {
  const test = suite(title);
  if (why === undefined) return { test, ready: true };
  if (process.env.CI === 'true') {
    test(`${title}: what it needs`, () => {
      throw new Error(`cannot run here and CI=true forbids skipping: ${why}`);
    });
  } else {
    process.stdout.write(`# ${title}: skipped: ${why}\n`);
    test.skip(title, () => {});
  }
  return { test, ready: false };
}

/** Why this process cannot do what needs root (network and mount namespaces), or undefined. */
export function notRoot(what = 'network and mount namespaces'): string | undefined {
  return process.getuid?.() === 0 ? undefined : `needs root for ${what}`;
}
