/**
 * AWS DMS records as its Kinesis (and Kafka) target writes them (message format JSON or
 * JSON_UNFORMATTED):
 *
 *     { "data": { …columns }, "metadata": { "record-type": "data" | "control",
 *       "operation": "load" | "insert" | "update" | "delete", "schema-name", "table-name",
 *       "timestamp": "2026-05-01T10:20:30.123456Z", "transaction-id"? }, "before-image"? }
 *
 * load/insert/update → upsert of `data`; delete → delete (`data` holds the key and nulls);
 * control records (DDL, table status) are skipped. With BeforeImageSettings an update carries
 * the old values under `before-image` (its FieldName), so a key change is visible.
 */
import { formatTableName } from '../../src/table-name.js';
import { objectOf, parseJson, timestampOf, type Decoded, type Decoder } from '../json-records/decoded.js';

const UPSERTS = new Set(['load', 'insert', 'update']);

/** A DMS decoder; `beforeImageField` is the task's BeforeImageSettings FieldName. */
export function dmsDecoder(beforeImageField = 'before-image'): Decoder {
  return (text) => decodeDms(text, beforeImageField);
}

function decodeDms(text: string, beforeImageField: string): Decoded {
  const parsed = parseJson(text);
  if (!parsed) return { kind: 'invalid', reason: 'the record is not JSON' };
  const record = objectOf(parsed.value);
  const metadata = objectOf(record?.metadata);
  if (!record || !metadata) return { kind: 'invalid', reason: 'the record has no "metadata" object (not an AWS DMS record?)' };
  const type = metadata['record-type'];
  if (type === 'control') return { kind: 'skip', why: 'control record' };
  if (type !== 'data') return { kind: 'invalid', reason: `unknown record-type ${JSON.stringify(type)}` };
  const schema = metadata['schema-name'];
  const tableName = metadata['table-name'];
  if (typeof schema !== 'string' || typeof tableName !== 'string' || !tableName) {
    return { kind: 'invalid', reason: 'metadata has no "schema-name" and "table-name"' };
  }
  const table = formatTableName({ schema, name: tableName }, '"');
  const data = objectOf(record.data);
  if (!data) return { kind: 'invalid', reason: 'the record has no "data" object', table };
  const op = metadata.operation;
  const committedAt = timestampOf(metadata.timestamp);
  if (typeof op === 'string' && UPSERTS.has(op)) {
    return { kind: 'change', table, action: 'upsert', row: data, keyRow: data, before: objectOf(record[beforeImageField]), committedAt };
  }
  if (op === 'delete') return { kind: 'change', table, action: 'delete', row: null, keyRow: data, committedAt };
  return { kind: 'invalid', reason: `unknown operation ${JSON.stringify(op)}`, table };
}
