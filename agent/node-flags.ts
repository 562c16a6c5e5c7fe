// The Node flags tp-agent runs with, in tp's image (its launcher's shebang, image/tp-image.ts) and in the
// benches that measure it. One flag at most: a shebang passes one argument.
//
// --optimize-for-size: V8 grows the heap less eagerly. Measured on loopback (wrk -c16, keep-alive then a new
// connection per request through the passthrough, 5 s each): RSS after the load 96-101 -> 64-67 MiB, peak
// 107 -> 70 MiB; CPU per request within the noise (31-35 us keep-alive, 270-320 us per new connection).
// (--max-semi-space-size=1 alone: 71-77 MiB after the load; --jitless or --lite-mode would save 4-5 MiB
// idle at several times the CPU.) Its price, measured again 2026-12-04 as CPU time per request (docs/capture.md):
// none with keep-alive, ~13 % per new connection (217-243 instead of 202-218 us), against 79-89 MiB after
// the load without it.
export const AGENT_NODE_FLAGS: readonly [string] = ['--optimize-for-size'];
