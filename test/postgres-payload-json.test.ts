/**
 * A payload reader's JSON built by Postgres (connectors/postgres/payload-json.ts) says what the
 * JavaScript path (src/payload.ts) says of the same values: one table of awkward values, read
 * both ways, in a UTC session and in one five and a half hours east.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPostgresReader } from '../connectors/postgres/reader.js';
import type { LensConfig } from '../src/config/types.js';
import { payloadJson } from '../src/payload.js';
import { PAYLOAD_JSON, type Row } from '../src/rows.js';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';

let cluster: TestPostgres;
let db: string;

const COLUMNS = `id int PRIMARY KEY, n numeric, b bigint, f float8, r real, ts timestamp, tz timestamptz, d date, by bytea,
  j json, jb jsonb, t text, v varchar(20), c char(5), u uuid, ok boolean, s smallint, p numeric(10,2), p6 numeric(15,6), p7 numeric(15,7),
  p16 numeric(16,2), pn numeric(3,-2)`;
/** Each column's values, one per row (missing ones are NULL). */
const VALUES: Record<string, string[]> = {
  n: ['12.50', '0.30000000000000004', '0.0000001', '0.000001', '100000000000000000000', '1000000000000000000000', 'NaN', '123456789012345678',
    '-0.5', '0.00005', '1152921504606846976', '9007199254740993', '-007.10', '0'],
  b: ['9007199254740993', '9007199254740992', '-9223372036854775808', '0', '1152921504606846976', '-42'],
  f: ['0.1', 'NaN', '1e-7', '-Infinity', '1e21', '123456789.125', 'Infinity'],
  r: ['1.1', 'Infinity', '3.4e38', '-2.5'],
  ts: ['2026-06-10 14:03:00.123456', '0044-03-15 00:00:00 BC', '10000-01-01 00:00:00', 'infinity', '0001-01-01 00:00:00', '9999-12-31 23:59:59.999999', '2026-06-10 14:03:00'],
  tz: ['2026-06-10 14:03:00.999999+02', 'infinity', '2026-01-01 00:00:00+00', '-infinity', '0044-03-15 00:00:00+00 BC', '10000-01-01 00:00:00+00', '2026-06-10 23:59:59.5-09:30'],
  d: ['2026-07-01', '0044-03-15 BC', 'infinity'],
  by: ['\\xdeadbeef', `\\x${'ab'.repeat(100)}`, '\\x'],
  j: ['{ "a" : 1.0, "b":[1, 2], "c": "\\u00e9" }', '[]', '"s"', 'null'],
  jb: ['{"x": null, "y": [true, 1.5]}', '"s"', '12345678901234567890'],
  t: ['quote " backslash \\ newline \n tab \t ctrl \x01 é 😀 \u2028', '', '</script>'],
  v: ['v', 'a"b'],
  c: ['ab', 'abcde'],
  u: ['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'],
  ok: ['true', 'false'],
  s: ['-5', '32767'],
  p: ['12.50', 'NaN', '-0.01', '0', '99999999.99', '-0.00'],
  p6: ['0.000001', '999999999.999999', '-0.100000'],
  p7: ['0.0000001', '12345678.1234567'],
  p16: ['12345678901234.56', '0.30'],
  pn: ['12300', '-99900'],
};
const ROWS = Math.max(...Object.values(VALUES).map((v) => v.length));

before(async () => {
  cluster = await startPostgres();
  db = await cluster.createDatabase('payload_json');
  const literal = (v: string | undefined) => (v === undefined ? 'NULL' : `'${v.replaceAll("'", "''")}'`);
  const rows = Array.from({ length: ROWS }, (_, i) => `(${i + 1}, ${Object.values(VALUES).map((v) => literal(v[i])).join(', ')})`);
  await cluster.query(db, `CREATE TABLE odd (${COLUMNS}); INSERT INTO odd (id, ${Object.keys(VALUES).join(', ')}) VALUES ${rows.join(', ')}`);
  await cluster.query(db, `CREATE TABLE odd_plus AS SELECT *, interval '1 day' AS iv FROM odd; ALTER TABLE odd_plus ADD PRIMARY KEY (id)`);
});
after(async () => {
  await cluster?.stop();
});

/** Every row of `table` through a payload reader, by id: its payload as parsed JSON, and whether Postgres built it. */
async function payloads(url: string, table: string): Promise<Map<string, { payload: Record<string, unknown>; built: boolean }>> {
  const reader = await createPostgresReader(url, { lens: 'odd', table, columns: [], allColumns: true, payloadValues: true });
  try {
    const rows = await reader.page({ limit: 1000 });
    assert.equal(rows.length, ROWS);
    const lens = {} as LensConfig;
    return new Map(rows.map(({ id, row }) => [id, { payload: JSON.parse(payloadJson(lens, row as Row)), built: (row as Row)[PAYLOAD_JSON] !== undefined }]));
  } finally {
    await reader.close();
  }
}

for (const timeZone of ['UTC', 'Asia/Kolkata']) {
  test(`Postgres builds the same payload JSON the JavaScript path makes (session time zone ${timeZone})`, async () => {
    const url = `${db}?options=${encodeURIComponent(`-c TimeZone=${timeZone}`)}`;
    const built = await payloads(url, 'public.odd');
    const encoded = await payloads(url, 'public.odd_plus'); // an interval column: no SQL for it, so every row is encoded in JavaScript
    for (const [id, sql] of built) {
      const js = encoded.get(id)!;
      assert.ok(sql.built && !js.built, 'one table read each way');
      delete js.payload.iv;
      assert.deepEqual(sql.payload, js.payload, `row ${id}`);
    }
    const first = built.get('1')!.payload;
    assert.equal(first.n, 12.5);
    assert.equal(first.b, '9007199254740993', 'past 2^53: text');
    assert.equal(first.ts, '2026-06-10T14:03:00.123Z');
    assert.equal(first.tz, '2026-06-10T12:03:00.999Z');
    assert.equal(first.by, '3q2+7w==');
    assert.deepEqual(first.j, { a: 1, b: [1, 2], c: 'é' });
    assert.equal(built.get('2')!.payload.n, 0.30000000000000004, 'its nearest double prints back the same');
    assert.equal(built.get('2')!.payload.f, null, 'NaN');
    assert.equal(built.get('2')!.payload.ts, '0044-03-15 00:00:00 BC', 'outside years 1–9999: the text');
    assert.equal(built.get('3')!.payload.n, '0.0000001', 'JavaScript prints 1e-7');
    assert.equal(built.get('6')!.payload.n, '1000000000000000000000', 'JavaScript prints 1e+21');
    assert.equal(built.get('8')!.payload.n, '123456789012345678');
    assert.equal(first.p, 12.5, 'numeric(10,2): always a number');
    assert.equal(built.get('2')!.payload.p, 'NaN', '…but NaN');
    assert.equal(built.get('2')!.payload.p6, 999999999.999999, 'numeric(15,6): 15 digits are exact');
    assert.equal(first.p7, '0.0000001', 'numeric(15,7): JavaScript prints 1e-7');
    assert.equal(first.p16, 12345678901234.56, 'numeric(16,2): checked value by value');
    assert.equal(first.pn, 12300, 'numeric(3,-2)');
  });
}

test('a lens whose payload maps columns gets its JSON from Postgres, in its field order', async () => {
  const reader = await createPostgresReader(db, {
    lens: 'odd',
    table: 'public.odd',
    columns: ['t', 'n', 'tz'],
    changeTrackingColumn: 'tz',
    payloadValues: true,
    payloadFields: [['title', 't'], ['price', 'n']],
  });
  try {
    const rows = await reader.readByIds(['1', '7', '999']);
    assert.deepEqual([...rows.keys()].sort(), ['1', '7']);
    const one = rows.get('1') as Row;
    assert.equal(one[PAYLOAD_JSON], JSON.stringify({ title: VALUES.t[0], price: 12.5 }).replace('12.5', '12.50'));
    assert.deepEqual(Object.keys(one), ['tz'], 'besides the JSON, only the changeTrackingColumn');
    assert.equal(one.tz, '2026-06-10T12:03:00.999Z');
    assert.equal((rows.get('7') as Row)[PAYLOAD_JSON], '{"title":null,"price":"NaN"}');
  } finally {
    await reader.close();
  }
});

test("payloadsByIds: each id's JSON and changeTrackingColumn as readByIds has them, in the ids' order, '' for a row that is gone", async () => {
  const options = { lens: 'odd', columns: [], allColumns: true, changeTrackingColumn: 'tz', payloadValues: true };
  const reader = await createPostgresReader(db, { ...options, table: 'public.odd' });
  try {
    const ids = ['7', '999', '1', '8', '3', '2', '6', '5', '4'];
    const rows = await reader.readByIds(ids);
    const { json, tracking } = await reader.payloadsByIds!(ids);
    assert.equal(json.length, ids.length);
    ids.forEach((id, i) => {
      const row = rows.get(id) as Row | undefined;
      assert.equal(json[i], row?.[PAYLOAD_JSON] ?? '', `id ${id}`);
      assert.equal(tracking![i], row?.tz ?? null, `id ${id}`);
    });
    assert.equal(json[1], '', 'id 999 has no row');
    assert.equal(tracking![3], null, 'a NULL changeTrackingColumn (row 8)');
    assert.equal(tracking![2], '2026-06-10T12:03:00.999Z');
  } finally {
    await reader.close();
  }
  // A key of two columns, one of them text with quotes and commas.
  await cluster.query(db, `CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (a, b)); INSERT INTO pairs VALUES (1, 'x', 'one'), (1, 'y "z", w', 'two'), (2, 'x', 'three')`);
  const pairs = await createPostgresReader(db, { ...options, table: 'public.pairs', changeTrackingColumn: undefined });
  try {
    const ids = (await pairs.page({ limit: 10 })).map((r) => r.id).reverse();
    const { json, tracking } = await pairs.payloadsByIds!(ids);
    assert.deepEqual(json.map((j) => JSON.parse(j).v), ['three', 'two', 'one']);
    assert.equal(tracking, undefined);
  } finally {
    await pairs.close();
  }
});

test('a reader that encodes in JavaScript has no payloadsByIds', async () => {
  const reader = await createPostgresReader(db, { lens: 'odd', table: 'public.odd_plus', columns: [], allColumns: true, payloadValues: true });
  try {
    assert.equal(reader.payloadsByIds, undefined);
  } finally {
    await reader.close();
  }
});
