/**
 * The pgvector index against a real PostgreSQL with pgvector: PGlite + pgvector behind
 * pglite-socket (see helpers/pgvector.ts), reached with the `pg` driver as in production.
 * One server for the file; each test works in a schema of its own. The behaviours are those of
 * test/vector-index.test.ts wherever they apply to a database-backed, approximate index.
 */
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { TributaryError } from '../src/errors.js';
import { PgvectorIndex, tableName } from '../src/worker/index/pgvector.js';
import type { IndexRecord } from '../src/worker/types.js';
import { startPgvector, type RunningPgvector } from './helpers/pgvector.js';

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

function unit(values: number[]): Float32Array {
  const norm = Math.sqrt(values.reduce((sum, x) => sum + x * x, 0));
  return Float32Array.from(values, (x) => x / norm);
}

/** Deterministic pseudo-random numbers in [-0.5, 0.5). */
function random(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x / 2147483648 - 0.5;
  };
}

function record(id: string, vector: Float32Array, content = `text of ${id}`, metadata: Record<string, unknown> = { id }): IndexRecord {
  return { id, content, metadata, vector, contentHash: `hash-${content}` };
}

/** Records with random unit vectors of `dims` dimensions. */
function randomRecords(n: number, dims: number, seed = 1, prefix = 'r'): IndexRecord[] {
  const next = random(seed);
  return Array.from({ length: n }, (_, i) => record(`${prefix}${i}`, unit(Array.from({ length: dims }, next))));
}

function dot(a: Float32Array, b: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i] * b[i];
  return sum;
}

test('upsert, get, hashes, count and delete', async (t) => {
  const index = await openIndex(t);
  assert.equal(await index.count('products'), 0);
  assert.equal(await index.get('products', '1'), undefined);
  assert.deepEqual(await index.hashes('products', ['1']), new Map());

  const a = record('1', unit([1, 0, 0]), 'red shoes', { name: 'Red', price: 10, tags: ['a'], nested: { x: [1, null, true] } });
  const b = record('[7,"eu"]', unit([0, 1, 0]), 'blue hat', { name: 'Blue' });
  await index.upsert('products', [a, b]);
  assert.equal(await index.count('products'), 2);
  assert.equal(await index.count('other'), 0);
  // Vectors come back bit for bit (float32 through pgvector's text form).
  assert.deepEqual(await index.get('products', '1'), a);
  assert.deepEqual(await index.get('products', '[7,"eu"]'), b);
  assert.deepEqual(await index.hashes('products', ['1', 'missing', '[7,"eu"]']), new Map([['1', 'hash-red shoes'], ['[7,"eu"]', 'hash-blue hat']]));

  // What get returns is a copy.
  const read = (await index.get('products', '1'))!;
  read.vector[0] = 0;
  (read.metadata as { name: string }).name = 'changed';
  assert.deepEqual(await index.get('products', '1'), a);

  // An upsert of an existing id replaces it; within one batch the last of an id wins.
  const a2 = record('1', unit([0, 0, 1]), 'green shoes', { name: 'Green' });
  await index.upsert('products', [record('1', unit([0, 1, 1]), 'first'), a2]);
  assert.equal(await index.count('products'), 2);
  assert.deepEqual(await index.get('products', '1'), a2);
  // The same record again (no change) and a new vector under the same hash.
  await index.upsert('products', [a2]);
  const a3 = { ...a2, vector: unit([1, 1, 1]) };
  await index.upsert('products', [a3]);
  assert.deepEqual(await index.get('products', '1'), a3);

  assert.equal(await index.delete('products', ['1', 'missing', '1']), 1);
  assert.equal(await index.count('products'), 1);
  assert.equal(await index.get('products', '1'), undefined);
  assert.deepEqual(await index.get('products', '[7,"eu"]'), b);
  assert.equal(await index.delete('products', ['1']), 0);
  assert.equal(await index.delete('nothing-here', ['1']), 0);
  assert.equal(await index.delete('products', []), 0);
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

test('searchVector ranks by cosine, honours limit, minScore and excludeId', async (t) => {
  const index = await openIndex(t);
  await index.upsert('p', [
    record('exact', unit([1, 0, 0, 0])),
    record('close', unit([0.9, 0.1, 0, 0])),
    record('far', unit([0.2, 1, 0, 0])),
    record('orthogonal', unit([0, 0, 1, 0])),
    record('opposite', unit([-1, 0, 0, 0])),
  ]);
  const query = unit([1, 0, 0, 0]);
  const all = await index.searchVector('p', query, { limit: 10, minScore: 0 });
  // Equal scores (both clamped to 0 here) come in id order.
  assert.deepEqual(all.map((h) => h.id), ['exact', 'close', 'far', 'opposite', 'orthogonal']);
  assert.ok(Math.abs(all[0].score - 1) < 1e-6);
  assert.ok(all[1].score > all[2].score && all[2].score > 0);
  // Negative similarity is clamped to 0; every score is within [0, 1].
  assert.equal(all.find((h) => h.id === 'opposite')!.score, 0);
  for (const hit of all) assert.ok(hit.score >= 0 && hit.score <= 1);
  assert.equal(all[0].content, 'text of exact');
  assert.deepEqual(all[0].metadata, { id: 'exact' });

  assert.deepEqual((await index.searchVector('p', query, { limit: 2, minScore: 0 })).map((h) => h.id), ['exact', 'close']);
  assert.deepEqual((await index.searchVector('p', query, { limit: 10, minScore: 0.5 })).map((h) => h.id), ['exact', 'close']);
  assert.deepEqual((await index.searchVector('p', query, { limit: 2, minScore: 0, excludeId: 'exact' })).map((h) => h.id), ['close', 'far']);
  assert.deepEqual((await index.searchVector('p', query, { limit: 2, minScore: 0, excludeId: 'nope' })).map((h) => h.id), ['exact', 'close']);
  assert.deepEqual(await index.searchVector('p', query, { limit: 0, minScore: 0 }), []);
  assert.deepEqual(await index.searchVector('empty', query, { limit: 5, minScore: 0 }), []);
  // A query vector that is not unit length ranks the same (cosine).
  assert.deepEqual((await index.searchVector('p', Float32Array.from([3, 0, 0, 0]), { limit: 2, minScore: 0 })).map((h) => h.id), ['exact', 'close']);
});

test('searchVector: HNSW results have exact scores and high recall; past 1,000 rows the search is exact', async (t) => {
  const index = await openIndex(t);
  const records = randomRecords(2000, 24, 7);
  await index.upsert('p', records);
  await index.delete('p', records.slice(0, 300).map((r) => r.id));
  const live = records.slice(300);
  const next = random(99);
  let found = 0;
  let wanted = 0;
  for (let q = 0; q < 5; q++) {
    const query = unit(Array.from({ length: 24 }, next));
    const exact = live.map((r) => ({ id: r.id, score: Math.max(0, dot(r.vector, query)) })).sort((x, y) => y.score - x.score);
    const scoreOf = new Map(exact.map((e) => [e.id, e.score]));
    const hits = await index.searchVector('p', query, { limit: 25, minScore: 0 });
    assert.equal(hits.length, 25);
    for (let i = 0; i < hits.length; i++) {
      assert.ok(Math.abs(hits[i].score - scoreOf.get(hits[i].id)!) < 1e-5, 'the score is the exact cosine');
      if (i > 0) assert.ok(hits[i - 1].score >= hits[i].score, 'best first');
    }
    const top = new Set(exact.slice(0, 25).map((e) => e.id));
    found += hits.filter((h) => top.has(h.id)).length;
    wanted += 25;
  }
  // Random vectors are HNSW's worst case; 1,700 of them with ef_search 100 find nearly all.
  assert.ok(found / wanted >= 0.9, `recall ${found / wanted}`);

  // More than 1,000 rows: an exact scan (HNSW's ef_search stops at 1,000).
  const query = unit(Array.from({ length: 24 }, next));
  const exact = live.map((r) => ({ id: r.id, score: Math.max(0, dot(r.vector, query)) })).sort((x, y) => y.score - x.score || (x.id < y.id ? -1 : 1));
  const many = await index.searchVector('p', query, { limit: 1200, minScore: 0.0001 });
  const expected = exact.filter((e) => e.score >= 0.0001).slice(0, 1200);
  assert.deepEqual(many.map((h) => h.id), expected.map((e) => e.id));
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

test('searchKeyword ranks documents with the query terms first and forgets deleted ones', async (t) => {
  const index = await openIndex(t);
  await index.upsert('docs', [
    record('1', unit([1, 0]), 'A waterproof hiking boot for mountain trails', { category: 'footwear' }),
    record('2', unit([0, 1]), 'A cotton t-shirt for summer', { category: 'clothing' }),
    record('3', unit([1, 1]), 'Trail running shoes, light and fast', { category: 'footwear' }),
    record('4', unit([1, 2]), 'Kitchen knife set', { category: 'kitchen', sku: 'KN-42' }),
  ]);
  const hits = await index.searchKeyword('docs', 'hiking boot', { limit: 10, minScore: 0 });
  assert.equal(hits[0].id, '1');
  assert.equal(hits[0].score, 1);
  assert.equal(hits[0].content, 'A waterproof hiking boot for mountain trails');
  assert.deepEqual(hits[0].metadata, { category: 'footwear' });
  assert.ok(hits.every((h) => h.id !== '2' && h.id !== '4'));

  // String metadata values are searchable too.
  assert.deepEqual((await index.searchKeyword('docs', 'kitchen', { limit: 10, minScore: 0 })).map((h) => h.id), ['4']);
  const footwear = await index.searchKeyword('docs', 'footwear', { limit: 10, minScore: 0 });
  assert.deepEqual(footwear.map((h) => h.id).sort(), ['1', '3']);

  // Words are OR'ed; limit and minScore; every score within [0, 1].
  const several = await index.searchKeyword('docs', 'hiking trail summer', { limit: 10, minScore: 0 });
  assert.deepEqual(several.map((h) => h.id).sort(), ['1', '2', '3']);
  for (const h of several) assert.ok(h.score > 0 && h.score <= 1);
  assert.equal((await index.searchKeyword('docs', 'hiking trail summer', { limit: 1, minScore: 0 })).length, 1);
  assert.ok((await index.searchKeyword('docs', 'hiking trail summer', { limit: 10, minScore: 1 })).every((h) => h.score === 1));
  assert.deepEqual(await index.searchKeyword('docs', '   ', { limit: 10, minScore: 0 }), []);
  assert.deepEqual(await index.searchKeyword('docs', 'nonexistentword', { limit: 10, minScore: 0 }), []);
  assert.deepEqual(await index.searchKeyword('docs', 'hiking', { limit: 0, minScore: 0 }), []);
  assert.deepEqual(await index.searchKeyword('nothing-here', 'hiking', { limit: 10, minScore: 0 }), []);
  // A document with more of the words ranks higher.
  const ranked = await index.searchKeyword('docs', 'trail running shoes', { limit: 10, minScore: 0 });
  assert.equal(ranked[0].id, '3');
  assert.ok(ranked.length === 1 || ranked[1].score < 1);

  // websearch syntax: "phrases", -exclusions, `or`; SQL-looking input is just text.
  assert.deepEqual((await index.searchKeyword('docs', '"hiking boot"', { limit: 10, minScore: 0 })).map((h) => h.id), ['1']);
  assert.deepEqual(await index.searchKeyword('docs', '"boot hiking"', { limit: 10, minScore: 0 }), []);
  assert.deepEqual((await index.searchKeyword('docs', 'footwear -hiking', { limit: 10, minScore: 0 })).map((h) => h.id), ['3']);
  assert.deepEqual((await index.searchKeyword('docs', 'kitchen or summer', { limit: 10, minScore: 0 })).map((h) => h.id).sort(), ['2', '4']);
  assert.deepEqual(await index.searchKeyword('docs', '-hiking', { limit: 10, minScore: 0 }), []);
  assert.deepEqual(await index.searchKeyword('docs', '!!! -hiking', { limit: 10, minScore: 0 }), []);
  assert.deepEqual((await index.searchKeyword('docs', "kitchen'); DROP TABLE x; --", { limit: 10, minScore: 0 })).map((h) => h.id), ['4']);
  assert.deepEqual((await index.searchKeyword('docs', 'HIKING', { limit: 10, minScore: 0 })).map((h) => h.id), ['1']);

  // Deleted and replaced records follow.
  assert.equal(await index.delete('docs', ['1']), 1);
  assert.ok((await index.searchKeyword('docs', 'hiking boot', { limit: 10, minScore: 0 })).every((h) => h.id !== '1'));
  await index.upsert('docs', [record('2', unit([0, 1]), 'A wool sweater for winter', { category: 'clothing' })]);
  assert.deepEqual(await index.searchKeyword('docs', 'summer', { limit: 10, minScore: 0 }), []);
  assert.deepEqual((await index.searchKeyword('docs', 'sweater', { limit: 10, minScore: 0 })).map((h) => h.id), ['2']);
  await index.upsert('docs', [record('5', unit([2, 1]), 'Hiking poles', { category: 'gear' })]);
  assert.deepEqual((await index.searchKeyword('docs', 'hiking', { limit: 10, minScore: 0 })).map((h) => h.id), ['5']);
  // A metadata change alone (same content and hash) is seen by keyword search.
  await index.upsert('docs', [record('5', unit([2, 1]), 'Hiking poles', { category: 'trekking' })]);
  assert.deepEqual((await index.searchKeyword('docs', 'trekking', { limit: 10, minScore: 0 })).map((h) => h.id), ['5']);
});

test('everything survives close and reopen', async (t) => {
  const schema = newSchema();
  const first = await PgvectorIndex.open({ url: server.url, schema });
  const records = randomRecords(300, 8, 3);
  records[0] = record('r0', records[0].vector, 'unique zebra words', { kind: 'animal', n: 1 });
  await first.upsert('a', records.slice(0, 200));
  await first.upsert('a', records.slice(200));
  await first.upsert('b', randomRecords(5, 16, 4, 'b'));
  await first.delete('a', ['r5', 'r6']);
  await first.upsert('a', [record('r7', unit([1, 2, 3, 4, 5, 6, 7, 8]), 'replaced', { v: 2 })]);
  const query = unit([1, 0, 1, 0, 1, 0, 1, 0]);
  const before = {
    semantic: await first.searchVector('a', query, { limit: 20, minScore: 0 }),
    keyword: await first.searchKeyword('a', 'zebra', { limit: 5, minScore: 0 }),
    ids: await first.idsAfter('a', undefined, 1000),
    r7: await first.get('a', 'r7'),
  };
  await first.close();
  await assert.rejects(first.count('a'), /closed/);

  const second = await openIndex(t, schema);
  assert.equal(await second.count('a'), 298);
  assert.equal(await second.count('b'), 5);
  assert.equal(await second.get('a', 'r5'), undefined);
  assert.deepEqual(await second.get('a', 'r7'), before.r7);
  assert.deepEqual(await second.get('a', 'r100'), records[100]);
  assert.deepEqual(await second.searchVector('a', query, { limit: 20, minScore: 0 }), before.semantic);
  assert.deepEqual(await second.searchKeyword('a', 'zebra', { limit: 5, minScore: 0 }), before.keyword);
  assert.deepEqual(await second.idsAfter('a', undefined, 1000), before.ids);
  assert.equal(before.keyword[0].id, 'r0');
  // Another schema is another index.
  const other = await openIndex(t);
  assert.equal(await other.count('a'), 0);
});

test('concurrent writes of one lens apply in call order', async (t) => {
  const schema = newSchema();
  const index = await openIndex(t, schema);
  const writes: Array<Promise<unknown>> = [];
  for (let i = 0; i < 20; i++) {
    writes.push(index.upsert('p', [record('x', unit([1, i]), `version ${i}`), record(`y${i}`, unit([i, 1]))]));
    if (i % 5 === 4) writes.push(index.delete('p', [`y${i}`]));
  }
  // Reads run alongside.
  writes.push(index.searchVector('p', unit([1, 0]), { limit: 5, minScore: 0 }), index.count('p'));
  await Promise.all(writes);
  assert.equal((await index.get('p', 'x'))!.content, 'version 19');
  assert.equal(await index.count('p'), 17);
  await index.close();
  const reopened = await openIndex(t, schema);
  assert.equal((await reopened.get('p', 'x'))!.content, 'version 19');
  assert.equal(await reopened.count('p'), 17);
  assert.equal(await reopened.get('p', 'y4'), undefined);
});

test('a vector of another dimension is an error that says to rebuild the lens', async (t) => {
  const schema = newSchema();
  const index = await openIndex(t, schema);
  await index.upsert('p', [record('1', unit([1, 0, 0]))]);
  await assert.rejects(index.upsert('p', [record('2', unit([1, 0, 0, 0]))]), (err: Error) => {
    assert.ok(err instanceof TributaryError);
    assert.match(err.message, /stores 3-dimensional vectors but record 2 has 4/);
    assert.match(err.message, /Rebuild the lens/);
    assert.match(err.message, new RegExp(`DROP TABLE "${schema}"\\."lens_p"`));
    assert.match(err.message, /tributary ingest p --mode full/);
    return true;
  });
  await assert.rejects(index.upsert('p', [record('2', unit([1, 0, 0])), record('3', unit([1, 0]))]), /Record 3 of lens p has a 2-dimensional vector; the batch's first has 3/);
  await assert.rejects(index.searchVector('p', unit([1, 0]), { limit: 1, minScore: 0 }), /query vector has 2/);
  assert.equal(await index.count('p'), 1);
  await assert.rejects(index.upsert('p', [record('4', Float32Array.from([NaN, 0, 0]))]), /NaN/);
  // Another process sees the same (its first look at the lens is the catalog).
  const second = await openIndex(t, schema);
  await assert.rejects(second.upsert('p', [record('2', unit([1, 0, 0, 0]))]), /stores 3-dimensional vectors but record 2 has 4/);
  // Another lens has its own dimensions; an emptied lens takes new ones.
  await index.upsert('q', [record('1', unit([1, 0, 0, 0]))]);
  await index.delete('p', ['1']);
  await index.upsert('p', [record('5', unit([1, 0, 0, 0, 0]))]);
  assert.equal((await index.get('p', '5'))!.vector.length, 5);
  // The other instance follows the rebuilt table.
  assert.deepEqual((await second.searchVector('p', unit([1, 0, 0, 0, 0]), { limit: 1, minScore: 0 })).map((h) => h.id), ['5']);
});

test('NUL characters, which PostgreSQL text cannot hold, are refused clearly', async (t) => {
  const index = await openIndex(t);
  await index.upsert('p', [record('1', unit([1, 0]))]);
  await assert.rejects(index.upsert('p', [record('2', unit([1, 0]), 'a\0b')]), /"2" of lens p: its content holds a NUL character/);
  await assert.rejects(index.upsert('p', [record('3', unit([1, 0]), 'ok', { note: 'x\0' })]), /its metadata holds a NUL/);
  // A backslash followed by u0000 is just text.
  await index.upsert('p', [record('4', unit([1, 0]), 'ok', { note: '\\u0000' })]);
  assert.deepEqual((await index.get('p', '4'))!.metadata, { note: '\\u0000' });
  assert.equal(await index.get('p', '1\0'), undefined);
  assert.equal(await index.delete('p', ['1\0']), 0);
  assert.equal(await index.count('p'), 2);
});

test('idsAfter pages through 2,500 ids in order, each exactly once', async (t) => {
  const index = await openIndex(t);
  const ids = Array.from({ length: 2500 }, (_, i) => String(i));
  const next = random(11);
  const shuffled = [...ids].sort(() => next());
  const vector = unit([1, 1]);
  for (let i = 0; i < shuffled.length; i += 500) {
    await index.upsert('p', shuffled.slice(i, i + 500).map((id) => record(id, vector)));
  }
  const pages: string[][] = [];
  let after: string | undefined;
  for (;;) {
    const page = await index.idsAfter('p', after, 1000);
    if (page.length === 0) break;
    pages.push(page);
    after = page[page.length - 1];
  }
  assert.deepEqual(pages.map((p) => p.length), [1000, 1000, 500]);
  assert.deepEqual(pages.flat(), [...ids].sort());

  // Changes between pages are seen: deleted ids vanish, new ones appear in place.
  const firstPage = await index.idsAfter('p', undefined, 1000);
  await index.delete('p', ['2000', '2001']);
  await index.upsert('p', [record('2000a', vector), record('1', vector)]);
  const rest: string[] = [];
  after = firstPage[firstPage.length - 1];
  for (let page = await index.idsAfter('p', after, 1000); page.length > 0; page = await index.idsAfter('p', after, 1000)) {
    rest.push(...page);
    after = page[page.length - 1];
  }
  const expected = [...ids.filter((id) => id !== '2000' && id !== '2001'), '2000a'].sort();
  assert.deepEqual([...firstPage, ...rest], expected);
  assert.deepEqual(await index.idsAfter('p', '24', 3), ['240', '2400', '2401']);
  assert.deepEqual(await index.idsAfter('p', '999', 3), []);
  assert.deepEqual(await index.idsAfter('p', '', 2), ['0', '1']);
  assert.deepEqual(await index.idsAfter('p', undefined, 0), []);
  assert.deepEqual(await index.idsAfter('empty', undefined, 10), []);
});

test('idsAfter order is JavaScript string order for ASCII and BMP ids; beyond U+FFFF it is byte order', async (t) => {
  const index = await openIndex(t);
  const vector = unit([1, 0]);
  // Every printable ASCII character alone, in pairs with letters and digits, and key-like ids.
  const ascii = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i));
  const ids = [
    ...ascii,
    ...ascii.flatMap((c) => [`a${c}`, `${c}Z`, `9${c}0`]),
    '42',
    '[7,"eu"]',
    '[7,"EU"]',
    '[10,"eu"]',
    'a',
    'A',
    'a_b',
    'a-b',
    'ab',
    'aB',
    // Other characters of the Basic Multilingual Plane (U+0080–U+FFFF): same order as JS.
    'é',
    'e\u0301',
    'ß',
    'Ω',
    '中文',
    '\uE000',
    '\uFF5E',
    'z\u00A0',
  ];
  const unique = [...new Set(ids)];
  await index.upsert('p', unique.map((id) => record(id, vector)));
  const paged: string[] = [];
  let after: string | undefined;
  for (let page = await index.idsAfter('p', after, 37); page.length > 0; page = await index.idsAfter('p', after, 37)) {
    paged.push(...page);
    after = page[page.length - 1];
  }
  assert.deepEqual(paged, [...unique].sort());
  // idsAfter from an id that is not stored starts where JavaScript's order would.
  const sorted = [...unique].sort();
  for (const probe of ['', ' !', 'a', 'a~~', 'Z', '[7,', '~', 'é0', '\u00FF']) {
    assert.deepEqual(await index.idsAfter('p', probe, 3), sorted.filter((id) => id > probe).slice(0, 3), `after ${JSON.stringify(probe)}`);
  }

  // The documented limit: a character beyond U+FFFF (UTF-16 surrogates, 0xD800–0xDFFF) sorts
  // before U+E000–U+FFFF in JavaScript but after them in UTF-8 byte order.
  const astral = index;
  await astral.upsert('astral', [record('\u{1F600}', vector), record('\uFF5E', vector)]);
  assert.deepEqual(['\u{1F600}', '\uFF5E'].sort(), ['\u{1F600}', '\uFF5E']);
  assert.deepEqual(await astral.idsAfter('astral', undefined, 10), ['\uFF5E', '\u{1F600}']);
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

test('closed indexes refuse calls; bad lens names are refused', async (t) => {
  const index = await openIndex(t);
  await assert.rejects(index.upsert('../escape', [record('1', unit([1]))]), /Invalid lens name/);
  await assert.rejects(index.count('a/b'), /Invalid lens name/);
  await assert.rejects(index.searchKeyword('a"; DROP', 'x', { limit: 1, minScore: 0 }), /Invalid lens name/);
  await index.close();
  await index.close();
  await assert.rejects(index.count('p'), /closed/);
  await assert.rejects(index.upsert('p', [record('1', unit([1]))]), /closed/);
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
