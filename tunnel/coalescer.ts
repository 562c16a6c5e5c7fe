// Collects the chunks a socket delivers in one event-loop turn into one tunnel message. A message costs
// about the same whatever its size (~20 µs through grpc-js), so 64 KiB reads sent one by one waste most
// of the link; one message per turn, up to a size cap, keeps both latency and overhead low.
export class Coalescer {
  private chunks: Buffer[] = [];
  private bytes = 0;

  constructor(readonly maxBytes: number) {
    if (maxBytes < 1) throw new RangeError('maxBytes must be positive');
  }

  get pendingBytes(): number {
    return this.bytes;
  }

  /** Adds a chunk; returns the messages that reached maxBytes and must be sent now (usually none). */
  push(chunk: Buffer): Buffer[] {
    const full: Buffer[] = [];
    let rest = chunk;
    while (rest.length > 0) {
      const room = this.maxBytes - this.bytes;
      const part = rest.length <= room ? rest : rest.subarray(0, room);
      this.chunks.push(part);
      this.bytes += part.length;
      rest = rest.subarray(part.length);
      if (this.bytes === this.maxBytes) full.push(this.take()!);
    }
    return full;
  }

  /** Everything pending as one buffer, or undefined when nothing is pending. */
  take(): Buffer | undefined {
    if (this.bytes === 0) return undefined;
    const out = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.bytes);
    this.chunks = [];
    this.bytes = 0;
    return out;
  }
}
