/**
 * The embedded vector index against real files: each test opens its own temp directory.
 */
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TributaryError } from '../src/errors.js';
import { EmbeddedVectorIndex } from '../src/worker/index/embedded.js';
import { openVectorIndex } from '../src/worker/index/index.js';
import type { IndexRecord } from '../src/worker/types.js';

const tempDirs: string[] = [];
after(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-index-'));
  tempDirs.push(dir);
  return dir;
}

/** Opens an index on `dir` (a fresh one by default) and closes it when the test ends. */
async function openIndex(t: TestContext, dir = tempDir()): Promise<EmbeddedVectorIndex> {
  const index = await EmbeddedVectorIndex.open(dir);
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

test('upsert, get, hashes, count and delete', async (t) => {
  const index = await openIndex(t);
  assert.equal(await index.count('products'), 0);
  assert.equal(await index.get('products', '1'), undefined);

  const a = record('1', unit([1, 0, 0]), 'red shoes', { name: 'Red', price: 10, tags: ['a'] });
  const b = record('[7,"eu"]', unit([0, 1, 0]), 'blue hat', { name: 'Blue' });
  await index.upsert('products', [a, b]);
  assert.equal(await index.count('products'), 2);
  assert.equal(await index.count('other'), 0);
  assert.deepEqual(await index.get('products', '1'), a);
  assert.deepEqual(await index.get('products', '[7,"eu"]'), b);
  assert.deepEqual(await index.hashes('products', ['1', 'missing', '[7,"eu"]']), new Map([['1', 'hash-red shoes'], ['[7,"eu"]', 'hash-blue hat']]));

  // What get returns is a copy.
  const read = (await index.get('products', '1'))!;
  read.vector[0] = 0;
  (read.metadata as { name: string }).name = 'changed';
  assert.deepEqual(await index.get('products', '1'), a);

  // An upsert of an existing id replaces it.
  const a2 = record('1', unit([0, 0, 1]), 'green shoes', { name: 'Green' });
  await index.upsert('products', [a2]);
  assert.equal(await index.count('products'), 2);
  assert.deepEqual(await index.get('products', '1'), a2);

  assert.equal(await index.delete('products', ['1', 'missing', '1']), 1);
  assert.equal(await index.count('products'), 1);
  assert.equal(await index.get('products', '1'), undefined);
  assert.deepEqual(await index.get('products', '[7,"eu"]'), b);
  assert.equal(await index.delete('products', ['1']), 0);
  assert.equal(await index.delete('nothing-here', ['1']), 0);
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
  assert.deepEqual(await index.searchVector('p', query, { limit: 0, minScore: 0 }), []);
  assert.deepEqual(await index.searchVector('empty', query, { limit: 5, minScore: 0 }), []);
});

test('searchVector returns exactly the brute-force top k', async (t) => {
  const index = await openIndex(t);
  const records = randomRecords(2000, 24, 7);
  await index.upsert('p', records);
  // Deletes move records between slots: the result must not care.
  await index.delete('p', records.slice(0, 300).map((r) => r.id));
  const live = records.slice(300);
  const next = random(99);
  for (let q = 0; q < 5; q++) {
    const query = unit(Array.from({ length: 24 }, next));
    const expected = live
      .map((r) => ({ id: r.id, score: r.vector.reduce((sum, x, i) => sum + x * query[i], 0) }))
      .sort((x, y) => y.score - x.score)
      .slice(0, 25);
    const hits = await index.searchVector('p', query, { limit: 25, minScore: 0 });
    assert.deepEqual(hits.map((h) => h.id), expected.map((e) => e.id));
    hits.forEach((h, i) => assert.ok(Math.abs(h.score - Math.max(0, expected[i].score)) < 1e-5));
  }
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

  // Limit and minScore; every score within [0, 1].
  const several = await index.searchKeyword('docs', 'hiking trail summer', { limit: 10, minScore: 0 });
  assert.ok(several.length >= 2);
  for (const h of several) assert.ok(h.score > 0 && h.score <= 1);
  assert.equal((await index.searchKeyword('docs', 'hiking trail summer', { limit: 1, minScore: 0 })).length, 1);
  assert.ok((await index.searchKeyword('docs', 'hiking trail summer', { limit: 10, minScore: 1 })).every((h) => h.score === 1));
  assert.deepEqual(await index.searchKeyword('docs', '   ', { limit: 10, minScore: 0 }), []);
  assert.deepEqual(await index.searchKeyword('docs', 'nonexistentword', { limit: 10, minScore: 0 }), []);

  // Deleted and replaced records follow.
  assert.equal(await index.delete('docs', ['1']), 1);
  assert.ok((await index.searchKeyword('docs', 'hiking boot', { limit: 10, minScore: 0 })).every((h) => h.id !== '1'));
  await index.upsert('docs', [record('2', unit([0, 1]), 'A wool sweater for winter', { category: 'clothing' })]);
  assert.deepEqual(await index.searchKeyword('docs', 'summer', { limit: 10, minScore: 0 }), []);
  assert.deepEqual((await index.searchKeyword('docs', 'sweater', { limit: 10, minScore: 0 })).map((h) => h.id), ['2']);
  // A record added after the keyword index was built is found.
  await index.upsert('docs', [record('5', unit([2, 1]), 'Hiking poles', { category: 'gear' })]);
  assert.deepEqual((await index.searchKeyword('docs', 'hiking', { limit: 10, minScore: 0 })).map((h) => h.id), ['5']);
});

test('everything survives close and reopen', async (t) => {
  const dir = tempDir();
  const first = await openIndex(t, dir);
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

  const second = await openIndex(t, dir);
  assert.equal(await second.count('a'), 298);
  assert.equal(await second.count('b'), 5);
  assert.equal(await second.get('a', 'r5'), undefined);
  assert.deepEqual(await second.get('a', 'r7'), before.r7);
  assert.deepEqual(await second.get('a', 'r100'), records[100]);
  assert.deepEqual(await second.searchVector('a', query, { limit: 20, minScore: 0 }), before.semantic);
  assert.deepEqual(await second.searchKeyword('a', 'zebra', { limit: 5, minScore: 0 }), before.keyword);
  assert.deepEqual(await second.idsAfter('a', undefined, 1000), before.ids);
  assert.equal(before.keyword[0].id, 'r0');
});

test('a torn last line is dropped and the rest kept', async (t) => {
  const dir = tempDir();
  const first = await openIndex(t, dir);
  await first.upsert('p', [record('1', unit([1, 0])), record('2', unit([0, 1]))]);
  await first.close();
  const log = join(dir, 'p.log');
  const whole = statSync(log).size;
  // A crash in the middle of appending the next write.
  appendFileSync(log, '{"op":"upsert","id":"3","contentHash":"h","content":"half a li');

  const second = await openIndex(t, dir);
  assert.equal(await second.count('p'), 2);
  assert.equal(await second.get('p', '3'), undefined);
  assert.equal(statSync(log).size, whole, 'the torn tail is cut off the file');
  // The next write starts on a line of its own and survives a restart.
  await second.upsert('p', [record('3', unit([1, 1]))]);
  await second.close();
  // A last line that is complete but damaged (a crash mid-write can leave one) is dropped too.
  const sizeWith3 = statSync(log).size;
  appendFileSync(log, '{"op":"upsert","id":"4","conte\0\0\0\n');
  const third = await openIndex(t, dir);
  assert.equal(await third.count('p'), 3);
  assert.deepEqual(await third.get('p', '3'), record('3', unit([1, 1])));
  assert.equal(statSync(log).size, sizeWith3);
});

test('concurrent writes of one lens apply and persist in call order', async (t) => {
  const dir = tempDir();
  const index = await openIndex(t, dir);
  const writes: Array<Promise<unknown>> = [];
  for (let i = 0; i < 20; i++) {
    writes.push(index.upsert('p', [record('x', unit([1, i]), `version ${i}`), record(`y${i}`, unit([i, 1]))]));
    if (i % 5 === 4) writes.push(index.delete('p', [`y${i}`]));
  }
  await Promise.all(writes);
  assert.equal((await index.get('p', 'x'))!.content, 'version 19');
  assert.equal(await index.count('p'), 17);
  await index.close();
  const reopened = await openIndex(t, dir);
  assert.equal((await reopened.get('p', 'x'))!.content, 'version 19');
  assert.equal(await reopened.count('p'), 17);
  assert.equal(await reopened.get('p', 'y4'), undefined);
});

test('a damaged line in the middle of a log is a clear error', async (t) => {
  const dir = tempDir();
  const first = await openIndex(t, dir);
  await first.upsert('p', [record('1', unit([1, 0]))]);
  await first.close();
  const log = join(dir, 'p.log');
  const text = readFileSync(log, 'utf8');
  writeFileSync(log, 'garbage\n' + text);
  await assert.rejects(EmbeddedVectorIndex.open(dir), (err: Error) => {
    assert.ok(err instanceof TributaryError);
    assert.match(err.message, /p\.log, line 1 is damaged/);
    assert.match(err.message, /tributary ingest p --mode full/);
    return true;
  });
  // The failed open released its lock.
  writeFileSync(log, text);
  const again = await openIndex(t, dir);
  assert.equal(await again.count('p'), 1);
});

test('compaction keeps the content identical and shrinks the log', async (t) => {
  const dir = tempDir();
  const index = await openIndex(t, dir);
  const log = join(dir, 'p.log');
  const records = randomRecords(400, 8, 5);
  const live = records.slice(100);
  await index.upsert('p', records);
  await index.upsert('p', records);
  await index.delete('p', records.slice(0, 100).map((r) => r.id));
  // 900 operations for 300 records: not yet (fewer than 1,000 operations).
  assert.equal(readFileSync(log, 'utf8').split('\n').filter((l) => l !== '').length, 900);
  const beforeCompaction = statSync(log).size;
  // 1,200 operations for 300 records: compacted to 300 lines.
  await index.upsert('p', live);
  const lines = readFileSync(log, 'utf8').split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 300);
  assert.ok(statSync(log).size < beforeCompaction / 2, 'the log shrank');
  assert.ok(!existsSync(join(dir, 'p.log.tmp')));
  const query = unit([1, 2, 3, 4, 0, 0, 0, 0]);
  for (const r of live.slice(0, 20)) assert.deepEqual(await index.get('p', r.id), r);
  const semantic = await index.searchVector('p', query, { limit: 10, minScore: 0 });
  // Appends after compaction go on the new log.
  await index.upsert('p', [record('new', unit([9, 9, 9, 9, 9, 9, 9, 9]))]);
  await index.close();

  const reopened = await openIndex(t, dir);
  assert.equal(await reopened.count('p'), 301);
  for (const r of live) assert.deepEqual(await reopened.get('p', r.id), r);
  assert.equal(await reopened.get('p', 'r0'), undefined);
  assert.deepEqual(await reopened.searchVector('p', query, { limit: 10, minScore: 0, excludeId: 'new' }), semantic);
  assert.ok(await reopened.get('p', 'new'));
});

test('a vector of another dimension is an error that says to rebuild the lens', async (t) => {
  const index = await openIndex(t);
  await index.upsert('p', [record('1', unit([1, 0, 0]))]);
  await assert.rejects(index.upsert('p', [record('2', unit([1, 0, 0, 0]))]), (err: Error) => {
    assert.ok(err instanceof TributaryError);
    assert.match(err.message, /stores 3-dimensional vectors but record 2 has 4/);
    assert.match(err.message, /Rebuild the lens/);
    return true;
  });
  await assert.rejects(index.upsert('p', [record('2', unit([1, 0, 0])), record('3', unit([1, 0]))]), /Record 3 of lens p has a 2-dimensional vector; the batch's first has 3/);
  await assert.rejects(index.searchVector('p', unit([1, 0]), { limit: 1, minScore: 0 }), /query vector has 2/);
  assert.equal(await index.count('p'), 1);
  await assert.rejects(index.upsert('p', [record('4', Float32Array.from([NaN, 0, 0]))]), /NaN/);
  // Another lens has its own dimensions; an emptied lens takes new ones.
  await index.upsert('q', [record('1', unit([1, 0, 0, 0]))]);
  await index.delete('p', ['1']);
  await index.upsert('p', [record('5', unit([1, 0, 0, 0, 0]))]);
  assert.equal((await index.get('p', '5'))!.vector.length, 5);
});

test('idsAfter pages through 2,500 ids in order, each exactly once', async (t) => {
  const index = await openIndex(t);
  const ids = Array.from({ length: 2500 }, (_, i) => String(i));
  // Insert in a shuffled order.
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
  assert.deepEqual(await index.idsAfter('empty', undefined, 10), []);
});

test('a second writer on the same directory fails clearly', async (t) => {
  const dir = tempDir();
  const index = await openIndex(t, dir);
  await index.upsert('p', [record('1', unit([1, 0]))]);
  await assert.rejects(EmbeddedVectorIndex.open(dir), (err: Error) => {
    assert.ok(err instanceof TributaryError);
    assert.match(err.message, /already open for writing in this process/);
    return true;
  });

  // Another process.
  const moduleUrl = new URL('../src/worker/index/embedded.js', import.meta.url).href;
  const child = spawnSync(
    process.execPath,
    ['--input-type=module', '-e', `import { EmbeddedVectorIndex } from ${JSON.stringify(moduleUrl)}; await EmbeddedVectorIndex.open(${JSON.stringify(dir)});`],
    { encoding: 'utf8' },
  );
  assert.notEqual(child.status, 0);
  assert.match(child.stderr, new RegExp(`is in use: it is locked by pid ${process.pid}`));
  // The first writer is unharmed.
  assert.equal(await index.count('p'), 1);
});

test('a lock left by a process that is gone is taken over', async (t) => {
  const dir = tempDir();
  const first = await openIndex(t, dir);
  await first.close();
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  writeFileSync(join(dir, 'index.lock'), `${dead.stdout}\n`);
  const index = await openIndex(t, dir);
  assert.equal(await index.count('p'), 0);
});

test('closed indexes refuse calls; bad lens names are refused', async (t) => {
  const index = await openIndex(t);
  await assert.rejects(index.upsert('../escape', [record('1', unit([1]))]), /Invalid lens name/);
  await assert.rejects(index.count('a/b'), /Invalid lens name/);
  await index.close();
  await assert.rejects(index.count('p'), /closed/);
});

test('openVectorIndex opens the embedded index in the data directory', async (t) => {
  const data = tempDir();
  const index = await openVectorIndex({ type: 'embedded', path: data });
  t.after(() => index.close());
  await index.upsert('p', [record('1', unit([1, 0]))]);
  assert.ok(existsSync(join(data, 'index', 'p.log')));
  assert.ok(existsSync(join(data, 'index', 'index.lock')));
});
