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
