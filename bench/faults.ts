// Faults on the lab, one at a time (issue 19): per fault, the requests that failed of those a probe from the
// lab node sent to the intercepted Service every 0.25 s, and of those the workstation sent through the VIF
// to a Service nobody intercepts (with the slowest answered one), and the seconds from the end of the fault
// until the workstation answered again. The harness is test/e2e/fault-rig.ts, shared with test/e2e/faults.test.ts.
//
//   node dist/bench/faults.js [--drop-seconds 30]
//
// Holds the lab's lock for the whole run; brings the lab up when it is down (and takes it down again),
// installs the chart when it is missing (and uninstalls it again). Root, curl on the host.
import { describeCluster, externalKubeconfig } from '../test/e2e/cluster.js';
import { type FaultResult, FaultRig, faultTable } from '../test/e2e/fault-rig.js';
import { beginE2eRun, endE2eRun } from '../test/e2e/session.js';
import { benchFlags } from './rig.js';

async function main(): Promise<void> {
  const flags = benchFlags({ 'drop-seconds': 30 });
  if (externalKubeconfig())
    throw new Error(
      'bench/faults runs on the lab only (it restarts the lab API server): unset TP_E2E_KUBECONFIG',
    );
  const labRun = await beginE2eRun();
  if (labRun.state !== 'up') {
    await endE2eRun(labRun);
    throw new Error(`the lab is not available: ${labRun.state}`);
  }
  const say = (line: string) => process.stderr.write(`faults: ${line}\n`);
  let rig: FaultRig | undefined;
  const results: FaultResult[] = [];
  try {
    rig = await FaultRig.start(describeCluster(), 'tp-bench-faults', '/tmp/tp-bench-faults', say);
    results.push(await rig.managerPodDeleted());
    results.push(await rig.agentKilled());
    results.push(await rig.userDaemonKilled());
    results.push(await rig.apiServerDropped(flags['drop-seconds']));
    results.push(await rig.apiServerRestarted());
    const left = await rig.leave();
    process.stdout.write(
      `${new Date().toISOString().slice(0, 10)}, node dist/bench/faults.js --drop-seconds ${flags['drop-seconds']}\n\n` +
        `healthy intercept, a new connection per request (bounds the agent's dial to the workstation): p50 ${rig.healthy?.p50Ms.toFixed(1)} ms, max ${rig.healthy?.maxMs.toFixed(1)} ms of ${rig.healthy?.requests}\n\n` +
        `${faultTable(results)}\n\ntp leave: ${left.left ? `FAILED: ${left.left}` : 'worked'}; the app answers afterwards: ${left.appAnswers ? 'yes' : 'NO'}\n`,
    );
  } finally {
    await rig?.stop();
    await endE2eRun(labRun);
  }
}

main().catch((e) => {
  process.stderr.write(`bench/faults: ${(e as Error).message}\n`);
  process.exit(1);
});
