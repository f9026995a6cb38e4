/**
 * What a format decoder (../kinesis/dms.ts, ./debezium.ts) makes of one stream record,
 * independent of the transport: the kinesis and kafka sources share these decoders.
 */

/** A row as JSON: column name → value. */
export type JsonRow = Record<string, unknown>;

export type Decoded =
  /**
   * A row change of `table` (`schema.table`). `upsert`: `row` is the new row; `delete`:
   * `row` is null and `keyRow` holds the key columns. `before` is the old row (or its key
   * columns) when the record carries it, so a key change becomes a delete of the old id.
   */
  | { kind: 'change'; table: string; action: 'upsert' | 'delete'; row: JsonRow | null; keyRow: JsonRow; before?: JsonRow; committedAt?: number }
  /** The table was truncated: its lenses need a full sync. */
  | { kind: 'truncate'; table: string; committedAt?: number }
  /** Nothing to do: a control (DDL) record, a tombstone, a heartbeat. */
  | { kind: 'skip'; why: string }
  /** The record cannot be understood: it goes to the dead-letter queue. `table` when it is known. */
  | { kind: 'invalid'; reason: string; table?: string };

/** Decodes one record's data (UTF-8 text). Never throws. */
export type Decoder = (text: string) => Decoded;

/** `value` as a plain JSON object, or undefined. */
export function objectOf(value: unknown): JsonRow | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as JsonRow) : undefined;
}

/** JSON.parse that returns undefined instead of throwing. */
export function parseJson(text: string): { value: unknown } | undefined {
  try {
    return { value: JSON.parse(text) };
  } catch {
    return undefined;
  }
}

/** A timestamp as ms since the epoch: a number of ms, or an ISO date text; undefined otherwise. */
export function timestampOf(value: unknown): number | undefined {
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (typeof value !== 'string') return undefined;
  const ms = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(value) ? value : `${value}Z`);
  return Number.isNaN(ms) ? undefined : ms;
}
