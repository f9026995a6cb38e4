/**
 * The Query endpoint on MySQL/MariaDB lenses (connectors/mysql/query.ts through the MySQL
 * reader), asked over HTTP of a real worker (engine, HTTP server) on a throwaway MariaDB:
 * equality filters, ordering with NULLs as Postgres orders them, keyset paging that holds across
 * concurrent writes and returns each row once whatever the ordered column's type, and hostile
 * input answered 400.
 */
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createMysqlReader } from '../connectors/mysql/reader.js';
import type { LensConfig } from '../src/config/types.js';
import { DeadLetters } from '../src/dead-letters.js';
import { createLogger } from '../src/log.js';
import { readerOptions } from '../src/rows.js';
import { openStateStore } from '../src/state/index.js';
import { createEmbedder } from '../src/worker/embedders/index.js';
import { Engine } from '../src/worker/engine.js';
import { startWorkerServer } from '../src/worker/http.js';
import { openVectorIndex } from '../src/worker/index/index.js';
import { startMariadb, type TestMariadb } from './helpers/mariadb.js';
import { databaseName, freePort } from './helpers/postgres.js';
import { byPrice } from './helpers/query.js';

let server: TestMariadb;
before(async () => {
  server = await startMariadb();
});
after(async () => {
  await server?.stop();
});

const KEY = 'sk_query_test';
type Row = Record<string, unknown>;
interface Answer {
  status: number;
  rows: Row[];
  total: number;
  nextCursor: string | null;
  error?: string;
}

/** Product i of 40: three categories, a NULL price every seventh, in stock when even (as the Postgres tests). */
const PRODUCTS = Array.from({ length: 40 }, (_, n) => {
  const i = n + 1;
  return `(${i}, 'item ${i}', '${['shoes', 'hats', 'bags'][i % 3]}', ${i % 7 === 0 ? 'NULL' : (i * 37) % 50}, ${i % 2 === 0})`;
}).join(', ');

/**
 * A database with `products`, `tables` more statements run in it, and a worker serving lenses
 * over HTTP: `products` (rules.query), `closed` (the same table without it) and `lenses` more.
 */
async function worker(t: TestContext, tables = '', lenses: Record<string, Partial<LensConfig>> = {}) {
  const name = databaseName(t.name);
  const url = await server.createDatabase(name);
  await server.query(
    `CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(40), category VARCHAR(20), price DECIMAL(10,2), in_stock BOOLEAN, secret VARCHAR(20) DEFAULT 'hidden');
     INSERT INTO products (id, name, category, price, in_stock) VALUES ${PRODUCTS}; ${tables}`,
    [],
    name,
  );
  const lens = (table: string, overrides: Partial<LensConfig>): LensConfig => ({
    source: 'shop', table: `${name}.${table}`, sink: 'local', fields: [], metadata: [], initialSync: 'none', maxBatch: 1000, maxWaitMs: 20, ...overrides,
  });
  const products = { fields: ['name'], metadata: ['id', 'category', 'price', 'in_stock'] };
  const configs: Record<string, LensConfig> = {
    products: lens('products', { ...products, rules: { query: true } }),
    closed: lens('products', products),
    ...Object.fromEntries(Object.entries(lenses).map(([lensName, o]) => [lensName, lens(o.table ?? lensName, { rules: { query: true }, ...o })])),
  };
  const dir = mkdtempSync(join(tmpdir(), 'tributary-mysql-query-'));
  const [index, state] = await Promise.all([openVectorIndex({ type: 'embedded', path: join(dir, 'index') }), openStateStore({ type: 'embedded', path: join(dir, 'state') })]);
  const log = createLogger({ level: 'fatal' });
  const engine = new Engine({
    lenses: configs,
    openReader: (lensName) => createMysqlReader(url, readerOptions(lensName, configs[lensName])),
    embedder: createEmbedder({ type: 'hash', dimensions: 16 }),
    index, state, log,
    deadLetters: new DeadLetters(state, log),
    queueDir: join(dir, 'queue'),
    maxQueuedChanges: 1000,
  });
  await engine.start();
  const listen = `127.0.0.1:${await freePort()}`;
  const http = await startWorkerServer(listen, { engine, keys: [{ key: KEY, scope: 'search' }] });
  t.after(async () => {
    await new Promise((resolve) => http.close(resolve));
    await engine.stop(2000);
    await Promise.all([index.close(), state.close()]);
  });

  /** POST /v1/query/:lens with `body` (an object, or raw text). */
  async function ask(body: unknown, lensName = 'products'): Promise<Answer> {
    const res = await fetch(`http://${listen}/v1/query/${lensName}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    const json = (await res.json()) as { rows: Row[]; meta: { total: number; nextCursor: string | null }; error?: string };
    return { status: res.status, rows: json.rows, total: json.meta?.total, nextCursor: json.meta?.nextCursor, error: json.error };
  }

  /** Every page of a query, following nextCursor; `between` runs after each page. */
  async function allPages(body: Row, lensName = 'products', between: (page: number) => Promise<void> = async () => {}): Promise<Row[]> {
    const rows: Row[] = [];
    for (let page = 0, cursor: string | undefined; ; page++) {
      const answer = await ask(cursor ? { ...body, cursor } : body, lensName);
      assert.equal(answer.status, 200, answer.error);
      assert.ok(page < 100, `still paging after ${rows.length} rows: the cursor does not advance`);
      rows.push(...answer.rows);
      await between(page);
      if (answer.nextCursor === null) return rows;
      cursor = answer.nextCursor;
    }
  }
  const run = (sql: string) => server.query(sql, [], name);
  return { ask, allPages, run };
}

test('where is equality on output fields (null matches NULL); total counts every page; select narrows; offset pages', async (t) => {
  const { ask } = await worker(t);
  const hats = await ask({ where: { category: 'hats' }, limit: 5 });
  assert.equal(hats.status, 200);
  assert.equal(hats.total, 14);
  assert.equal(hats.rows.length, 5);
  assert.ok(hats.rows.every((r) => r.category === 'hats'));
  assert.ok(hats.nextCursor);
  assert.deepEqual(Object.keys(hats.rows[0]).sort(), ['category', 'id', 'in_stock', 'name', 'price'], 'no column beyond the lens and its key');

  const noPrice = await ask({ where: { price: null }, select: ['id'] });
  assert.deepEqual(noPrice.rows, [7, 14, 21, 28, 35].map((id) => ({ id })));
  assert.equal(noPrice.nextCursor, null);
  assert.deepEqual((await ask({ where: { price: 35, in_stock: false, category: 'bags' } })).rows.map((r) => r.id), [5]);
  assert.deepEqual((await ask({ where: { price: '35.0', in_stock: false } })).rows.map((r) => r.id), [5], 'a DECIMAL compares as a number');
  assert.deepEqual((await ask({ where: { id: '3' } })).rows.map((r) => r.name), ['item 3']);
  assert.deepEqual((await ask({ orderBy: { field: 'id' }, offset: 2, limit: 1 })).rows.map((r) => r.id), [3]);
  assert.deepEqual((await ask({ orderBy: { field: 'id', dir: 'desc' }, offset: 38 })).rows.map((r) => r.id), [2, 1]);
});

test('orderBy: several fields, both directions, NULLs last ascending and first descending; the key breaks ties', async (t) => {
  const { ask, allPages } = await worker(t);
  const all = (await ask({ limit: 1000 })).rows;
  assert.equal(all.length, 40);
  for (const dir of ['asc', 'desc'] as const) {
    const expected = [...all].sort(byPrice(dir === 'asc' ? 1 : -1)).map((r) => r.id);
    assert.deepEqual((await ask({ orderBy: { field: 'price', dir }, limit: 1000 })).rows.map((r) => r.id), expected, dir);
    // The same through pages of 4, whose cursors cross the NULLs.
    assert.deepEqual((await allPages({ orderBy: { field: 'price', dir }, limit: 4 })).map((r) => r.id), expected, `${dir} in pages`);
  }
  const two = await allPages({ orderBy: [{ field: 'category', dir: 'desc' }, { field: 'in_stock' }], limit: 7 });
  const expected = [...all].sort((a, b) =>
    a.category !== b.category ? (a.category! < b.category! ? 1 : -1) : a.in_stock !== b.in_stock ? Number(a.in_stock) - Number(b.in_stock) : (a.id as number) - (b.id as number),
  );
  assert.deepEqual(two.map((r) => r.id), expected.map((r) => r.id));
});

test('cursor paging holds across concurrent writes: no row seen twice, no unchanged row skipped', async (t) => {
  const { ask, allPages, run } = await worker(t);
  const before = (await ask({ where: { category: 'shoes' }, limit: 1000 })).rows.map((r) => r.id as number);
  const deleted = new Set<number>();
  const seen = await allPages({ where: { category: 'shoes' }, orderBy: { field: 'price', dir: 'desc' }, limit: 3 }, 'products', async (page) => {
    // Between pages: new rows on both sides of the cursor (one with a NULL price, first of all), a deleted row.
    await run(`INSERT INTO products (id, name, category, price) VALUES (${100 + page}, 'new', 'shoes', 49), (${200 + page}, 'new', 'shoes', 0), (${300 + page}, 'new', 'shoes', NULL)`);
    const victim = before.find((id) => !deleted.has(id) && id % 5 === page % 5);
    if (victim !== undefined && page < 4) {
      deleted.add(victim);
      await run(`DELETE FROM products WHERE id = ${victim}`);
    }
  });
  const ids = seen.map((r) => r.id as number);
  assert.equal(new Set(ids).size, ids.length, 'no row twice');
  for (const id of before) assert.ok(ids.includes(id) || deleted.has(id), `row ${id} was neither deleted nor skipped`);
  assert.ok(ids.some((id) => id >= 200 && id < 300), 'rows inserted ahead of the cursor are seen');
});

test('every ordered type pages exactly: temporal precision, TIMESTAMP zones, DECIMAL, BIGINT UNSIGNED, binary, FLOAT, ENUM, composite keys', async (t) => {
  // Rows in pairs and triples of equal values, so page boundaries fall between equal values.
  const values = [
    `(18446744073709551615, x'00', '2024-05-01 10:20:30.250001', '2024-05-01 10:20:30.125', 12345678901234567890.0000000001, 0.1, x'ff00', 'zebra')`,
    `(18446744073709551614, x'00', '2024-05-01 10:20:30.250001', '2024-05-01 10:20:30.125', 12345678901234567890.0000000001, 0.1, x'ff00', 'zebra')`,
    `(18446744073709551614, x'ff', '2024-05-01 10:20:30.250001', '2024-05-01 10:20:30.125', 12345678901234567890.0000000002, 0.1, x'ff', 'apple')`,
    `(18446744073709551614, x'7f', '2024-05-01 10:20:30.250000', '2024-05-01 10:20:30.124', 12345678901234567890.0000000002, 0.30000001, x'00ff', 'apple')`,
    `(1, x'61', '2024-05-01 10:20:30.250000', '2024-05-01 10:20:30.124', -1, 0.30000001, x'00ff', 'mango')`,
    `(1, x'62', NULL, NULL, NULL, NULL, NULL, NULL)`,
    `(2, x'62', NULL, NULL, NULL, NULL, NULL, NULL)`,
    `(0, x'', '1999-12-31 23:59:59.999999', '1999-12-31 22:30:00.000', 0, -0.5, x'', 'mango')`,
  ];
  const columns = ['at', 'stamped', 'amount', 'ratio', 'raw', 'kind'];
  const { ask, allPages } = await worker(
    t,
    `CREATE TABLE things (sku BIGINT UNSIGNED, tag VARBINARY(4), at DATETIME(6), stamped TIMESTAMP(3) NULL, amount DECIMAL(30,10), ratio FLOAT,
       raw VARBINARY(8), kind ENUM('zebra', 'apple', 'mango'), PRIMARY KEY (sku, tag));
     INSERT INTO things VALUES ${values.join(', ')}`,
    { things: { metadata: ['sku', 'tag', ...columns] } },
  );
  const all = await allPages({ limit: 1000 }, 'things');
  assert.equal(all.length, values.length);
  const key = (r: Row) => `${r.sku}/${JSON.stringify(r.tag)}`;
  const nulls = all.filter((r) => r.at === null).map(key).sort();
  for (const field of columns) {
    for (const dir of ['asc', 'desc'] as const) {
      const whole = (await allPages({ orderBy: { field, dir }, limit: 1000 }, 'things')).map(key);
      assert.deepEqual([...whole].sort(), all.map(key).sort(), `${field} ${dir}: every row`);
      assert.deepEqual(whole.slice(dir === 'asc' ? -2 : 0, dir === 'asc' ? undefined : 2).sort(), nulls, `${field} ${dir}: NULLs ${dir === 'asc' ? 'last' : 'first'}`);
      for (const limit of [1, 2, 3]) {
        assert.deepEqual((await allPages({ orderBy: { field, dir }, limit }, 'things')).map(key), whole, `${field} ${dir} in pages of ${limit}`);
      }
    }
  }
  // Orders as the column compares: ENUM by its text, binary bytewise, FLOAT and DECIMAL as numbers, TIMESTAMP as instants.
  const order = async (field: string) => (await allPages({ orderBy: { field }, select: ['sku', field], limit: 1000 }, 'things')).map((r) => r[field]);
  assert.deepEqual((await order('kind')).slice(0, 6), ['apple', 'apple', 'mango', 'mango', 'zebra', 'zebra']);
  assert.deepEqual((await order('amount')).slice(0, 3), ['-1.0000000000', '0.0000000000', '12345678901234567890.0000000001']);
  assert.deepEqual((await order('ratio'))[0], -0.5);
  assert.deepEqual((await allPages({ orderBy: { field: 'stamped' }, select: ['sku'], limit: 1 }, 'things')).map((r) => String(r.sku))[0], '0');
  // An UNSIGNED column would read -1 as its complement (the largest sku): refused instead.
  const negative = await ask({ where: { sku: '-1' } }, 'things');
  assert.equal(negative.status, 400);
  assert.match(negative.error!, /^A where or cursor value does not fit its column: lens "things": reading t_\w+\.things failed: Cast to unsigned converted negative integer/);
});

test('a lens without rules.query answers 403; hostile names, values, limits and cursors answer 400 and leave the table be', async (t) => {
  const { ask, run } = await worker(t, `CREATE TABLE numbers (n INT PRIMARY KEY); INSERT INTO numbers SELECT seq FROM seq_1_to_1005`, { numbers: { metadata: ['n'] } });
  const closed = await ask({}, 'closed');
  assert.equal(closed.status, 403);
  assert.equal(closed.error, 'Lens closed does not allow queries; set rules: { query: true } on it');

  for (const name of ['name`; DROP TABLE products; --', "name'; DROP TABLE products; --", 'secret', 'price; SELECT 1']) {
    for (const body of [{ where: { [name]: 1 } }, { orderBy: { field: name } }, { select: [name] }]) {
      const answer = await ask(body);
      assert.equal(answer.status, 400, JSON.stringify(body));
      assert.match(answer.error!, /^(where|orderBy\.field|select\[0\]): unknown field .*; expected one of name, id, category, price, in_stock$/);
    }
  }
  assert.deepEqual((await ask({ where: { name: "x'; DROP TABLE products; --" } })).rows, []);
  assert.equal((await ask({ where: { category: 'hats` OR 1=1 --' } })).total, 0);
  assert.equal((await ask({ where: { name: 'item 1\\' } })).total, 0);

  // Values the columns refuse: MySQL would guess (0, the complement, the start of the text); these are 400s.
  for (const where of [{ price: 'cheap' }, { id: '3.5' }, { id: '99999999999999999999' }, { in_stock: 'yes' }]) {
    const answer = await ask({ where });
    assert.equal(answer.status, 400, JSON.stringify(where));
    assert.match(answer.error!, /^A where or cursor value does not fit its column: lens "products": reading t_\w+\.products failed: Truncated incorrect (DECIMAL|INTEGER) value/);
  }
  // Huge limits are capped; deep offsets and malformed cursors are refused.
  const capped = await ask({ limit: 1e12 }, 'numbers');
  assert.equal(capped.rows.length, 1000);
  assert.equal(capped.total, 1005);
  assert.ok(capped.nextCursor);
  assert.equal((await ask({ offset: 1e9 })).status, 400);
  for (const cursor of ['', 'not a cursor', 'x'.repeat(5000), Buffer.from('{"f":"?","v":[],"id":"1"}').toString('base64url')]) {
    const answer = await ask({ cursor });
    assert.equal(answer.status, 400, cursor.slice(0, 20));
    assert.match(answer.error!, /^cursor: .*; pass meta\.nextCursor of the previous page unchanged$/);
  }
  // A forged cursor whose value does not fit its column is refused like a where value.
  const page = await ask({ orderBy: { field: 'price' }, limit: 1 });
  const forged = JSON.parse(Buffer.from(page.nextCursor!, 'base64url').toString());
  for (const v of [['not a number'], [null]]) {
    const answer = await ask({ orderBy: { field: 'price' }, cursor: Buffer.from(JSON.stringify({ ...forged, v, id: v[0] === null ? 'x' : forged.id })).toString('base64url') });
    assert.equal(answer.status, 400, JSON.stringify(v));
    assert.match(answer.error!, /^A where or cursor value does not fit its column: .*Truncated incorrect (DECIMAL|INTEGER) value/);
  }
  assert.deepEqual(await run('SELECT COUNT(*) AS n FROM products'), [{ n: '40' }], 'the table is still there');
});
