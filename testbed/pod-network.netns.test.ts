// PodNetwork.ofThisProcess: the namespaces of a run are its own (two benches at once keep apart), and the
// namespaces a killed run left are removed, while a live run's stay.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as assert from 'uvu/assert';
import { PodNetwork } from './pod-network.js';
import { notRoot, requirementSuite } from './suite.js';

const { test, ready } = requirementSuite('testbed: a pod network of its own per process', notRoot());
const IP = fs.existsSync('/usr/sbin/ip') ? '/usr/sbin/ip' : '/sbin/ip';
const exists = (ns: string) => fs.existsSync(`/run/netns/${ns}`);

if (ready) {
  test("a killed run's namespaces are removed, a live run's stay, and this run gets its own", async () => {
    // A run that was killed: its PID is gone (a child that has exited). A live run: the test runner.
    const gone = spawnSync(process.execPath, ['-e', '']).pid!;
    const killed = `tpc-ptest${gone}-pod`;
    const live = `tpc-ptest${process.ppid}-pod`;
    for (const ns of [killed, live]) execFileSync(IP, ['netns', 'add', ns]);
    let net: PodNetwork | undefined;
    try {
      net = PodNetwork.ofThisProcess('ptest', 212);
      assert.not.ok(exists(killed), `${killed} (its run is gone) is removed`);
      assert.ok(exists(live), `${live} (its run is alive) stays`);
      assert.is(net.pod, `tpc-ptest${process.pid}-pod`);
      assert.ok(exists(net.pod) && exists(net.client), 'this run has its own namespaces');
    } finally {
      await net?.destroy();
      for (const ns of [killed, live]) if (exists(ns)) execFileSync(IP, ['netns', 'del', ns]);
    }
    assert.ok(net && !exists(net.pod) && !exists(net.client), 'destroy() removes them');
  });
}

test.run();
