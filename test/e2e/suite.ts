// An uvu suite for scenarios that need a cluster. Where the lab cannot run (not root, no Go and no
// built binaries) the suite says why and skips; under CI (CI=true) that is a failure instead, so
// a CI host that silently lost its lab cannot go green.
import { suite, type Test } from 'uvu';
import { type Cluster, describeCluster } from './cluster.js';
import { clusterState } from './session.js';

export async function clusterSuite(title: string): Promise<{ test: Test; cluster: Cluster | null }> {
  const test = suite(title);
  const state = await clusterState();
  if (state.ok) return { test, cluster: describeCluster() };
  const ci = process.env.CI === 'true';
  if (state.skip && !ci) {
    process.stdout.write(`# ${title}: skipped: ${state.reason}\n`);
    test.skip(title, () => {});
  } else {
    const why = state.skip
      ? `the lab cannot run here and CI=true forbids skipping: ${state.reason}`
      : state.reason;
    test(`${title}: a cluster to run against`, () => {
      throw new Error(why);
    });
  }
  return { test, cluster: null };
}

/**
 * Scenarios that share one setup (run in test.before): when the setup fails, every scenario fails
 * with the setup's error instead of with a confusing follow-on error of its own.
 */
export function afterSetup(
  test: Test,
  setup: () => Promise<void>,
): (name: string, body: () => Promise<void>) => void {
  let setupError: Error | undefined;
  test.before(async () => {
    try {
      await setup();
    } catch (err) {
      setupError = err as Error;
    }
  });
  return (name, body) =>
    test(name, async () => {
      if (setupError) throw new Error(`setup failed: ${setupError.message}`);
      await body();
    });
}

/**
 * `scenario` where `why` is undefined; otherwise a scenario that says why it cannot run here and skips
 * (visibly), or fails under CI=true, instead of passing without having tested anything.
 */
export function scenarioIf(
  test: Test,
  scenario: (name: string, body: () => Promise<void>) => void,
  why: string | undefined,
): (name: string, body: () => Promise<void>) => void {
  if (why === undefined) return scenario;
  return (name) => {
    if (process.env.CI === 'true')
      test(name, () => {
        throw new Error(`cannot run here and CI=true forbids skipping: ${why}`);
      });
    else {
      process.stdout.write(`# ${name}: skipped: ${why}\n`);
      test.skip(name, () => {});
    }
  };
}
