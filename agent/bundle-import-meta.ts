// Injected into the agent's CommonJS bundle by build.mjs, which defines import.meta.url as this: the
// bundle's own URL, as import.meta.url is each module's in dist/ (CommonJS has no import.meta). Never
// imported by tp's modules.
import { pathToFileURL } from 'node:url';

export const bundleImportMetaUrl: string = pathToFileURL(__filename).href;
