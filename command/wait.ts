// Waiting for something a command started (a daemon answering, a socket appearing, a rule in place, an
// agent arriving): poll, because these show up in another process or namespace with nothing to subscribe
// to. Shared by shipped bins (kind/) and by the tests and benches.

/** What `check` answers while the condition does not hold yet. */
type NotYet = undefined | false;

/**
 * Polls `check` every `intervalMs` until it returns a value (neither undefined nor false) and returns
 * that value; an error thrown by `check` counts as not yet. After `timeoutMs` it fails naming `what` it
 * awaited (a function, to describe it with what is known by then, such as a process's output) and the
 * last error `check` threw.
 */
export async function waitFor<T>(
  what: string | (() => string),
  check: () => Promise<T | NotYet> | T | NotYet,
  timeoutMs = 15_000,
  intervalMs = 100,
): Promise<Exclude<T, NotYet>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value as Exclude<T, NotYet>;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const awaited = typeof what === 'string' ? what : what();
      const last =
        lastError === undefined ? '' : ` (last error: ${(lastError as Error).message ?? lastError})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${awaited}${last}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * What `p` settles with, or undefined when it has not within `ms` (it still goes on): a wait with a
 * deadline that does not give up the work waited for (dns/cache.ts's serve-stale timer, the root daemon's
 * flows waiting for the manager's answer).
 */
export function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
