// **Pure**: the two messages of gRPC's health protocol (grpc.health.v1), by hand, so the agent needs no
// generated code for a kubelet gRPC probe:
//   message HealthCheckRequest  { string service = 1; }
//   message HealthCheckResponse { ServingStatus status = 1; }  // UNKNOWN 0, SERVING 1, NOT_SERVING 2, SERVICE_UNKNOWN 3

export const HEALTH_CHECK_METHOD = '/grpc.health.v1.Health/Check';

export const SERVING_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'] as const;

export function encodeHealthCheckRequest(service: string): Buffer {
  return lengthDelimited(1, Buffer.from(service, 'utf8'));
}

export function decodeHealthCheckRequest(bytes: Buffer): string {
  let service = '';
  readFields(bytes, (field, wire, value) => {
    if (field === 1 && wire === 2) service = (value as Buffer).toString('utf8');
  });
  return service;
}

export function encodeHealthCheckResponse(status: number): Buffer {
  return status === 0 ? Buffer.alloc(0) : Buffer.concat([Buffer.from([0x08]), varint(status)]);
}

/** The status number (0, UNKNOWN, when the field is absent: proto3's default). */
export function decodeHealthCheckResponse(bytes: Buffer): number {
  let status = 0;
  readFields(bytes, (field, wire, value) => {
    if (field === 1 && wire === 0) status = value as number;
  });
  return status;
}

/** SERVING, NOT_SERVING, … or the number for a status this code does not know. */
export function servingStatusName(status: number): string {
  return SERVING_STATUS[status] ?? String(status);
}

function lengthDelimited(field: number, payload: Buffer): Buffer {
  if (payload.length === 0) return Buffer.alloc(0); // proto3 leaves a default value out
  return Buffer.concat([varint((field << 3) | 2), varint(payload.length), payload]);
}

function varint(n: number): Buffer {
  const out: number[] = [];
  let v = n;
  while (v > 0x7f) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** Walks a message's fields (unknown ones skipped); throws on a truncated or malformed message. */
function readFields(bytes: Buffer, onField: (field: number, wire: number, value: number | Buffer) => void) {
  let at = 0;
  const readVarint = (): number => {
    let result = 0;
    let scale = 1;
    for (;;) {
      if (at >= bytes.length) throw new Error('truncated protobuf message');
      const b = bytes[at++]!;
      result += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) return result;
      scale *= 128;
      if (scale > 2 ** 63) throw new Error('malformed protobuf varint');
    }
  };
  while (at < bytes.length) {
    const tag = readVarint();
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (wire === 0) onField(field, wire, readVarint());
    else if (wire === 2) {
      const length = readVarint();
      if (at + length > bytes.length) throw new Error('truncated protobuf message');
      onField(field, wire, bytes.subarray(at, at + length));
      at += length;
    } else if (wire === 1 || wire === 5) {
      at += wire === 1 ? 8 : 4;
      if (at > bytes.length) throw new Error('truncated protobuf message');
    } else throw new Error(`unsupported protobuf wire type ${wire}`);
  }
}
