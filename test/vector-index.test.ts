/**
 * The embedded vector index against real files: the VectorIndex contract
 * (helpers/vector-index-contract.ts) on a temp directory per test, then what is particular to
 * the embedded index: its log files (torn and damaged lines, compaction) and its lock.
 */
import { after, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TributaryError } from '../src/errors.js';
import { EmbeddedVectorIndex, type EmbeddedIndexOptions } from '../src/worker/index/embedded.js';
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
async function openIndex(t: TestContext, dir = tempDir(), options: EmbeddedIndexOptions = {}): Promise<EmbeddedVectorIndex> {
  const index = await EmbeddedVectorIndex.open(dir, options);
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

describe('embedded vector index: the VectorIndex contract through the HNSW graph (i8 vectors)', () => {
  vectorIndexContract({
    place: async (t) => {
      const dir = tempDir();
      return { open: () => openIndex(t, dir, { exactBelow: 0, hnsw: { quantization: 'i8' } }) };
    },
    exactSearch: false,
  });
});

/** Deletes a lens's checkpoints, as if the process had died before writing any: the next open replays its whole log. */
function dropCheckpoints(dir: string, lens: string): void {
  for (const name of readdirSync(dir)) if (name.startsWith(`${lens}.`) && !name.endsWith('.log')) rmSync(join(dir, name));
}

test('a torn last write is cut off the log and the rest kept', async (t) => {
  const dir = tempDir();
  const first = await openIndex(t, dir);
  await first.upsert('p', [record('1', unit([1, 0])), record('2', unit([0, 1]))]);
  await first.close();
  dropCheckpoints(dir, 'p');
  const log = join(dir, 'p.0.log');
  const whole = statSync(log).size;
  // A crash in the middle of appending the next write: half a frame.
  const bytes = readFileSync(log);
  appendFileSync(log, bytes.subarray(0, 40));

  const second = await openIndex(t, dir);
  assert.equal(await second.count('p'), 2);
  assert.equal(statSync(log).size, whole, 'the torn tail is cut off the file');
  // The next write starts on a frame of its own and survives a restart.
  await second.upsert('p', [record('3', unit([1, 1]))]);
  await second.close();
  dropCheckpoints(dir, 'p');
  // A whole last frame whose checksum fails (a crash mid-write can leave one) is dropped too.
  const sizeWith3 = statSync(log).size;
  const last = readFileSync(log).subarray(whole);
  last[last.length - 1] ^= 0xff;
  appendFileSync(log, last);
  const third = await openIndex(t, dir);
  assert.equal(await third.count('p'), 3);
  assert.deepEqual(await third.get('p', '3'), record('3', unit([1, 1])));
  assert.equal(statSync(log).size, sizeWith3);
});

test('a damaged frame in the middle of a log, or an old JSON log, is a clear error', async (t) => {
  const dir = tempDir();
  const first = await openIndex(t, dir);
  await first.upsert('p', [record('1', unit([1, 0]))]);
  await first.upsert('p', [record('2', unit([1, 0]))]);
  await first.close();
  dropCheckpoints(dir, 'p');
  const log = join(dir, 'p.0.log');
  const good = readFileSync(log);
  const bad = Buffer.from(good);
  bad[20] ^= 0xff;
  writeFileSync(log, bad);
  await assert.rejects(EmbeddedVectorIndex.open(dir), (err: Error) => {
    assert.ok(err instanceof TributaryError);
    assert.match(err.message, /files of lens p .* are damaged \(damaged frame at byte 0/);
    assert.match(err.message, /tributary ingest p --mode full/);
    return true;
  });
  // The failed open released its lock.
  writeFileSync(log, good);
  const again = await openIndex(t, dir);
  assert.equal(await again.count('p'), 2);
  await again.close();
  writeFileSync(join(dir, 'q.log'), '{"op":"delete","id":"1"}\n');
  await assert.rejects(EmbeddedVectorIndex.open(dir), /q\.log is an index log of an older Tributary .*tributary ingest q --mode full/);
  rmSync(join(dir, 'q.log'));
  // A JSON checkpoint of the first HNSW index: refused, with how to rebuild the lens.
  writeFileSync(join(dir, 'p.9.state'), JSON.stringify({ version: 1, gen: 0, ids: [] }));
  await assert.rejects(EmbeddedVectorIndex.open(dir), /p\.9\.state is not a checkpoint this Tributary reads .*tributary ingest p --mode full/);
});

test('compaction keeps the content identical and shrinks the log', async (t) => {
  const dir = tempDir();
  const index = await openIndex(t, dir);
  const records = randomRecords(400, 8, 5);
  const live = records.slice(100);
  await index.upsert('p', records);
  await index.upsert('p', records);
  await index.delete('p', records.slice(0, 100).map((r) => r.id));
  // 900 frames for 300 records: not yet (fewer than 1,000 frames).
  const beforeCompaction = statSync(join(dir, 'p.0.log')).size;
  // 1,200 frames for 300 records: compacted into the next generation.
  await index.upsert('p', live);
  assert.ok(!existsSync(join(dir, 'p.0.log')), 'the old generation is gone');
  assert.ok(statSync(join(dir, 'p.1.log')).size < beforeCompaction / 2, 'the log shrank');
  assert.deepEqual(readdirSync(dir).filter((n) => n.endsWith('.tmp')), []);
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
  assert.ok(existsSync(join(data, 'index', 'p.0.log')));
  assert.ok(existsSync(join(data, 'index', 'index.lock')));
});

test('a clean close checkpoints: reopening loads the graph and keyword index and replays nothing', async (t) => {
  const dir = tempDir();
  const first = await openIndex(t, dir, { exactBelow: 0 });
  const records = randomRecords(3000, 16, 8).map((r, i) => ({ ...r, content: i === 2999 ? 'needle in the haystack' : `hay ${i}` }));
  await first.upsert('p', records);
  const query = records[17].vector;
  const before = await first.searchVector('p', query, { limit: 5, minScore: 0 });
  await first.close();
  const names = readdirSync(dir).sort();
  const checkpoint = names.find((n) => n.endsWith('.state'))!;
  assert.deepEqual(names, ['p.0.log', checkpoint.replace('.state', '.hnsw'), checkpoint].sort());
  // Reopening loads the checkpoint: the same answers, the keyword index at once.
  const second = await openIndex(t, dir, { exactBelow: 0 });
  assert.equal(await second.count('p'), 3000);
  assert.deepEqual(await second.searchVector('p', query, { limit: 5, minScore: 0 }), before);
  assert.deepEqual((await second.searchKeyword('p', 'needle', { limit: 1, minScore: 0 })).map((h) => h.id), ['r2999']);
  // Other settings of the graph: rebuilt from the log, same answers.
  await second.close();
  const third = await openIndex(t, dir, { exactBelow: 0, hnsw: { quantization: 'f16' } });
  assert.deepEqual((await third.searchVector('p', query, { limit: 5, minScore: 0 })).map((h) => h.id), before.map((h) => h.id));
});
