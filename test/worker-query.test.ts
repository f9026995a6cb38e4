/**
 * The Query endpoint's reading side against a real Postgres (connectors/postgres/query.ts
 * through the reader, src/worker/query.ts for bodies and cursors): equality filters, ordering
 * with NULLs, keyset paging that holds across concurrent writes, and hostile values.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPostgresReader } from '../connectors/postgres/reader.js';
import { isRecordRejection } from '../src/errors.js';
import type { RowReader } from '../src/types.js';
import { parseQuery, runQuery, type QueryAnswer } from '../src/worker/query.js';
import { databaseName, startPostgres, type TestPostgres } from './helpers/postgres.js';
import { byPrice } from './helpers/query.js';

let pg: TestPostgres;
before(async () => {
  pg = await startPostgres();
});
after(async () => {
  await pg?.stop();
});

const FIELDS = ['id', 'name', 'category', 'price', 'in_stock'];

async function products(t: { name: string; after(fn: () => Promise<void>): void }): Promise<{ db: string; reader: RowReader }> {
  const db = await pg.createDatabase(databaseName(t.name));
  await pg.query(
    db,
    `CREATE TABLE products (id int PRIMARY KEY, name text, category text, price numeric, in_stock boolean, secret text DEFAULT 'hidden');
     INSERT INTO products (id, name, category, price, in_stock)
     SELECT i, 'item ' || i, (ARRAY['shoes', 'hats', 'bags'])[i % 3 + 1], CASE WHEN i % 7 = 0 THEN NULL ELSE (i * 37) % 50 END, i % 2 = 0
       FROM generate_series(1, 40) AS i`,
  );
  const reader = await createPostgresReader(db, { lens: 'products', table: 'public.products', columns: ['name', 'category', 'price', 'in_stock'] });
  t.after(() => reader.close());
  return { db, reader };
}

async function ask(reader: RowReader, body: Record<string, unknown>): Promise<QueryAnswer> {
  return runQuery(reader, parseQuery(body, FIELDS));
}

/** Every page of a query, following nextCursor; `between` runs after each page. */
async function allPages(reader: RowReader, body: Record<string, unknown>, between: (page: number) => Promise<void> = async () => {}): Promise<Array<Record<string, unknown>>> {
  const rows: Array<Record<string, unknown>> = [];
  let cursor: string | undefined;
  for (let page = 0; ; page++) {
    const answer = await ask(reader, cursor ? { ...body, cursor } : body);
    rows.push(...answer.rows);
    await between(page);
    if (answer.nextCursor === null) return rows;
    cursor = answer.nextCursor;
  }
}

test('where is equality on output fields (null matches NULL); total counts every page; select narrows', async (t) => {
  const { reader } = await products(t);
  const hats = await ask(reader, { where: { category: 'hats' }, limit: 5 });
  assert.equal(hats.total, 14);
  assert.equal(hats.rows.length, 5);
  assert.ok(hats.rows.every((r) => r.category === 'hats'));
  assert.ok(hats.nextCursor);
  assert.deepEqual(Object.keys(hats.rows[0]).sort(), ['category', 'id', 'in_stock', 'name', 'price'], 'no column beyond the lens and its key');

  const noPrice = await ask(reader, { where: { price: null }, select: ['id'] });
  assert.deepEqual(noPrice.rows, [7, 14, 21, 28, 35].map((id) => ({ id })));
  assert.equal(noPrice.nextCursor, null);
  const exact = await ask(reader, { where: { price: 35, in_stock: false, category: 'bags' } });
  assert.deepEqual(exact.rows.map((r) => r.id), [5]);
  assert.deepEqual((await ask(reader, { where: { id: '3' } })).rows.map((r) => r.name), ['item 3']);
  // Paging by offset.
  const third = await ask(reader, { orderBy: { field: 'id' }, offset: 2, limit: 1 });
  assert.deepEqual(third.rows.map((r) => r.id), [3]);
});

test('orderBy: several fields, both directions, NULLs last ascending and first descending; the key breaks ties', async (t) => {
  const { reader } = await products(t);
  const all = (await ask(reader, { limit: 1000 })).rows;
  for (const dir of ['asc', 'desc'] as const) {
    const expected = [...all].sort(byPrice(dir === 'asc' ? 1 : -1)).map((r) => r.id);
    assert.deepEqual((await ask(reader, { orderBy: { field: 'price', dir }, limit: 1000 })).rows.map((r) => r.id), expected, dir);
    // The same through pages of 4, whose cursors cross the NULLs.
    assert.deepEqual((await allPages(reader, { orderBy: { field: 'price', dir }, limit: 4 })).map((r) => r.id), expected, `${dir} in pages`);
  }
  const two = await allPages(reader, { orderBy: [{ field: 'category', dir: 'desc' }, { field: 'name' }], limit: 7 });
  const expected = [...all].sort((a, b) => (a.category === b.category ? String(a.name).localeCompare(String(b.name), 'en', { sensitivity: 'variant' }) : a.category! < b.category! ? 1 : -1));
  assert.deepEqual(two.map((r) => r.category), expected.map((r) => r.category));
  assert.equal(new Set(two.map((r) => r.id)).size, 40);
});

test('cursor paging holds across concurrent writes: no row seen twice, no unchanged row skipped', async (t) => {
  const { db, reader } = await products(t);
  const before = (await ask(reader, { where: { category: 'shoes' }, limit: 1000 })).rows.map((r) => r.id as number);
  const deleted = new Set<number>();
  const seen = await allPages(reader, { where: { category: 'shoes' }, orderBy: { field: 'price', dir: 'desc' }, limit: 3 }, async (page) => {
    // Between pages: new rows on both sides of the cursor, a deleted row, a moved row.
    await pg.query(db, `INSERT INTO products (id, name, category, price) VALUES (${100 + page}, 'new', 'shoes', 49), (${200 + page}, 'new', 'shoes', 0)`);
    const victim = before.find((id) => !deleted.has(id) && id % 5 === page % 5);
    if (victim !== undefined && page < 4) {
      deleted.add(victim);
      await pg.query(db, `DELETE FROM products WHERE id = ${victim}`);
    }
  });
  const ids = seen.map((r) => r.id as number);
  assert.equal(new Set(ids).size, ids.length, 'no row twice');
  for (const id of before) assert.ok(ids.includes(id) || deleted.has(id), `row ${id} was neither deleted nor skipped`);
  assert.ok(ids.some((id) => id >= 200), 'rows inserted ahead of the cursor are seen');
});

test('hostile values are parameters; a value its column refuses is a record rejection; composite keys page', async (t) => {
  const { db, reader } = await products(t);
  assert.deepEqual((await ask(reader, { where: { name: "x'; DROP TABLE products; --" } })).rows, []);
  assert.deepEqual((await ask(reader, { where: { category: 'hats" OR 1=1 --' } })).total, 0);
  assert.equal((await ask(reader, {})).total, 40, 'the table is still there');
  await assert.rejects(ask(reader, { where: { price: 'cheap' } }), (err: unknown) => isRecordRejection(err));
  // A cursor naming a value that does not fit its column (a forged one) is refused the same way.
  const page = await ask(reader, { orderBy: { field: 'price' }, limit: 1 });
  const forged = JSON.parse(Buffer.from(page.nextCursor!, 'base64url').toString());
  forged.v = ['not a number'];
  await assert.rejects(ask(reader, { orderBy: { field: 'price' }, cursor: Buffer.from(JSON.stringify(forged)).toString('base64url') }), (err: unknown) => isRecordRejection(err));

  await pg.query(db, `CREATE TABLE stock (sku int, region text, qty int, PRIMARY KEY (sku, region));
    INSERT INTO stock SELECT s, r, s * 10 FROM generate_series(1, 5) s, unnest(ARRAY['eu', 'us', 'apac']) r`);
  const stock = await createPostgresReader(db, { lens: 'stock', table: 'public.stock', columns: ['qty'] });
  t.after(() => stock.close());
  const rows: Array<Record<string, unknown>> = [];
  let cursor: string | undefined;
  do {
    const answer = await runQuery(stock, parseQuery({ orderBy: { field: 'qty', dir: 'desc' }, limit: 4, ...(cursor ? { cursor } : {}) }, ['sku', 'region', 'qty']));
    rows.push(...answer.rows);
    cursor = answer.nextCursor ?? undefined;
  } while (cursor);
  assert.deepEqual(rows.map((r) => `${r.sku}/${r.region}`), [5, 4, 3, 2, 1].flatMap((s) => ['apac', 'eu', 'us'].map((r) => `${s}/${r}`)));
});
