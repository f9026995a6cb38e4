/**
 * Ids from JSON rows (docs/architecture.md, "Ids"), for sources whose changes carry the row as
 * JSON (Kinesis, later Kafka): one key column is its value as text; a composite key is the
 * JSON array of its values, numbers as numbers, booleans as booleans, everything else as
 * strings: the same text `encodeId` (src/ids.ts) makes from database text.
 */
import type { JsonRow } from './decoded.js';

/** The id of `row` under the key `columns`; undefined when a key column is missing or null. */
export function jsonRowId(row: JsonRow, columns: readonly string[]): string | undefined {
  if (columns.length === 1) {
    const v = row[columns[0]];
    return v === undefined || v === null ? undefined : keyText(v);
  }
  const parts: string[] = [];
  for (const column of columns) {
    const v = row[column];
    if (v === undefined || v === null) return undefined;
    parts.push(typeof v === 'number' || typeof v === 'boolean' ? String(v) : JSON.stringify(keyText(v)));
  }
  return `[${parts.join(',')}]`;
}

/** One key value as text: strings as they are, numbers and booleans as JSON, objects as JSON text. */
function keyText(v: unknown): string {
  return typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v);
}
