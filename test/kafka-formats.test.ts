/**
 * The kafka source's pure parts, without a broker: the Debezium and bus formats
 * (connectors/kafka/debezium.ts, tributary.ts) and the offsets it commits (offsets.ts).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { debeziumDecoder } from '../connectors/kafka/debezium.js';
import { UndecodableMessage, type KafkaMessage } from '../connectors/kafka/decoder.js';
import { Offsets } from '../connectors/kafka/offsets.js';
import { tributaryDecoder } from '../connectors/kafka/tributary.js';
import { encodeChange, encodeSync } from '../src/bus.js';
import { lensConfig } from './helpers/connector-contract.js';

const message = (key: unknown, value: unknown, offset = '7'): KafkaMessage => ({
  topic: 'app.public.items',
  partition: 2,
  offset,
  key: key === null ? null : Buffer.from(typeof key === 'string' ? key : JSON.stringify(key)),
  value: value === null ? null : Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)),
  timestamp: 1000,
});
const lens = (name: string, table: string, primaryKey?: string[]) => ({ name, table, primaryKey, config: lensConfig('app', table) });
const envelope = (op: string, before: object | null, after: object | null) => ({ op, before, after, source: { schema: 'public', table: 'items', ts_ms: 5 } });

test('debezium: ids from the message key, with or without the schema wrapper; rows carried; tombstones and other tables skipped', () => {
  const decode = debeziumDecoder([lens('items', 'public.items'), lens('orders', 'public.orders')]);
  assert.deepEqual(decode(message({ id: 42 }, envelope('c', null, { id: 42, note: 'a' }))).changes, [{ lens: 'items', id: '42', action: 'upsert', committedAt: 5, row: { id: 42, note: 'a' } }]);
  const wrapped = { schema: { type: 'struct' }, payload: { id: 7, region: 'eu' } };
  assert.deepEqual(decode(message(wrapped, { schema: {}, payload: envelope('d', { id: 7, region: 'eu' }, null) })).changes, [{ lens: 'items', id: '[7,"eu"]', action: 'delete', committedAt: 5, row: null }]);
  assert.deepEqual(decode(message({ id: 7 }, null)).changes, [], 'a tombstone');
  assert.deepEqual(decode(message({ id: 1 }, { ...envelope('c', null, { id: 1 }), source: { schema: 'public', table: 'other' } })).changes, [], 'another table');
  assert.deepEqual(decode(message(null, envelope('t', null, null))).resyncs, [{ lens: 'items', reason: 'public.items was truncated (Debezium op t)' }]);
});

test('debezium: a lens primaryKey picks key columns; no key and no primaryKey rejects for that lens only', () => {
  const decode = debeziumDecoder([lens('by-key', 'public.items'), lens('by-id', 'public.items', ['id'])]);
  const keyless = decode(message(null, envelope('u', null, { id: 3, note: 'x' })));
  assert.deepEqual(keyless.changes.map((c) => [c.lens, c.id]), [['by-id', '3']]);
  assert.deepEqual(keyless.rejects, [{ lens: 'by-key', reason: 'undecodable Debezium event: the message has no key and the lens names no primaryKey' }]);
  assert.deepEqual(decode(message({ id: 3, region: 'eu' }, envelope('c', null, { id: 3 }))).changes.map((c) => c.id), ['[3,"eu"]', '3']);
});

test('debezium: an undecodable value names the lenses of its table when it has one', () => {
  const decode = debeziumDecoder([lens('items', 'public.items')]);
  assert.throws(() => decode(message({ id: 1 }, '{not json')), (err: unknown) => err instanceof UndecodableMessage && err.lenses.length === 0);
  assert.throws(() => decode(message({ id: 1 }, envelope('c', null, null))), (err: unknown) => err instanceof UndecodableMessage && err.lenses[0] === 'items');
});

test('tributary: changes and sync requests of known lenses; others skipped; garbage names its lens from the key', () => {
  const decode = tributaryDecoder(new Set(['items']));
  const c = encodeChange('items', { id: '9', action: 'delete', committedAt: 3 });
  assert.deepEqual(decode(message(c.key, c.value)).changes, [{ lens: 'items', id: '9', action: 'delete', committedAt: 3 }]);
  const s = encodeSync('items', 'full', 4);
  assert.deepEqual(decode(message(s.key, s.value)).resyncs, [{ lens: 'items', reason: 'a full sync requested on the bus' }]);
  const other = encodeChange('other', { id: '1', action: 'upsert', committedAt: 1 });
  assert.deepEqual(decode(message(other.key, other.value)).changes, []);
  assert.throws(() => decode(message('items/5', '[]')), (err: unknown) => err instanceof UndecodableMessage && err.lenses[0] === 'items');
});

test('offsets: a position covers every partition read; after a rebalance only partitions still owned since then commit', () => {
  const offsets = new Offsets();
  offsets.assigned({ t: [0, 1] });
  offsets.read('t', 0, '9');
  offsets.read('t', 1, '4');
  const before = offsets.position();
  assert.deepEqual(JSON.parse(before), { g: 1, o: { 't:0': '10', 't:1': '5' } });
  offsets.assigned({ t: [1] }); // partition 0 went to another member
  assert.deepEqual(offsets.commits(before), [{ topic: 't', partition: 1, offset: '5' }]);
  assert.deepEqual(offsets.commits(before), [], 'nothing twice');
  offsets.assigned({ t: [0, 1] }); // 0 came back: the old position must not commit it
  offsets.read('t', 0, '11');
  assert.deepEqual(offsets.commits(before), []);
  assert.deepEqual(offsets.commits(offsets.position()), [{ topic: 't', partition: 0, offset: '12' }]);
  assert.deepEqual(offsets.topics(), ['t']);
});
