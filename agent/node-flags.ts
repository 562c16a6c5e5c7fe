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
// Measured again 2026-12-07, with the passthrough on its own thread (node dist/bench/capture.js --rounds 2
// and node dist/bench/personal-passthrough.js, the flag in turns, four sittings each): the thread's CPU per
// request is the flag's within the noise (keep-alive 28-35 us with it, 25-31 without, 28-29 with
// --max-semi-space-size=1; HAProxy's in the same runs moved as much), and so is its RSS (idle 65.8, peak
// 71 MiB either way): what the flag still saves is the main thread's memory under an intercept's load
// (a personal intercept's requests without the header: RSS after the load 78-79 MiB with it, 82-84 with
// --max-semi-space-size=1, 91-92 without). Kept.
export const AGENT_NODE_FLAGS: readonly [string] = ['--optimize-for-size'];
