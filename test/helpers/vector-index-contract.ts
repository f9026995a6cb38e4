/**
 * One contract, two indexes: the VectorIndex behaviour the worker relies on, registered as
 * tests against any implementation (test/vector-index.test.ts runs it on the embedded index,
 * test/pgvector-index.test.ts on pgvector), plus the record helpers both files use.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { TributaryError } from '../../src/errors.js';
import type { IndexRecord, VectorIndex } from '../../src/worker/types.js';

/** A place for one index (a directory, a schema): every `open` opens the same index there. */
export interface IndexPlace {
  /** Opens the index; it is closed when the test ends (closing it earlier is fine). */
  open(): Promise<VectorIndex>;
}

export interface IndexFixture {
  /** A fresh, empty place for the test `t`, cleaned up after it. */
  place(t: TestContext): Promise<IndexPlace>;
  /** Semantic search is exact (brute force), not approximate (HNSW): the true top k, always. */
  exactSearch: boolean;
}

export function unit(values: number[]): Float32Array {
  const norm = Math.sqrt(values.reduce((sum, x) => sum + x * x, 0));
  return Float32Array.from(values, (x) => x / norm);
}

/** Deterministic pseudo-random numbers in [-0.5, 0.5). */
export function random(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return x / 2147483648 - 0.5;
  };
}

export function record(id: string, vector: Float32Array, content = `text of ${id}`, metadata: Record<string, unknown> = { id }): IndexRecord {
  return { id, content, metadata, vector, contentHash: `hash-${content}` };
}

/** Records with random unit vectors of `dims` dimensions. */
export function randomRecords(n: number, dims: number, seed = 1, prefix = 'r'): IndexRecord[] {
  const next = random(seed);
  return Array.from({ length: n }, (_, i) => record(`${prefix}${i}`, unit(Array.from({ length: dims }, next))));
}

export function dot(a: Float32Array, b: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i] * b[i];
  return sum;
}

export function vectorIndexContract(fixture: IndexFixture): void {
  /** A fresh index, closed when the test ends. */
  async function fresh(t: TestContext): Promise<VectorIndex> {
    return (await fixture.place(t)).open();
  }

  test('upsert, get, hashes, count and delete', async (t) => {
    const index = await fresh(t);
    assert.equal(await index.count('products'), 0);
    assert.equal(await index.get('products', '1'), undefined);
    assert.deepEqual(await index.hashes('products', ['1']), new Map());

    const a = record('1', unit([1, 0, 0]), 'red shoes', { name: 'Red', price: 10, tags: ['a'], nested: { x: [1, null, true] } });
    const b = record('[7,"eu"]', unit([0, 1, 0]), 'blue hat', { name: 'Blue' });
    await index.upsert('products', [a, b]);
    assert.equal(await index.count('products'), 2);
    assert.equal(await index.count('other'), 0);
    // Vectors come back bit for bit.
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

  test('searchVector ranks by cosine, honours limit, minScore and excludeId', async (t) => {
    const index = await fresh(t);
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

  test(`searchVector over 1,700 random records: exact scores, best first, ${fixture.exactSearch ? 'exactly' : 'nearly'} the true top k; past 1,000 rows exactly`, async (t) => {
    const index = await fresh(t);
    const records = randomRecords(2000, 24, 7);
    await index.upsert('p', records);
    // Deletes move records around (slots, pages): the result must not care.
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
      if (fixture.exactSearch) assert.deepEqual(hits.map((h) => h.id), exact.slice(0, 25).map((e) => e.id));
      const top = new Set(exact.slice(0, 25).map((e) => e.id));
      found += hits.filter((h) => top.has(h.id)).length;
      wanted += 25;
    }
    // Random vectors are HNSW's worst case; 1,700 of them with ef_search 100 find nearly all.
    assert.ok(found / wanted >= 0.9, `recall ${found / wanted}`);

    // More than 1,000 rows: exact (HNSW's ef_search stops at 1,000, so pgvector scans).
    const query = unit(Array.from({ length: 24 }, next));
    const exact = live.map((r) => ({ id: r.id, score: Math.max(0, dot(r.vector, query)) })).sort((x, y) => y.score - x.score || (x.id < y.id ? -1 : 1));
    const many = await index.searchVector('p', query, { limit: 1200, minScore: 0.0001 });
    const expected = exact.filter((e) => e.score >= 0.0001).slice(0, 1200);
    assert.deepEqual(many.map((h) => h.id), expected.map((e) => e.id));
  });

  test('searchKeyword ranks documents with the query terms first and forgets deleted ones', async (t) => {
    const index = await fresh(t);
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
    // SQL-looking input is just text; case does not matter.
    assert.deepEqual((await index.searchKeyword('docs', "kitchen'); DROP TABLE x; --", { limit: 10, minScore: 0 })).map((h) => h.id), ['4']);
    assert.deepEqual((await index.searchKeyword('docs', 'HIKING', { limit: 10, minScore: 0 })).map((h) => h.id), ['1']);

    // Deleted and replaced records follow.
    assert.equal(await index.delete('docs', ['1']), 1);
    assert.ok((await index.searchKeyword('docs', 'hiking boot', { limit: 10, minScore: 0 })).every((h) => h.id !== '1'));
    await index.upsert('docs', [record('2', unit([0, 1]), 'A wool sweater for winter', { category: 'clothing' })]);
    assert.deepEqual(await index.searchKeyword('docs', 'summer', { limit: 10, minScore: 0 }), []);
    assert.deepEqual((await index.searchKeyword('docs', 'sweater', { limit: 10, minScore: 0 })).map((h) => h.id), ['2']);
    // A record added after the keyword index was built is found.
    await index.upsert('docs', [record('5', unit([2, 1]), 'Hiking poles', { category: 'gear' })]);
    assert.deepEqual((await index.searchKeyword('docs', 'hiking', { limit: 10, minScore: 0 })).map((h) => h.id), ['5']);
    // A metadata change alone (same content and hash) is seen by keyword search.
    await index.upsert('docs', [record('5', unit([2, 1]), 'Hiking poles', { category: 'trekking' })]);
    assert.deepEqual((await index.searchKeyword('docs', 'trekking', { limit: 10, minScore: 0 })).map((h) => h.id), ['5']);
    assert.deepEqual(await index.searchKeyword('docs', 'gear', { limit: 10, minScore: 0 }), []);
  });

  test('everything survives close and reopen', async (t) => {
    const place = await fixture.place(t);
    const first = await place.open();
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

    const second = await place.open();
    assert.equal(await second.count('a'), 298);
    assert.equal(await second.count('b'), 5);
    assert.equal(await second.get('a', 'r5'), undefined);
    assert.deepEqual(await second.get('a', 'r7'), before.r7);
    assert.deepEqual(await second.get('a', 'r100'), records[100]);
    const after = await second.searchVector('a', query, { limit: 20, minScore: 0 });
    if (fixture.exactSearch) {
      assert.deepEqual(after, before.semantic);
    } else {
      // An approximate graph may walk differently once reopened (its build state differs): the same hits, nearly.
      const same = after.filter((h) => before.semantic.some((b) => b.id === h.id && Math.abs(b.score - h.score) < 1e-6)).length;
      assert.ok(same >= 18, `${same} of 20 hits the same after reopening`);
    }
    assert.deepEqual(await second.searchKeyword('a', 'zebra', { limit: 5, minScore: 0 }), before.keyword);
    assert.deepEqual(await second.idsAfter('a', undefined, 1000), before.ids);
    assert.equal(before.keyword[0].id, 'r0');
    // Another place is another index.
    const other = await fresh(t);
    assert.equal(await other.count('a'), 0);
  });

  test('concurrent writes of one lens apply and persist in call order', async (t) => {
    const place = await fixture.place(t);
    const index = await place.open();
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
    const reopened = await place.open();
    assert.equal((await reopened.get('p', 'x'))!.content, 'version 19');
    assert.equal(await reopened.count('p'), 17);
    assert.equal(await reopened.get('p', 'y4'), undefined);
  });

  test('a vector of another dimension is an error that says to rebuild the lens', async (t) => {
    const index = await fresh(t);
    await index.upsert('p', [record('1', unit([1, 0, 0]))]);
    await assert.rejects(index.upsert('p', [record('2', unit([1, 0, 0, 0]))]), (err: Error) => {
      assert.ok(err instanceof TributaryError);
      assert.match(err.message, /stores 3-dimensional vectors but record 2 has 4/);
      assert.match(err.message, /Rebuild the lens/);
      assert.match(err.message, /tributary ingest p --mode full/);
      return true;
    });
    await assert.rejects(index.upsert('p', [record('2', unit([1, 0, 0])), record('3', unit([1, 0]))]), /Record 3 of lens p has a 2-dimensional vector; the batch's first has 3/);
    await assert.rejects(index.searchVector('p', unit([1, 0]), { limit: 1, minScore: 0 }), /query vector has 2/);
    assert.equal(await index.count('p'), 1);
    await assert.rejects(index.upsert('p', [record('4', Float32Array.from([NaN, 0, 0]))]), /Record 4 of lens p: its vector holds NaN/);
    await assert.rejects(index.upsert('p', [record('2', unit([1, 0, 0])), record('4', Float32Array.from([0.5, -Infinity, 0]))]), /Record 4 of lens p: its vector holds -Infinity/);
    // Another lens has its own dimensions; an emptied lens takes new ones.
    await index.upsert('q', [record('1', unit([1, 0, 0, 0]))]);
    await index.delete('p', ['1']);
    await index.upsert('p', [record('5', unit([1, 0, 0, 0, 0]))]);
    assert.equal((await index.get('p', '5'))!.vector.length, 5);
  });

  test('idsAfter pages through 2,500 ids in order, each exactly once', async (t) => {
    const index = await fresh(t);
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
    assert.deepEqual(await index.idsAfter('p', '', 2), ['0', '1']);
    assert.deepEqual(await index.idsAfter('p', undefined, 0), []);
    assert.deepEqual(await index.idsAfter('empty', undefined, 10), []);
  });

  test('idsAfter order is JavaScript string order for ASCII and BMP ids', async (t) => {
    const index = await fresh(t);
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
      // Other characters of the Basic Multilingual Plane (U+0080–U+FFFF).
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
    const sorted = [...unique].sort();
    assert.deepEqual(paged, sorted);
    // idsAfter from an id that is not stored starts where JavaScript's order would.
    for (const probe of ['', ' !', 'a', 'a~~', 'Z', '[7,', '~', 'é0', '\u00FF']) {
      assert.deepEqual(await index.idsAfter('p', probe, 3), sorted.filter((id) => id > probe).slice(0, 3), `after ${JSON.stringify(probe)}`);
    }
  });

  test('updateMetadata replaces the metadata of stored ids and keeps content, hash and vector', async (t) => {
    const place = await fixture.place(t);
    const first = await place.open();
    const boot = record('1', unit([1, 0, 0]), 'A waterproof hiking boot', { category: 'footwear', price: 10 });
    const shirt = record('2', unit([0, 1, 0]), 'A cotton t-shirt', { category: 'clothing' });
    const knife = record('3', unit([0, 0, 1]), 'Kitchen knife', { category: 'kitchen' });
    await first.upsert('p', [boot, shirt, knife]);
    await first.updateMetadata('p', [
      { id: '1', metadata: { category: 'trekking', price: 12, tags: ['sale'] } },
      { id: 'missing', metadata: { category: 'ghost' } },
      { id: '2', metadata: { category: 'clothing', colour: 'blue' } },
      // The last of an id wins.
      { id: '2', metadata: { category: 'apparel' } },
    ]);
    const boot2 = { ...boot, metadata: { category: 'trekking', price: 12, tags: ['sale'] } };
    const shirt2 = { ...shirt, metadata: { category: 'apparel' } };
    assert.deepEqual(await first.get('p', '1'), boot2);
    assert.deepEqual(await first.get('p', '2'), shirt2);
    assert.deepEqual(await first.get('p', '3'), knife);
    // Unknown ids are not created.
    assert.equal(await first.get('p', 'missing'), undefined);
    assert.equal(await first.count('p'), 3);
    assert.deepEqual(await first.idsAfter('p', undefined, 10), ['1', '2', '3']);
    assert.deepEqual(await first.hashes('p', ['1', '2', 'missing']), new Map([['1', boot.contentHash], ['2', shirt.contentHash]]));

    // Searches show the new metadata; keyword search finds its string values, not the old ones.
    const semantic = await first.searchVector('p', unit([1, 0, 0]), { limit: 1, minScore: 0 });
    assert.deepEqual(semantic.map(({ id, content, metadata }) => ({ id, content, metadata })), [{ id: '1', content: boot.content, metadata: boot2.metadata }]);
    assert.ok(Math.abs(semantic[0].score - 1) < 1e-6);
    assert.deepEqual((await first.searchKeyword('p', 'trekking', { limit: 10, minScore: 0 })).map((h) => [h.id, h.metadata]), [['1', boot2.metadata]]);
    assert.deepEqual((await first.searchKeyword('p', 'apparel', { limit: 10, minScore: 0 })).map((h) => h.id), ['2']);
    assert.deepEqual(await first.searchKeyword('p', 'footwear', { limit: 10, minScore: 0 }), []);
    assert.deepEqual(await first.searchKeyword('p', 'ghost', { limit: 10, minScore: 0 }), []);
    assert.deepEqual((await first.searchKeyword('p', 'boot', { limit: 10, minScore: 0 })).map((h) => h.id), ['1']);

    // Nothing to do: no records, the same metadata again, only unknown ids.
    await first.updateMetadata('p', []);
    await first.updateMetadata('p', [{ id: '3', metadata: knife.metadata }]);
    await first.updateMetadata('p', [{ id: 'other', metadata: { x: 1 } }]);
    assert.equal(await first.count('p'), 3);
    assert.deepEqual(await first.get('p', '3'), knife);
    await first.close();

    const second = await place.open();
    assert.deepEqual(await second.get('p', '1'), boot2);
    assert.deepEqual(await second.get('p', '2'), shirt2);
    assert.deepEqual(await second.get('p', '3'), knife);
    assert.equal(await second.count('p'), 3);
    assert.deepEqual((await second.searchKeyword('p', 'trekking', { limit: 10, minScore: 0 })).map((h) => h.id), ['1']);
    assert.deepEqual(await second.searchKeyword('p', 'footwear', { limit: 10, minScore: 0 }), []);
  });

  test('updateMetadata of an unknown or emptied lens does nothing, without error', async (t) => {
    const place = await fixture.place(t);
    const index = await place.open();
    await index.updateMetadata('nothing-here', [{ id: '1', metadata: { a: 1 } }]);
    await index.updateMetadata('nothing-here', []);
    assert.equal(await index.count('nothing-here'), 0);
    assert.equal(await index.get('nothing-here', '1'), undefined);
    assert.deepEqual(await index.idsAfter('nothing-here', undefined, 10), []);

    await index.upsert('p', [record('1', unit([1, 0]))]);
    await index.delete('p', ['1']);
    await index.updateMetadata('p', [{ id: '1', metadata: { a: 1 } }]);
    assert.equal(await index.count('p'), 0);
    assert.equal(await index.get('p', '1'), undefined);
    await index.close();

    const reopened = await place.open();
    assert.equal(await reopened.count('nothing-here'), 0);
    assert.equal(await reopened.count('p'), 0);
    // The emptied lens still takes records of new dimensions.
    await reopened.upsert('p', [record('2', unit([1, 0, 0]))]);
    assert.deepEqual(await reopened.idsAfter('p', undefined, 10), ['2']);
  });

  test('updateMetadata refuses metadata that is not an object, and changes nothing', async (t) => {
    const index = await fresh(t);
    const stored = record('1', unit([1, 0]));
    await index.upsert('p', [stored]);
    for (const metadata of [null, [1], 'text', 1]) {
      const bad = [{ id: '1', metadata: { ok: true } }, { id: '1', metadata: metadata as unknown as Record<string, unknown> }];
      await assert.rejects(index.updateMetadata('p', bad), /Record 1 of lens p: metadata must be an object/);
      await assert.rejects(index.updateMetadata('nothing-here', bad), /metadata must be an object/);
    }
    assert.deepEqual(await index.get('p', '1'), stored);
  });

  test('updateMetadata applies in call order with the writes before and after it', async (t) => {
    const place = await fixture.place(t);
    const index = await place.open();
    await index.upsert('p', [record('1', unit([1, 0]), 'old text', { v: 0 }), record('2', unit([0, 1]), 'two', { v: 0 })]);
    // None awaited before the next is called.
    const newer = record('1', unit([1, 1]), 'new text', { v: 1 });
    const writes = [
      index.upsert('p', [newer]),
      index.updateMetadata('p', [{ id: '1', metadata: { v: 2 } }]),
      index.delete('p', ['2']),
      index.updateMetadata('p', [{ id: '2', metadata: { v: 2 } }]),
      index.upsert('p', [record('3', unit([1, 0]), 'three', { v: 0 })]),
      index.updateMetadata('p', [{ id: '3', metadata: { v: 3 } }]),
    ];
    await Promise.all(writes);
    const expected = { one: { ...newer, metadata: { v: 2 } }, three: record('3', unit([1, 0]), 'three', { v: 3 }) };
    // The update kept the newer upsert's text and vector; the deleted id stayed deleted.
    assert.deepEqual(await index.get('p', '1'), expected.one);
    assert.equal(await index.get('p', '2'), undefined);
    assert.deepEqual(await index.get('p', '3'), expected.three);
    assert.equal(await index.count('p'), 2);
    await index.close();
    const reopened = await place.open();
    assert.deepEqual(await reopened.get('p', '1'), expected.one);
    assert.equal(await reopened.get('p', '2'), undefined);
    assert.deepEqual(await reopened.get('p', '3'), expected.three);
  });

  test('closed indexes refuse calls; bad lens names are refused', async (t) => {
    const index = await fresh(t);
    await assert.rejects(index.upsert('../escape', [record('1', unit([1]))]), /Invalid lens name/);
    await assert.rejects(index.count('a/b'), /Invalid lens name/);
    await assert.rejects(index.searchKeyword('a"; DROP', 'x', { limit: 1, minScore: 0 }), /Invalid lens name/);
    await assert.rejects(index.updateMetadata('../escape', [{ id: '1', metadata: {} }]), /Invalid lens name/);
    await index.close();
    await index.close();
    await assert.rejects(index.count('p'), /closed/);
    await assert.rejects(index.upsert('p', [record('1', unit([1]))]), /closed/);
    await assert.rejects(index.updateMetadata('p', [{ id: '1', metadata: {} }]), /closed/);
  });
}
