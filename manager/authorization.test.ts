// The decision table of authorization.ts, against a small RBAC model: which permissions each action needs,
// and what a refused user reads.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type Action, decide, type ResourceCheck, requiredChecks } from './authorization.js';
import type { Identity } from './credentials.js';

const alice: Identity = { user: 'alice', uid: '', groups: [], extra: {} };

/** An RBAC model: "verb resource[/sub] namespace" strings the user holds ('*' namespace = cluster-wide). */
function rbac(...grants: string[]) {
  return (c: ResourceCheck) =>
    grants.some((g) => {
      const [verb, resource, ns] = g.split(' ');
      const named = c.group && c.group !== 'apps' ? `${c.resource}.${c.group}` : c.resource;
      const r = c.subresource ? `${named}/${c.subresource}` : named;
      return verb === c.verb && resource === r && (ns === '*' || ns === c.namespace);
    });
}

const echoInA = { name: 'echo', namespace: 'a', kind: 'Deployment' };
const dbInA = { name: 'db', namespace: 'a', kind: 'StatefulSet' };

const rows: {
  action: Action;
  grants: string[];
  allowed: boolean;
  message?: string;
}[] = [
  // intercept: patch on the workload and port-forward in its namespace, both
  {
    action: { kind: 'intercept', workload: echoInA },
    grants: ['patch deployments a', 'create pods/portforward a'],
    allowed: true,
  },
  {
    action: { kind: 'intercept', workload: echoInA },
    grants: ['create pods/portforward a'],
    allowed: false,
    message: 'not allowed to intercept a/echo: user alice cannot patch deployments in a',
  },
  {
    action: { kind: 'intercept', workload: echoInA },
    grants: ['patch deployments a'],
    allowed: false,
    message: 'not allowed to intercept a/echo: user alice cannot create pods/portforward in a',
  },
  {
    action: { kind: 'intercept', workload: echoInA },
    grants: ['patch deployments b', 'create pods/portforward b'],
    allowed: false,
    message: 'not allowed to intercept a/echo: user alice cannot patch deployments in a',
  },
  {
    action: { kind: 'intercept', workload: dbInA },
    grants: ['patch deployments a', 'create pods/portforward a'],
    allowed: false,
    message: 'not allowed to intercept a/db: user alice cannot patch statefulsets in a',
  },
  // cluster-wide grants cover every namespace
  {
    action: { kind: 'intercept', workload: dbInA },
    grants: ['patch statefulsets *', 'create pods/portforward *'],
    allowed: true,
  },
  // installing or removing one workload's agent: patch on it
  { action: { kind: 'install-agent', workload: echoInA }, grants: ['patch deployments a'], allowed: true },
  {
    action: { kind: 'install-agent', workload: echoInA },
    grants: ['create pods/portforward a'],
    allowed: false,
    message: 'not allowed to install the agent into a/echo: user alice cannot patch deployments in a',
  },
  { action: { kind: 'uninstall-agent', workload: dbInA }, grants: ['patch statefulsets a'], allowed: true },
  // every agent of a namespace: patch on all three kinds there; of every namespace: cluster-wide
  {
    action: { kind: 'uninstall-all-agents', namespace: 'a' },
    grants: ['patch deployments a', 'patch replicasets a', 'patch statefulsets a'],
    allowed: true,
  },
  {
    action: { kind: 'uninstall-all-agents', namespace: 'a' },
    grants: ['patch deployments a', 'patch statefulsets a'],
    allowed: false,
    message:
      'not allowed to remove the agents from every workload in a: user alice cannot patch replicasets in a',
  },
  {
    action: { kind: 'uninstall-all-agents', namespace: '' },
    grants: ['patch deployments a', 'patch replicasets a', 'patch statefulsets a'],
    allowed: false,
    message:
      'not allowed to remove the agents from every workload: user alice cannot patch deployments in any namespace',
  },
  // listing: list on the kind in the namespace
  {
    action: { kind: 'list-workloads', namespace: 'a', workloadKind: 'Deployment' },
    grants: ['list deployments a'],
    allowed: true,
  },
  {
    action: { kind: 'list-workloads', namespace: 'b', workloadKind: 'Deployment' },
    grants: ['list deployments a'],
    allowed: false,
    message: 'not allowed to see the deployments in b: user alice cannot list deployments in b',
  },
  // an admin's revoke of others' intercepts: its own permission, which intercepting does not give
  {
    action: { kind: 'revoke-intercepts', workload: echoInA },
    grants: ['patch deployments a', 'create pods/portforward a'],
    allowed: false,
    message:
      "not allowed to end other users' intercepts of a/echo: user alice cannot delete intercepts.tp.dev in a",
  },
  {
    action: { kind: 'revoke-intercepts', workload: echoInA },
    grants: ['delete intercepts.tp.dev a'],
    allowed: true,
  },
];

test('the decision table', () => {
  for (const row of rows) {
    const allowedBy = rbac(...row.grants);
    const d = decide(alice, row.action, requiredChecks(row.action).map(allowedBy));
    const label = `${JSON.stringify(row.action)} with ${row.grants.join(', ')}`;
    assert.is(d.allowed, row.allowed, label);
    if (!d.allowed) assert.is(d.message, row.message, label);
  }
});

test('each check names the object as a SubjectAccessReview does', () => {
  assert.equal(requiredChecks({ kind: 'intercept', workload: echoInA }), [
    { verb: 'patch', group: 'apps', resource: 'deployments', namespace: 'a', name: 'echo' },
    { verb: 'create', group: '', resource: 'pods', subresource: 'portforward', namespace: 'a' },
  ]);
  // A kind tp does not manage maps to a resource no rule grants by accident.
  assert.equal(
    requiredChecks({ kind: 'install-agent', workload: { ...echoInA, kind: 'Job' } })[0]!.resource,
    'jobs',
  );
});

test('an answer that never came counts as a refusal', () => {
  const d = decide(alice, { kind: 'intercept', workload: echoInA }, [true]);
  assert.is(d.allowed, false);
});

test.run();
