// Which namespaces a command acts in: the connected one by default, --mapped-namespaces limits, system
// namespaces and the traffic manager's hidden from listings across namespaces.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { WorkloadInfo } from '../../rpc/gen/manager.js';
import {
  commandNamespace,
  managerListNamespace,
  type NamespaceScope,
  visibleWorkloads,
} from './namespaces.js';

const scope = (over: Partial<NamespaceScope> = {}): NamespaceScope => ({
  connected: 'shop',
  mapped: [],
  managerNamespace: 'tp-system',
  ...over,
});
const w = (name: string, namespace: string) => ({ name, namespace }) as WorkloadInfo;
const all = [
  w('coredns', 'kube-system'),
  w('traffic-manager', 'tp-system'),
  w('echo', 'shop'),
  w('db', 'data'),
];
const names = (ws: WorkloadInfo[]) => ws.map((x) => `${x.namespace}/${x.name}`);

test('the connected namespace is the default; an explicit one wins; default without either', () => {
  assert.is(commandNamespace('', scope()), 'shop');
  assert.is(commandNamespace('data', scope()), 'data');
  assert.is(commandNamespace('', scope({ connected: '' })), 'default');
});

test('--mapped-namespaces refuses the others, naming the fix', () => {
  const mapped = scope({ mapped: ['shop'] });
  assert.is(commandNamespace('shop', mapped), 'shop');
  assert.throws(
    () => commandNamespace('data', mapped),
    /namespace "data" is not one this connection maps \(shop\): tp quit, then tp connect --mapped-namespaces/,
  );
});

test('tp list: the connected namespace; -A without system namespaces unless --system; mapped only', () => {
  const one = { namespace: '', allNamespaces: false, includeSystem: false };
  assert.equal(names(visibleWorkloads(all, one, scope())), ['shop/echo']);
  assert.is(managerListNamespace(one, scope()), 'shop');
  // Asked for by name, a system namespace is shown.
  assert.equal(names(visibleWorkloads(all, { ...one, namespace: 'kube-system' }, scope())), [
    'kube-system/coredns',
  ]);
  const every = { namespace: '', allNamespaces: true, includeSystem: false };
  assert.is(managerListNamespace(every, scope()), '');
  assert.equal(names(visibleWorkloads(all, every, scope())), ['shop/echo', 'data/db']);
  assert.equal(names(visibleWorkloads(all, { ...every, includeSystem: true }, scope())), names(all));
  const mapped = scope({ mapped: ['data'] });
  assert.equal(names(visibleWorkloads(all, every, mapped)), ['data/db']);
  assert.is(managerListNamespace(every, mapped), 'data');
  assert.is(managerListNamespace(every, scope({ mapped: ['data', 'shop'] })), '');
});

test.run();
