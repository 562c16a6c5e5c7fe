// Collects the chunks a socket delivers in one event-loop turn into one tunnel message. A message costs
// about the same whatever its size (~20 µs through grpc-js), so 64 KiB reads sent one by one waste most
// of the link; one message per turn, up to a size cap, keeps both latency and overhead low.
//
// `join` turns the collected chunks into what is sent: by default one Buffer; the flow joins them straight
// into an encoded DATA message (rpc/tunnel-codec.ts) so the payload is copied once, not twice.
export type Join<T> = (chunks: readonly Buffer[], bytes: number) => T;

const concat: Join<Buffer> = (chunks, bytes) =>
  chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, bytes);

export class Coalescer<T = Buffer> {
  private chunks: Buffer[] = [];
  private bytes = 0;

  constructor(
    readonly maxBytes: number,
    private readonly join: Join<T> = concat as unknown as Join<T>,
  ) {
    if (maxBytes < 1) throw new RangeError('maxBytes must be positive');
  }

  get pendingBytes(): number {
    return this.bytes;
  }

  /** Adds a chunk; returns the messages that reached maxBytes and must be sent now (usually none). */
  push(chunk: Buffer): T[] {
    const full: T[] = [];
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

  /** Everything pending as one message, or undefined when nothing is pending. */
  take(): T | undefined {
    if (this.bytes === 0) return undefined;
    const out = this.join(this.chunks, this.bytes);
    this.chunks = [];
    this.bytes = 0;
    return out;
  }
}
