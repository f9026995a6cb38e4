/**
 * `format: debezium`: Debezium change events as Debezium writes them to Kafka
 * (https://debezium.io/documentation/reference/stable/connectors/postgresql.html#postgresql-events),
 * decoded by the decoder the kinesis source shares (../json-records/debezium.ts): the envelope
 * with or without the JSON converter's schemas, and ExtractNewRecordState's flat rows.
 *
 * - Lenses match an event by `source.schema`/`source.table` (or the unwrap's `__schema` and
 *   `__table` fields) against their `table` (`schema.table`).
 * - The id comes from the message key (`{ "id": 42 }`, or `{ "schema", "payload": { "id": 42 } }`
 *   with schemas): its fields in order, or the lens's `primaryKey` columns of it when set. A
 *   message without a key (a table without a primary key) takes the lens's `primaryKey` from
 *   the row.
 * - A delete is followed by a tombstone (a null value: skipped); a key change arrives as a
 *   delete, a tombstone and a create; `op: t` (truncate) asks the lens's sink for a full sync.
 */
import { objectOf, parseJson, type Decoded as Record, type JsonRow } from '../json-records/decoded.js';
import { debeziumDecoder as decodeEvent } from '../json-records/debezium.js';
import { jsonRowId } from '../json-records/json-ids.js';
import type { ConnectorContext, SourceChange } from '../../src/types.js';
import { UndecodableMessage, type Decoded, type Decoder, type KafkaMessage } from './decoder.js';

type Lens = { name: string; primaryKey?: string[] };

export function debeziumDecoder(lenses: ConnectorContext['lenses']): Decoder {
  const byTable = new Map<string, Lens[]>();
  for (const l of lenses) byTable.set(l.table, [...(byTable.get(l.table) ?? []), { name: l.name, primaryKey: l.primaryKey }]);

  return (message): Decoded => {
    const event = decodeEvent(message.value?.toString('utf8') ?? '');
    if (event.kind === 'skip') return { changes: [] };
    const matched = event.table !== undefined ? byTable.get(event.table) : undefined;
    if (event.kind === 'invalid') {
      if (event.table !== undefined && !matched) return { changes: [] };
      throw new UndecodableMessage(`undecodable Debezium event: ${event.reason}`, (matched ?? []).map((l) => l.name));
    }
    if (!matched) return { changes: [] };
    if (event.kind === 'truncate') return { changes: [], resyncs: matched.map((l) => ({ lens: l.name, reason: `${event.table} was truncated (Debezium op t)` })) };
    const key = eventKey(message);
    const decoded: Required<Pick<Decoded, 'changes' | 'rejects'>> = { changes: [], rejects: [] };
    for (const lens of matched) {
      const c = change(event, lens, key, message);
      if (typeof c === 'string') decoded.rejects.push({ lens: lens.name, reason: `undecodable Debezium event: ${c}` });
      else decoded.changes.push(c);
    }
    return decoded;
  };
}

/** One lens's change: its id from the message key (or the row), the row for upserts; or why there is none. */
function change(event: Extract<Record, { kind: 'change' }>, lens: Lens, key: JsonRow | undefined, message: KafkaMessage): SourceChange | string {
  const id = key ? jsonRowId(key, lens.primaryKey ?? Object.keys(key)) : lens.primaryKey ? jsonRowId(event.keyRow, lens.primaryKey) : undefined;
  if (id === undefined) return key ? `the message key lacks the primaryKey column(s) ${lens.primaryKey!.join(', ')}` : 'the message has no key and the lens names no primaryKey';
  return { lens: lens.name, id, action: event.action, committedAt: event.committedAt ?? message.timestamp, row: event.row };
}

/** The message key's columns, unwrapped from the JSON converter's `{ schema, payload }`. */
function eventKey(message: KafkaMessage): JsonRow | undefined {
  const text = message.key?.toString('utf8');
  if (!text) return undefined;
  const key = objectOf(parseJson(text)?.value);
  if (!key) return undefined;
  const payload = 'schema' in key && 'payload' in key ? objectOf(key.payload) : key;
  return payload && Object.keys(payload).length > 0 ? payload : undefined;
}
