// The Node flags tp-manager runs with, in tp's image (its launcher's shebang, image/tp-image.ts) and in the
// benches that measure it. One flag at most: a shebang passes one argument.
//
// --single-threaded-gc, as the user and root daemons: V8's parallel and concurrent GC helper threads cost
// more CPU than they save in a process that churns 1 MiB tunnel messages on a node whose cores the tunnel's
// other processes need (the manager's single JS thread is the limit of bench/vif; numbers in
// docs/vif.md#performance).
export const MANAGER_NODE_FLAGS: readonly [string] = ['--single-threaded-gc'];
