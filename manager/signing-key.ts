// The key that signs identity tokens, session credentials and resume tokens (credentials.ts). In Kubernetes
// the chart generates it once, keeps it in the Secret <release name>-signing-key across upgrades and mounts
// it at TP_SIGNING_KEY_FILE: a restarted manager pod then accepts the resume tokens its clients hold and
// they arrive again without a round trip through the API server (docs/faults.md). Without the variable
// (standalone, tests) the manager draws a key of its own at start.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import { UsageError } from '../netaddr/parse.js';
import { KEY_BYTES } from './credentials.js';

/** The signing key from `file`, or a fresh random one when no file is configured. */
export function loadSigningKey(file: string | undefined): { key: Buffer; source: string } {
  if (!file)
    return { key: crypto.randomBytes(KEY_BYTES), source: 'random (sessions do not survive a restart)' };
  let key: Buffer;
  try {
    key = fs.readFileSync(file);
  } catch (e) {
    throw new UsageError(
      `cannot read the signing key ${file} (TP_SIGNING_KEY_FILE): ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}; the chart mounts it from the Secret <release name>-signing-key: check that it exists (kubectl get secret -n NAMESPACE), or unset TP_SIGNING_KEY_FILE to use a random key`,
    );
  }
  if (key.length < KEY_BYTES)
    throw new UsageError(
      `the signing key ${file} (TP_SIGNING_KEY_FILE) holds ${key.length} bytes, fewer than the ${KEY_BYTES} it needs: delete the Secret and run tp helm upgrade to generate a new one`,
    );
  return { key, source: file };
}
