// Processes the tests start and must see gone.

/** Whether a process with this pid exists (a zombie not yet reaped counts; EPERM: it exists, not ours). */
export function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
