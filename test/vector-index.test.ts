/**
 * The embedded vector index against real files: the VectorIndex contract
 * (helpers/vector-index-contract.ts) on a temp directory per test, then what is particular to
 * the embedded index: its log files (torn and damaged lines, compaction) and its lock.
 */
import { after, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TributaryError } from '../src/errors.js';
import { EmbeddedVectorIndex } from '../src/worker/index/embedded.js';
import { openVectorIndex } from '../src/worker/index/index.js';
import { randomRecords, record, unit, vectorIndexContract } from './helpers/vector-index-contract.js';

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

describe('embedded vector index: the VectorIndex contract', () => {
  vectorIndexContract({
    place: async (t) => {
      const dir = tempDir();
      return { open: () => openIndex(t, dir) };
    },
    exactSearch: true,
  });
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

test('openVectorIndex opens the embedded index in the data directory', async (t) => {
  const data = tempDir();
  const index = await openVectorIndex({ type: 'embedded', path: data });
  t.after(() => index.close());
  await index.upsert('p', [record('1', unit([1, 0]))]);
  assert.ok(existsSync(join(data, 'index', 'p.log')));
  assert.ok(existsSync(join(data, 'index', 'index.lock')));
});

test('the first keyword search builds its index in slices: other requests are answered meanwhile', async (t) => {
  const index = await openIndex(t);
  await index.upsert('p', randomRecords(20_000, 8).map((r, i) => ({ ...r, content: i === 19_999 ? 'needle in the haystack' : `hay ${i}` })));
  const order: string[] = [];
  const keyword = index.searchKeyword('p', 'needle', { limit: 1, minScore: 0 }).then((hits) => {
    order.push('keyword');
    return hits;
  });
  await new Promise((resolve) => setImmediate(resolve));
  await index.searchVector('p', unit([1, 0, 0, 0, 0, 0, 0, 0]), { limit: 1, minScore: 0 }).then(() => order.push('vector'));
  await index.delete('p', ['r5']);
  await index.upsert('p', [record('late', unit([0, 1, 0, 0, 0, 0, 0, 0]), 'a needle added during the build')]);
  const hits = await keyword;
  assert.deepEqual(order, ['vector', 'keyword'], 'a vector search started after the keyword search finished first');
  assert.equal(hits[0].id, 'r19999');
  const after = await index.searchKeyword('p', 'needle', { limit: 5, minScore: 0 });
  assert.deepEqual(after.map((h) => h.id).sort(), ['late', 'r19999'], 'a write during the build is in the keyword index');
  assert.deepEqual(await index.searchKeyword('p', 'hay 5', { limit: 50, minScore: 0 }).then((h) => h.some((x) => x.id === 'r5')), false, 'a delete during the build is not');
});
