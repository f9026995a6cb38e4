/**
 * Debezium change events (as Debezium Server's Kinesis sink, or Kafka, carries them), in
 * either shape:
 *
 * - the envelope `{ before, after, source: { schema | db, table, ts_ms }, op, ts_ms }`, with or
 *   without the JSON converter's `{ schema, payload }` wrapper: `op` c/r/u → upsert of `after`,
 *   d → delete (the key from `before`; under REPLICA IDENTITY DEFAULT it holds only the key
 *   columns), t → the table was truncated, m (logical messages) skipped;
 * - flat rows from the ExtractNewRecordState unwrap: `__deleted: "true"` (delete.handling.mode
 *   rewrite) or `__op: "d"` is a delete; the table comes from the fields `add.fields` adds
 *   (`__schema`/`__source_schema` or `__db`, and `__table`/`__source_table`).
 *
 * A tombstone (an empty or `null` value) carries no action.
 */
import { formatTableName } from '../../src/table-name.js';
import { objectOf, parseJson, timestampOf, type Decoded, type Decoder, type JsonRow } from './decoded.js';

export const debeziumDecoder: Decoder = (text) => {
  if (text.trim() === '') return { kind: 'skip', why: 'tombstone' };
  const parsed = parseJson(text);
  if (!parsed) return { kind: 'invalid', reason: 'the record is not JSON' };
  if (parsed.value === null) return { kind: 'skip', why: 'tombstone' };
  let value = objectOf(parsed.value);
  if (value && 'payload' in value && 'schema' in value) {
    if (value.payload === null) return { kind: 'skip', why: 'tombstone' };
    value = objectOf(value.payload);
  }
  if (!value) return { kind: 'invalid', reason: 'the record is not a JSON object' };
  return typeof value.op === 'string' && objectOf(value.source) ? envelope(value) : flat(value);
};

function envelope(event: JsonRow): Decoded {
  const source = objectOf(event.source)!;
  const table = tableOf(source.schema ?? source.db, source.table);
  if (!table) return { kind: 'invalid', reason: 'source.schema (or source.db) and source.table are missing' };
  const committedAt = timestampOf(source.ts_ms) ?? timestampOf(event.ts_ms);
  const before = objectOf(event.before);
  const after = objectOf(event.after);
  switch (event.op) {
    case 'c':
    case 'r':
    case 'u':
      if (!after) return { kind: 'invalid', reason: `op "${event.op}" without an "after" row`, table };
      return { kind: 'change', table, action: 'upsert', row: after, keyRow: after, before, committedAt };
    case 'd':
      if (!before) return { kind: 'invalid', reason: 'op "d" without a "before" row', table };
      return { kind: 'change', table, action: 'delete', row: null, keyRow: before, committedAt };
    case 't':
      return { kind: 'truncate', table, committedAt };
    case 'm':
      return { kind: 'skip', why: 'logical decoding message' };
    default:
      return { kind: 'invalid', reason: `unknown op ${JSON.stringify(event.op)}`, table };
  }
}

function flat(row: JsonRow): Decoded {
  const table = tableOf(row.__schema ?? row.__source_schema ?? row.__db ?? row.__source_db, row.__table ?? row.__source_table);
  if (!table) return { kind: 'invalid', reason: 'neither a Debezium envelope (op, source) nor an unwrapped row naming its table (__schema, __table)' };
  const columns: JsonRow = {};
  for (const [k, v] of Object.entries(row)) if (!k.startsWith('__')) columns[k] = v;
  const committedAt = timestampOf(row.__source_ts_ms ?? row.__ts_ms);
  if (row.__deleted === 'true' || row.__deleted === true || row.__op === 'd') {
    return { kind: 'change', table, action: 'delete', row: null, keyRow: columns, committedAt };
  }
  return { kind: 'change', table, action: 'upsert', row: columns, keyRow: columns, committedAt };
}

function tableOf(schema: unknown, table: unknown): string | undefined {
  return typeof schema === 'string' && typeof table === 'string' && table ? formatTableName({ schema, name: table }, '"') : undefined;
}
