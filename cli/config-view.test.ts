// tp config view: each setting with where it came from, connected or not.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { ConnectInfo } from '../rpc/gen/connector.js';
import { configText, configView } from './config-view.js';

const where = { runDir: '/run/user/1000/tp', logDir: '/home/a/.local/state/tp', homedir: '/home/a' };
const sources = (entries: ReturnType<typeof configView>) =>
  Object.fromEntries(entries.map((e) => [e.key, `${JSON.stringify(e.value)} (${e.source})`]));

test('not connected: the directories, log level, helm and kubeconfig, each with its source', () => {
  const s = sources(
    configView({ XDG_RUNTIME_DIR: '/run/user/1000', TP_LOG_LEVEL: 'debug' }, undefined, where),
  );
  assert.equal(s, {
    runDir: '"/run/user/1000/tp" ($XDG_RUNTIME_DIR/tp)',
    logDir: '"/home/a/.local/state/tp" (default)',
    logLevel: '"debug" ($TP_LOG_LEVEL)',
    helm: '"helm" (default (on PATH))',
    kubeconfig: '"/home/a/.kube/config" (default)',
    connection: '"none" (tp connect sets the rest)',
  });
});

test('connected: what tp connect chose', () => {
  const info = {
    state: 'CONNECTED',
    kubeconfig: '/tmp/kc',
    context: 'lab',
    namespace: 'shop',
    managerNamespace: 'tp-system',
    mappedNamespaces: ['shop', 'data'],
    managerAddress: '127.0.0.1:40000',
  } as ConnectInfo;
  const entries = configView({ KUBECONFIG: '/x' }, info, where);
  const s = sources(entries);
  assert.is(s.kubeconfig, '"/tmp/kc" (tp connect --kubeconfig)');
  assert.is(s.namespace, `"shop" (tp connect -n, else the context's namespace)`);
  assert.is(s.mappedNamespaces, '["shop","data"] (tp connect --mapped-namespaces)');
  assert.is(s.managerAddress, '"127.0.0.1:40000" (port-forward through the API server)');
  assert.match(configText(entries), /^mappedNamespaces +shop,data +\(tp connect --mapped-namespaces\)$/m);
});

test.run();
