/**
 * Writes config/tributary.schema.json (what editors validate against) from ./schema.ts.
 * Run with `npm run schema`; test/config.test.ts fails when the committed file is stale.
 */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { schemaFileText } from './schema.js';

// This file runs as dist/src/config/write-schema.js; the repository root is three levels up.
const target = fileURLToPath(new URL('../../../config/tributary.schema.json', import.meta.url));
writeFileSync(target, schemaFileText());
console.log(`wrote ${target}`);
