/**
 * The pgvector index against a real PostgreSQL with pgvector: PGlite + pgvector behind
 * pglite-socket (see helpers/pgvector.ts), reached with the `pg` driver as in production.
 * One server for the file; each test works in a schema of its own. The VectorIndex contract
 * (helpers/vector-index-contract.ts) first, then what is particular to pgvector: its tables
 * and indexes, approximate (HNSW) search, keyword query syntax, NUL, byte order of ids, and
 * the server's failures.
 */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { RecordRejectedError, TributaryError } from '../src/errors.js';
import { PgvectorIndex, tableName } from '../src/worker/index/pgvector.js';
import { startPgvector, type RunningPgvector } from './helpers/pgvector.js';
import { randomRecords, record, unit, vectorIndexContract } from './helpers/vector-index-contract.js';

let server: RunningPgvector;
let admin: pg.Pool;
let schemas = 0;

before(async () => {
  server = await startPgvector();
  admin = new pg.Pool({ connectionString: server.url, max: 2 });
});

after(async () => {
  await admin?.end();
  await server?.stop();
});

function newSchema(): string {
  return `t${++schemas}`;
}

/** Opens an index on `schema` (a fresh one by default) and closes it when the test ends. */
async function openIndex(t: TestContext, schema = newSchema()): Promise<PgvectorIndex> {
  const index = await PgvectorIndex.open({ url: server.url, schema });
  t.after(() => index.close());
  return index;
}

describe('pgvector index: the VectorIndex contract', () => {
  vectorIndexContract({
    place: async (t) => {
      const schema = newSchema();
      return { open: () => openIndex(t, schema) };
    },
    exactSearch: false,
  });
});

test('the schema, tables and indexes are created as documented', async (t) => {
  const schema = newSchema();
  const index = await openIndex(t, schema);
  assert.equal((await admin.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema])).rowCount, 1);
  await index.upsert('my-lens', [record('1', unit([1, 0, 0]))]);
  const columns = await admin.query(
    `SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, c.collname
     FROM pg_attribute a LEFT JOIN pg_collation c ON c.oid = a.attcollation
     WHERE a.attrelid = $1::regclass AND a.attnum > 0 ORDER BY a.attnum`,
    [`"${schema}"."lens_my-lens"`],
  );
  assert.deepEqual(
    columns.rows.map((r) => [r.attname, r.type]),
    [
      ['id', 'text'],
      ['content', 'text'],
      ['metadata', 'jsonb'],
      ['metadata_text', 'text'],
      ['content_hash', 'text'],
      ['embedding', 'vector(3)'],
      ['tsv', 'tsvector'],
    ],
  );
  assert.equal(columns.rows[0].collname, 'C');
  const indexes = (await admin.query('SELECT indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY indexname', [schema])).rows.map((r) => r.indexdef);
  assert.ok(indexes.some((d: string) => /USING hnsw \(embedding (public\.)?vector_cosine_ops\)/.test(d)), indexes.join('\n'));
  assert.ok(indexes.some((d: string) => /USING gin \(tsv\)/.test(d)), indexes.join('\n'));

  // Lens names past PostgreSQL's 63-byte identifiers get a cut name with a hash.
  const long = 'a'.repeat(70);
  assert.equal(tableName('short'), 'lens_short');
  assert.equal(tableName(long).length, 63);
  assert.notEqual(tableName(long), tableName(long + 'b'));
  await index.upsert(long, [record('x', unit([1, 0]))]);
  await index.upsert(long + 'b', [record('y', unit([0, 1]))]);
  assert.deepEqual(await index.idsAfter(long, undefined, 10), ['x']);
  assert.deepEqual(await index.idsAfter(long + 'b', undefined, 10), ['y']);
});


test('semantic searches use the HNSW index', async (t) => {
  const schema = newSchema();
  const index = await openIndex(t, schema);
  await index.upsert('p', randomRecords(50, 8, 3));
  const client = await admin.connect();
  try {
    await client.query('BEGIN');
    await client.query('SET LOCAL enable_seqscan = off');
    const plan = await client.query(
      `EXPLAIN SELECT id, embedding OPERATOR(public.<=>) '[1,0,0,0,0,0,0,0]'::public.vector(8) AS distance
       FROM "${schema}"."lens_p" ORDER BY distance LIMIT 5`,
    );
    const text = plan.rows.map((r) => r['QUERY PLAN']).join('\n');
    assert.match(text, /Index Scan using .*hnsw|Index Scan using lens_p_embedding_idx/, text);
    await client.query('COMMIT');
  } finally {
    client.release();
  }
});

test('more than 2,000 dimensions are indexed as halfvec', async (t) => {
  const schema = newSchema();
  const index = await openIndex(t, schema);
  const records = randomRecords(20, 2048, 5);
  await index.upsert('wide', records);
  const indexes = (await admin.query('SELECT indexdef FROM pg_indexes WHERE schemaname = $1', [schema])).rows.map((r) => r.indexdef as string);
  assert.ok(indexes.some((d) => /hnsw \(\(\(?embedding\)?::(public\.)?halfvec\(2048\)\) (public\.)?halfvec_cosine_ops\)/.test(d)), indexes.join('\n'));
  assert.deepEqual(await index.get('wide', 'r3'), records[3]);
  const hits = await index.searchVector('wide', records[3].vector, { limit: 3, minScore: 0 });
  assert.equal(hits[0].id, 'r3');
  // halfvec: about three significant digits.
  assert.ok(Math.abs(hits[0].score - 1) < 2e-3, String(hits[0].score));
  // The search's expression is the indexed one.
  const literal = `'[${Array.from(records[3].vector).join(',')}]'`;
  const results = (await admin.query(
    `BEGIN; SET LOCAL enable_seqscan = off;
     EXPLAIN SELECT id, (embedding::public.halfvec(2048)) OPERATOR(public.<=>) ${literal}::public.halfvec(2048) AS distance
     FROM "${schema}"."lens_wide" ORDER BY distance LIMIT 3;
     COMMIT;`,
  )) as unknown as pg.QueryResult[];
  const plan = results.find((r) => r.command === 'EXPLAIN')!.rows.map((r) => r['QUERY PLAN']).join('\n');
  assert.match(plan, /Index Scan using lens_wide_embedding_idx/, plan);
});


test('keyword queries follow websearch syntax: "phrases", -exclusions, or', async (t) => {
  const index = await openIndex(t);
  await index.upsert('docs', [
    record('1', unit([1, 0]), 'A waterproof hiking boot for mountain trails', { category: 'footwear' }),
    record('2', unit([0, 1]), 'A cotton t-shirt for summer', { category: 'clothing' }),
    record('3', unit([1, 1]), 'Trail running shoes, light and fast', { category: 'footwear' }),
    record('4', unit([1, 2]), 'Kitchen knife set', { category: 'kitchen', sku: 'KN-42' }),
  ]);
  assert.deepEqual((await index.searchKeyword('docs', '"hiking boot"', { limit: 10, minScore: 0 })).map((h) => h.id), ['1']);
  assert.deepEqual(await index.searchKeyword('docs', '"boot hiking"', { limit: 10, minScore: 0 }), []);
  assert.deepEqual((await index.searchKeyword('docs', 'footwear -hiking', { limit: 10, minScore: 0 })).map((h) => h.id), ['3']);
  assert.deepEqual((await index.searchKeyword('docs', 'kitchen or summer', { limit: 10, minScore: 0 })).map((h) => h.id).sort(), ['2', '4']);
  assert.deepEqual(await index.searchKeyword('docs', '-hiking', { limit: 10, minScore: 0 }), []);
  assert.deepEqual(await index.searchKeyword('docs', '!!! -hiking', { limit: 10, minScore: 0 }), []);
});

test('the dimension error names the table to drop; another instance sees the dimensions and follows a rebuilt table', async (t) => {
  const schema = newSchema();
  const index = await openIndex(t, schema);
  await index.upsert('p', [record('1', unit([1, 0, 0]))]);
  await assert.rejects(index.upsert('p', [record('2', unit([1, 0, 0, 0]))]), (err: Error) => {
    assert.ok(err instanceof TributaryError);
    assert.match(err.message, new RegExp(`DROP TABLE "${schema}"\\."lens_p"`));
    assert.match(err.message, /tributary ingest p --mode full/);
    return true;
  });
  // Another process sees the same (its first look at the lens is the catalog).
  const second = await openIndex(t, schema);
  await assert.rejects(second.upsert('p', [record('2', unit([1, 0, 0, 0]))]), /stores 3-dimensional vectors but record 2 has 4/);
  // An emptied lens takes new dimensions; the other instance follows the rebuilt table.
  await index.delete('p', ['1']);
  await index.upsert('p', [record('5', unit([1, 0, 0, 0, 0]))]);
  assert.deepEqual((await second.searchVector('p', unit([1, 0, 0, 0, 0]), { limit: 1, minScore: 0 })).map((h) => h.id), ['5']);
});

test('NUL characters, which PostgreSQL text cannot hold, are refused clearly', async (t) => {
  const index = await openIndex(t);
  await index.upsert('p', [record('1', unit([1, 0]))]);
  await assert.rejects(index.upsert('p', [record('2', unit([1, 0]), 'a\0b')]), /"2" of lens p: its content holds a NUL character/);
  await assert.rejects(index.upsert('p', [record('2', unit([1, 0]), 'a\0b')]), RecordRejectedError, 'the worker dead-letters such records');
  await assert.rejects(index.upsert('p', [record('3', unit([1, 0]), 'ok', { note: 'x\0' })]), /its metadata holds a NUL/);
  // A backslash followed by u0000 is just text.
  await index.upsert('p', [record('4', unit([1, 0]), 'ok', { note: '\\u0000' })]);
  assert.deepEqual((await index.get('p', '4'))!.metadata, { note: '\\u0000' });
  assert.equal(await index.get('p', '1\0'), undefined);
  assert.equal(await index.delete('p', ['1\0']), 0);
  assert.equal(await index.count('p'), 2);
});


test('idsAfter order beyond U+FFFF is byte order, not JavaScript order (the documented limit)', async (t) => {
  const index = await openIndex(t);
  const vector = unit([1, 0]);
  // A character beyond U+FFFF (UTF-16 surrogates, 0xD800–0xDFFF) sorts before U+E000–U+FFFF
  // in JavaScript but after them in UTF-8 byte order.
  await index.upsert('astral', [record('\u{1F600}', vector), record('\uFF5E', vector)]);
  assert.deepEqual(['\u{1F600}', '\uFF5E'].sort(), ['\u{1F600}', '\uFF5E']);
  assert.deepEqual(await index.idsAfter('astral', undefined, 10), ['\uFF5E', '\u{1F600}']);
});

test('a table dropped behind the index reads as an empty lens and is created again', async (t) => {
  const schema = newSchema();
  const index = await openIndex(t, schema);
  await index.upsert('p', [record('1', unit([1, 0]))]);
  await admin.query(`DROP TABLE "${schema}"."lens_p"`);
  assert.equal(await index.count('p'), 0);
  await index.upsert('p', [record('1', unit([1, 0]))]);
  await admin.query(`DROP TABLE "${schema}"."lens_p"`);
  // An upsert with the table cached: it fails once inside and creates the table again.
  await index.upsert('p', [record('2', unit([1, 0]))]);
  assert.deepEqual(await index.idsAfter('p', undefined, 10), ['2']);
});


test('a server without pgvector is a clear error that says to install it', async () => {
  const bare = await startPgvector({ extension: false });
  try {
    await assert.rejects(PgvectorIndex.open({ url: bare.url, schema: 'tributary' }), (err: Error) => {
      assert.ok(err instanceof TributaryError);
      assert.equal(err.retriable, false);
      assert.match(err.message, /could not create the pgvector extension/);
      assert.match(err.message, /installed on the PostgreSQL server/);
      assert.match(err.message, /CREATE EXTENSION vector/);
      return true;
    });
  } finally {
    await bare.stop();
  }
});

test('an unreachable server is a retriable error without the password', async () => {
  const url = 'postgres://someone:s3cret@127.0.0.1:1/db';
  await assert.rejects(PgvectorIndex.open({ url, schema: 'x' }), (err: Error) => {
    assert.ok(err instanceof TributaryError);
    assert.equal(err.retriable, true);
    assert.doesNotMatch(err.message, /s3cret/);
    return true;
  });
});

test('HNSW parameters reach the index definition; exact search on request', async (t) => {
  const schema = newSchema();
  const index = await PgvectorIndex.open({ url: server.url, schema }, { hnsw: { m: 8, efConstruction: 40, efSearch: 200 } });
  t.after(() => index.close());
  const records = randomRecords(300, 8, 21);
  await index.upsert('p', records);
  const defs = await admin.query(`SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexdef LIKE '%hnsw%'`, [schema]);
  assert.equal(defs.rowCount, 1);
  assert.match(defs.rows[0].indexdef, /WITH \(m='8', ef_construction='40'\)/);
  const query = records[5].vector;
  const exact = records.map((r) => ({ id: r.id, score: r.vector.reduce((s, x, i) => s + x * query[i], 0) })).sort((a, b) => b.score - a.score);
  const hits = await index.searchVector('p', query, { limit: 20, minScore: 0, exact: true });
  assert.deepEqual(hits.map((h) => h.id), exact.slice(0, 20).map((e) => e.id));
});
