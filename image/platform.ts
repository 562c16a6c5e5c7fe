// This machine's architecture under the names images and Debian give it: one table, from Node's
// process.arch. Pure.
import { UsageError } from '../netaddr/parse.js';

const ARCHITECTURES: Record<string, { oci: string; triplet: string }> = {
  x64: { oci: 'amd64', triplet: 'x86_64-linux-gnu' },
  arm64: { oci: 'arm64', triplet: 'aarch64-linux-gnu' },
  arm: { oci: 'arm', triplet: 'arm-linux-gnueabihf' },
  ppc64: { oci: 'ppc64le', triplet: 'powerpc64le-linux-gnu' },
  s390x: { oci: 's390x', triplet: 's390x-linux-gnu' },
  riscv64: { oci: 'riscv64', triplet: 'riscv64-linux-gnu' },
};

function architecture(arch: string): { oci: string; triplet: string } {
  const a = ARCHITECTURES[arch];
  if (a === undefined)
    throw new UsageError(`images cannot be built on ${arch}: its OCI and Debian names are unknown`);
  return a;
}

/** The OCI platform architecture (amd64 for x64). */
export function ociArchitecture(arch: string = process.arch): string {
  return architecture(arch).oci;
}

/** Debian's multiarch directory name (x86_64-linux-gnu), where libraries live. */
export function multiarchTriplet(arch: string = process.arch): string {
  return architecture(arch).triplet;
}
