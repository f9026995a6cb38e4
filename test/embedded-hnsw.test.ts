/**
 * The embedded index's HNSW graph: recall against exact search on clustered vectors (random
 * vectors say nothing about recall: see helpers/clustered.ts), updates and deletes seen by the
 * next search, and kill -9 at any instant of indexing: reopened and replayed, the index holds
 * exactly the table's ids.
 */
import { after, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { EmbeddedVectorIndex, type EmbeddedIndexOptions } from '../src/worker/index/embedded.js';
import type { Quantization } from '../src/worker/index/hnsw.js';
import { clusteredVectors, exactTop } from './helpers/clustered.js';
import { applyStep, stepRecord, tableAfter, WRITER_OPTIONS } from './helpers/index-writer.js';
import { random, record } from './helpers/vector-index-contract.js';

const tempDirs: string[] = [];
after(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-hnsw-'));
  tempDirs.push(dir);
  return dir;
}

async function openIndex(t: TestContext, dir: string, options: EmbeddedIndexOptions): Promise<EmbeddedVectorIndex> {
  const index = await EmbeddedVectorIndex.open(dir, options);
  t.after(() => index.close());
  return index;
}

const N = 20_000;
const DIMS = 64;
const QUERIES = 100;

for (const quantization of ['f32', 'f16', 'i8'] as Quantization[]) {
  test(`recall@10 ≥ 0.95 against exact search: ${N.toLocaleString('en')} clustered vectors, ${quantization}`, async (t) => {
    const index = await openIndex(t, tempDir(), { exactBelow: 0, hnsw: { quantization } });
    const all = clusteredVectors(N + QUERIES, DIMS, { seed: 5 });
    const vectors = all.subarray(0, N * DIMS);
    for (let from = 0; from < N; from += 2000) {
      await index.upsert('p', Array.from({ length: 2000 }, (_, i) => record(`r${from + i}`, vectors.slice((from + i) * DIMS, (from + i + 1) * DIMS))));
    }
    // Written vectors are searched exactly until the background insertion puts them in the graph: measure the graph.
    await index.graphBuilt();
    assert.equal(index.graphBacklog('p'), 0);
    let found = 0;
    for (let q = 0; q < QUERIES; q++) {
      const query = all.slice((N + q) * DIMS, (N + q + 1) * DIMS);
      const truth = new Set(exactTop(vectors, DIMS, query, 10));
      const hits = await index.searchVector('p', query, { limit: 10, minScore: 0 });
      found += hits.filter((h) => truth.has(h.id)).length;
      // Asked for, exact search is the truth.
      if (q < 5) assert.deepEqual(new Set((await index.searchVector('p', query, { limit: 10, minScore: 0, exact: true })).map((h) => h.id)), truth);
    }
    const recall = found / (QUERIES * 10);
    t.diagnostic(`recall@10 ${recall.toFixed(3)}`);
    assert.ok(recall >= 0.95, `recall@10 ${recall}`);
  });
}

/**
 * The rows among `rows` whose own vector finds them first. HNSW is approximate: on this data
 * about 1 record in 1,000 is unreachable in a given graph (usearch builds it on several threads,
 * so which one varies from run to run), whatever the search width.
 */
async function foundBySelf(index: EmbeddedVectorIndex, vectors: Float32Array, rows: number[]): Promise<number[]> {
  const found: number[] = [];
  for (const i of rows) {
    const hits = await index.searchVector('p', vectors.slice(i * DIMS, (i + 1) * DIMS), { limit: 1, minScore: 0 });
    if (hits[0]?.id === `r${i}`) found.push(i);
  }
  return found;
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => from + k);

test('through the graph, updates and deletes are seen by the next search', async (t) => {
  const index = await openIndex(t, tempDir(), { exactBelow: 0 });
  const vectors = clusteredVectors(5000, DIMS, { seed: 9 });
  await index.upsert('p', Array.from({ length: 5000 }, (_, i) => record(`r${i}`, vectors.slice(i * DIMS, (i + 1) * DIMS))));
  await index.graphBuilt();
  const reachable = await foundBySelf(index, vectors, range(40, 60));
  assert.ok(reachable.length >= 18, `only ${reachable.length} of 20 records found by their own vector`);
  const subject = `r${reachable[0]}`;
  const query = vectors.slice(reachable[0] * DIMS, (reachable[0] + 1) * DIMS);
  await index.delete('p', [subject]);
  const after = await index.searchVector('p', query, { limit: 10, minScore: 0 });
  assert.ok(after.every((h) => h.id !== subject));
  // Another record moves onto the query's place; its old place no longer finds it.
  const old = vectors.slice(7 * DIMS, 8 * DIMS);
  await index.upsert('p', [record('r7', query, 'moved')]);
  const moved = await index.searchVector('p', query, { limit: 1, minScore: 0 });
  assert.deepEqual([moved[0].id, moved[0].content], ['r7', 'moved']);
  assert.ok((await index.searchVector('p', old, { limit: 1, minScore: 0 }))[0].id !== 'r7');
  // The same once the new vector is in the graph rather than waiting for it.
  await index.graphBuilt();
  assert.equal((await index.searchVector('p', query, { limit: 1, minScore: 0 }))[0].id, 'r7');
  assert.ok((await index.searchVector('p', old, { limit: 1, minScore: 0 }))[0].id !== 'r7');
  // A metadata update keeps the record where it is.
  await index.updateMetadata('p', [{ id: 'r7', metadata: { tag: 'new' } }]);
  assert.deepEqual((await index.searchVector('p', query, { limit: 1, minScore: 0 }))[0].metadata, { tag: 'new' });
});

test('written records are searchable at once; a graph backlog left at close is kept and built after reopen', async (t) => {
  const dir = tempDir();
  const n = 20_000;
  const vectors = clusteredVectors(n, DIMS, { seed: 11 });
  const first = await EmbeddedVectorIndex.open(dir, { exactBelow: 0 });
  await first.upsert('p', Array.from({ length: n }, (_, i) => record(`r${i}`, vectors.slice(i * DIMS, (i + 1) * DIMS))));
  assert.ok(first.graphBacklog('p') > 0, 'the graph takes the vectors in the background');
  const last = vectors.slice((n - 1) * DIMS);
  assert.equal((await first.searchVector('p', last, { limit: 1, minScore: 0 }))[0].id, `r${n - 1}`);
  await first.close();

  const second = await openIndex(t, dir, { exactBelow: 0 });
  const backlog = second.graphBacklog('p');
  t.diagnostic(`backlog after reopen: ${backlog}`);
  assert.ok(backlog > 0, 'the checkpoint kept the records not yet in the graph');
  assert.equal((await second.searchVector('p', last, { limit: 1, minScore: 0 }))[0].id, `r${n - 1}`);
  await second.graphBuilt();
  assert.equal(second.graphBacklog('p'), 0);
  // Both ends of the log: the first records written and the last (in the backlog at the close).
  for (const rows of [range(0, 100), range(n - 100, n)]) {
    const found = await foundBySelf(second, vectors, rows);
    assert.ok(found.length >= 97, `only ${found.length} of records ${rows[0]}–${rows[99]} found by their own vector`);
  }
});

test('writes wait for the graph once its backlog is at the bound, so the vectors waiting for it stay bounded', async (t) => {
  const dir = tempDir();
  const index = await openIndex(t, dir, { exactBelow: 0, graphBacklogMax: 2_000 });
  const vectors = clusteredVectors(10_000, DIMS, { seed: 12 });
  let most = 0;
  for (let from = 0; from < 10_000; from += 1_000) {
    await index.upsert('p', Array.from({ length: 1_000 }, (_, i) => record(`r${from + i}`, vectors.slice((from + i) * DIMS, (from + i + 1) * DIMS))));
    most = Math.max(most, index.graphBacklog('p'));
  }
  t.diagnostic(`largest backlog after a write: ${most}`);
  assert.ok(most <= 2_000 + 1_000, `the backlog stayed within the bound and one write (was ${most})`);
  assert.equal(await index.count('p'), 10_000);
});

test('a graph whose records were all replaced or deleted saves, reopens and searches right', async (t) => {
  // usearch 2.25 corrupts its heap loading a graph saved with removed entries: nodes stay, dead.
  const dir = tempDir();
  const n = 600;
  const before = clusteredVectors(n, DIMS, { seed: 21 });
  const replaced = clusteredVectors(n, DIMS, { seed: 22 });
  const first = await EmbeddedVectorIndex.open(dir, { exactBelow: 0 });
  await first.upsert('p', Array.from({ length: n }, (_, i) => record(`r${i}`, before.slice(i * DIMS, (i + 1) * DIMS))));
  await first.graphBuilt();
  await first.upsert('p', Array.from({ length: n }, (_, i) => record(`r${i}`, replaced.slice(i * DIMS, (i + 1) * DIMS))));
  await first.delete('p', Array.from({ length: n / 2 }, (_, i) => `r${i}`));
  await first.graphBuilt();
  await first.close();
  for (let round = 0; round < 2; round++) {
    const index = await openIndex(t, dir, { exactBelow: 0 });
    for (const i of [n / 2, n / 2 + 77, n - 1]) {
      assert.equal((await index.searchVector('p', replaced.slice(i * DIMS, (i + 1) * DIMS), { limit: 1, minScore: 0 }))[0].id, `r${i}`);
    }
    const hits = await index.searchVector('p', before.slice(0, DIMS), { limit: 20, minScore: 0 });
    assert.ok(hits.every((h) => Number(h.id.slice(1)) >= n / 2), 'no deleted record comes back');
    await index.upsert('p', [record('new', replaced.slice(0, DIMS))]);
    await index.graphBuilt();
    await index.close();
  }
});

/** The last step the writer acknowledged, or -1. */
function lastAcked(ackPath: string): number {
  if (!existsSync(ackPath)) return -1;
  const lines = readFileSync(ackPath, 'utf8').split('\n').filter((l) => l !== '');
  return lines.length ? Number(lines[lines.length - 1]) : -1;
}

test('kill -9 at any instant of indexing: reopened and replayed, no lost and no ghost ids', async (t) => {
  const dir = tempDir();
  const ackPath = join(tempDir(), 'acks');
  const writer = new URL('./helpers/index-writer.js', import.meta.url).pathname;
  const delays = random(3);
  let first = 0;
  for (let round = 0; round < 5; round++) {
    const child = spawn(process.execPath, [writer, dir, ackPath, String(first)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Once the writer has acknowledged a step (a loaded machine starts it slowly), kill it at a random instant.
    for (const deadline = Date.now() + 30_000; lastAcked(ackPath) < first && Date.now() < deadline; ) await sleep(20);
    await sleep((delays() + 0.5) * 1500);
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    assert.equal(stderr, '', 'the writer failed on its own');
    const acked = lastAcked(ackPath);
    assert.ok(acked >= first, `round ${round}: the writer made progress`);

    // The queue replays the step in flight when the writer died.
    const index = await EmbeddedVectorIndex.open(dir, WRITER_OPTIONS);
    await applyStep(index, acked + 1);
    const table = tableAfter(acked + 1);
    const ids = await index.idsAfter('p', undefined, 1_000_000);
    assert.deepEqual(ids, [...table.keys()].sort(), `round ${round}: exactly the table's ids`);
    const sample = random(round + 10);
    for (let i = 0; i < 30; i++) {
      const id = ids[Math.floor((sample() + 0.5) * ids.length)];
      const expected = stepRecord(table.get(id)!, id);
      assert.deepEqual(await index.get('p', id), expected);
      const hits = await index.searchVector('p', expected.vector, { limit: 10, minScore: 0 });
      assert.ok(hits.some((h) => h.id === id), `round ${round}: the graph finds ${id}`);
      for (const h of hits) assert.ok(table.has(h.id), `round ${round}: no ghost ${h.id} in the graph`);
    }
    t.diagnostic(`round ${round}: killed after step ${acked}, ${ids.length} ids`);
    await index.close();
    first = acked + 2;
  }
});
