/** The rows-for-ids stage (src/payload.ts) on its own: value encoding, payload shapes, rows for ids. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate } from 'node:timers/promises';
import type { LensConfig } from '../src/config/types.js';
import { encodeValue, exactNumber, isoUtc, PayloadStage, shapePayload } from '../src/payload.js';
import type { RowReader } from '../src/types.js';

test('numbers are JSON numbers only when exact', () => {
  assert.equal(exactNumber('42'), 42);
  assert.equal(exactNumber('-007.50'), -7.5);
  assert.equal(exactNumber('0.10'), 0.1);
  assert.equal(exactNumber('12.50'), 12.5);
  assert.equal(exactNumber('3.00'), 3);
  assert.equal(exactNumber('100'), 100);
  assert.equal(exactNumber('9007199254740993'), '9007199254740993');
  assert.equal(exactNumber('12345678901234567890.5'), '12345678901234567890.5');
  assert.equal(exactNumber('NaN'), 'NaN');
  assert.equal(encodeValue(2n ** 70n), '1180591620717411303424');
  assert.equal(encodeValue(12n), 12);
});

test('times as ISO 8601 UTC, bytes as base64, JSON as JSON', () => {
  assert.equal(encodeValue(new Date(Date.UTC(2026, 5, 10, 14, 3))), '2026-06-10T14:03:00.000Z');
  assert.equal(encodeValue(Buffer.from([0xde, 0xad, 0xbe, 0xef])), '3q2+7w==');
  assert.deepEqual(encodeValue({ a: [1, 'x'] }), { a: [1, 'x'] });
  assert.deepEqual(encodeValue([new Date(0), 1]), ['1970-01-01T00:00:00.000Z', 1]);
  // A database's time text without a zone, taken as UTC: what Date#toISOString prints, or undefined.
  assert.equal(isoUtc('2026-06-10 14:03:00'), '2026-06-10T14:03:00.000Z');
  assert.equal(isoUtc('2026-06-10 14:03:00.5'), '2026-06-10T14:03:00.500Z');
  assert.equal(isoUtc('0099-12-31 23:59:59.123456'), '0099-12-31T23:59:59.123Z');
  assert.equal(isoUtc('0000-00-00 00:00:00'), undefined, "MySQL's zero date");
  assert.equal(isoUtc('2026-06-10 14:03:00+02'), undefined);
});

test('payload as a list, a map, or every column read', () => {
  const row = { id: 1, name: 'a', amount: 2, hidden: 'x' };
  const lens = (payload?: LensConfig['payload']) => ({ payload }) as LensConfig;
  assert.deepEqual(shapePayload(lens(['name', 'amount']), row), { name: 'a', amount: 2 });
  assert.deepEqual(shapePayload(lens({ title: 'name', price: 'amount' }), row), { title: 'a', price: 2 });
  assert.deepEqual(shapePayload(lens(), row), row);
});

test('rows for ids: carried rows are used, the rest read in one query per slice; a gone row and a delete have no payload', async () => {
  const queries: string[][] = [];
  const reader = {
    async readByIds(ids: string[]) {
      queries.push(ids);
      return new Map(ids.filter((id) => id !== '3').map((id) => [id, { id: Number(id), name: `n${id}` }]));
    },
  } as unknown as RowReader;
  const stage = new PayloadStage({ name: 's', lenses: { l: { payload: ['name'] } as LensConfig }, openReader: async () => reader, state: undefined as never, log: undefined as never });
  const changes = [
    { id: '1', action: 'upsert' as const },
    { id: '2', action: 'upsert' as const, row: { name: 'carried' } },
    { id: '3', action: 'upsert' as const },
    { id: '4', action: 'delete' as const },
    ...Array.from({ length: 1500 }, (_, i) => ({ id: String(10 + i), action: 'upsert' as const })),
  ];
  const slices = [];
  for await (const slice of stage.records('l', changes)) slices.push(slice);
  assert.deepEqual(slices.map((s) => s.length), [100, 1000, 404], 'a first slice of 100 rows, then as many as narrow rows allow');
  assert.equal(queries.length, 3, 'one query per slice');
  assert.deepEqual(queries[0].slice(0, 2), ['1', '3'], 'carried rows and deletes are not read');
  const [one, two, three, four] = slices[0];
  assert.equal(one.json, '{"name":"n1"}');
  assert.equal(two.json, '{"name":"carried"}');
  assert.equal(three.json, undefined, 'a row gone when read');
  assert.equal(four.json, undefined, 'a delete');
});

test('wide rows make small slices: about 8 MB of values at a time', async () => {
  const wide = 'x'.repeat(1024 * 1024);
  const reader = { readByIds: async (ids: string[]) => new Map(ids.map((id) => [id, { body: wide }])) } as unknown as RowReader;
  const stage = new PayloadStage({ name: 's', lenses: { l: {} as LensConfig }, openReader: async () => reader, state: undefined as never, log: undefined as never });
  const sizes = [];
  for await (const slice of stage.records('l', Array.from({ length: 120 }, (_, i) => ({ id: String(i), action: 'upsert' as const })))) sizes.push(slice.length);
  assert.deepEqual(sizes.slice(0, 3), [100, 7, 7]);
});

test('a prepared batch is read once the batch before it asked for its last slice, and its reads are used by its write', async () => {
  const queries: string[][] = [];
  const reader = {
    async readByIds(ids: string[]) {
      queries.push(ids);
      return new Map(ids.map((id) => [id, { id }]));
    },
  } as unknown as RowReader;
  const stage = new PayloadStage({ name: 's', lenses: { l: {} as LensConfig }, openReader: async () => reader, state: undefined as never, log: undefined as never });
  const batch = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => ({ id: `${prefix}${i}`, action: 'upsert' as const }));
  const reads = (prefix: string) => queries.filter((q) => q[0].startsWith(prefix)).length;
  const first = batch('a', 5100);
  const next = batch('b', 1500);
  const slices = stage.records('l', first)[Symbol.asyncIterator]();
  await slices.next(); // 100 rows; then 1,000-row slices, 3 in flight
  stage.prepare('l', next);
  await setImmediate();
  assert.equal(reads('b'), 0, 'not while the batch before it still has slices to ask for');
  await slices.next();
  await slices.next();
  await setImmediate();
  assert.equal(reads('a'), 6, 'every slice of the first batch asked for');
  assert.equal(reads('b'), 1, "the prepared batch's first slice is read meanwhile");
  while (!(await slices.next()).done);
  const got = [];
  for await (const slice of stage.records('l', next)) got.push(...slice.map((r) => r.change.id));
  assert.deepEqual(got, next.map((c) => c.id));
  assert.equal(reads('b'), 2, 'its write used those reads');
  // A retry of the same batch reads afresh.
  for await (const slice of stage.records('l', next)) assert.ok(slice.length > 0);
  assert.equal(reads('b'), 4);
});

test('a read ahead that fails reaches the write that waits for it, not the process; the retry reads afresh', async () => {
  let failing = true;
  const reader = {
    async readByIds(ids: string[]) {
      if (failing) throw new Error('connection lost');
      return new Map(ids.map((id) => [id, { id }]));
    },
  } as unknown as RowReader;
  const stage = new PayloadStage({ name: 's', lenses: { l: {} as LensConfig }, openReader: async () => reader, state: undefined as never, log: undefined as never });
  const changes = Array.from({ length: 50 }, (_, i) => ({ id: String(i), action: 'upsert' as const }));
  stage.prepare('l', changes);
  await new Promise((resolve) => setTimeout(resolve, 20)); // an unhandled rejection would end the test run here
  await assert.rejects(async () => {
    for await (const slice of stage.records('l', changes)) assert.fail(`no slice expected, got ${slice.length}`);
  }, /connection lost/);
  failing = false;
  let rows = 0;
  for await (const slice of stage.records('l', changes)) rows += slice.length;
  assert.equal(rows, 50);
});
