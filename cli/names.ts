// The names tp sends to the cluster, checked before anything is printed or sent: Kubernetes' DNS-1123
// rules (a namespace is a label; a workload and an intercept name, like a Deployment's, a subdomain).
import { UsageError } from '../netaddr/parse.js';

const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** A DNS-1123 label: at most 63 characters, lowercase letters, digits and '-', alphanumeric at both ends. */
export function checkLabel(value: string, what: string): string {
  if (value.length > 63 || !LABEL.test(value))
    throw new UsageError(
      `invalid ${what} "${value}": a DNS-1123 label (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)`,
    );
  return value;
}

/** A DNS-1123 subdomain: at most 253 characters, labels joined by '.'. */
export function checkSubdomain(value: string, what: string): string {
  if (value.length > 253 || !value.split('.').every((l) => l.length <= 63 && LABEL.test(l)))
    throw new UsageError(
      `invalid ${what} "${value}": a DNS-1123 name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters)`,
    );
  return value;
}
