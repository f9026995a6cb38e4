/**
 * The bundled worker against a real Postgres source, a real embedded index on disk and a
 * loopback OpenAI-compatible embeddings server (or the offline hash embedder).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres, databaseName, freePort, type TestPostgres } from './helpers/postgres.js';
import { startOpenAIServer, openAIError, type OpenAIServer } from './helpers/openai-server.js';
import { startPgvector } from './helpers/pgvector.js';
import { eventually, runCli, spawnCli, startTestDaemon, testConfig } from './helpers/daemon.js';
import { Engine } from '../src/worker/engine.js';
import { QueueFullError, RecordRejectedError } from '../src/errors.js';
import { createEmbedder } from '../src/worker/embedders/index.js';
import { openVectorIndex } from '../src/worker/index/index.js';
import { createPostgresReader } from '../connectors/postgres/reader.js';
import { openStateStore } from '../src/state/index.js';
import { DeadLetters } from '../src/dead-letters.js';
import { createLogger } from '../src/log.js';
import type { LensConfig } from '../src/config/types.js';
import type { Embedder, VectorIndex } from '../src/worker/types.js';
import type { Logger, RowReader, StateStore } from '../src/types.js';

let pg: TestPostgres;
let openai: OpenAIServer;

before(async () => {
  [pg, openai] = await Promise.all([startPostgres(), startOpenAIServer({ dimensions: 64 })]);
});
after(async () => {
  await openai?.close();
  await pg?.stop();
});

const CATALOGUE = `
  CREATE TABLE products (id int PRIMARY KEY, name text, description text, category text, price numeric, updated_at timestamptz DEFAULT now());
  INSERT INTO products (id, name, description, category, price) VALUES
    (1, 'Air Glide 3', 'Lightweight running shoe with responsive foam', 'footwear', 89.99),
    (2, 'Trail Master', 'Rugged trail running shoe with deep lugs', 'footwear', 119.00),
    (3, 'Cast Iron Skillet', 'Pre-seasoned 12 inch cast iron pan for searing', 'kitchen', 39.50),
    (4, 'Chef Knife', 'Eight inch stainless steel chef knife', 'kitchen', 59.00),
    (5, 'Rain Shell', 'Waterproof breathable jacket for hiking in rain', 'outerwear', 140.00),
    (6, 'Down Parka', 'Warm winter parka with goose down fill', 'outerwear', 220.00)`;

const lensConfig = (overrides: Partial<LensConfig> = {}): LensConfig => ({
  source: 'app', table: 'public.products', sink: 'local', fields: ['name', 'description'], metadata: ['id', 'name', 'category', 'price'],
  changeTrackingColumn: 'updated_at', initialSync: 'full', maxBatch: 10000, maxWaitMs: 20, ...overrides,
});

interface Harness {
  db: string;
  engine: Engine;
  index: VectorIndex;
  state: StateStore;
  dir: string;
  close(): Promise<void>;
}

interface HarnessOptions {
  embedder?: 'hash' | 'openai' | Embedder;
  dir?: string;
  db?: string;
  lens?: Partial<LensConfig>;
  readBatch?: number;
  pgvectorUrl?: string;
  /** Wraps the index or the reader the engine sees (to make them fail). */
  wrapIndex?: (index: VectorIndex) => VectorIndex;
  wrapReader?: (reader: RowReader) => RowReader;
  log?: Logger;
}

/** An engine over one lens `products` of a fresh database, with the given embedder. */
async function engineFor(t: { name: string }, options: HarnessOptions = {}): Promise<Harness> {
  const db = options.db ?? (await pg.createDatabase(databaseName(t.name)));
  if (!options.db) await pg.query(db, CATALOGUE);
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'tributary-worker-'));
  const index = await openVectorIndex(
    options.pgvectorUrl
      ? { type: 'pgvector', url: options.pgvectorUrl, schema: 'tributary', path: join(dir, 'index') }
      : { type: 'embedded', path: join(dir, 'index') },
  );
  const state = await openStateStore({ type: 'embedded', path: join(dir, 'state') });
  const lens = lensConfig(options.lens);
  const embedder =
    typeof options.embedder === 'object'
      ? options.embedder
      : options.embedder === 'openai'
      ? createEmbedder({
          type: 'openai', url: openai.url, model: 'test-embed', dimensions: 64, sendDimensions: false, maxInputs: 256,
          maxTokensPerRequest: 250000, maxInputTokens: 8191, overLong: 'reject', concurrency: 2, timeoutMs: 5000, maxRetries: 1,
        })
      : createEmbedder({ type: 'hash', dimensions: 384 });
  const log = options.log ?? createLogger({ level: 'fatal' });
  const deadLetters = new DeadLetters(state, log);
  await deadLetters.load(['products']);
  const engine = new Engine({
    lenses: { products: lens },
    openReader: async () => {
      const reader = await createPostgresReader(db, { lens: 'products', table: lens.table, columns: [...lens.fields, ...lens.metadata], changeTrackingColumn: lens.changeTrackingColumn });
      return options.wrapReader ? options.wrapReader(reader) : reader;
    },
    embedder,
    index: options.wrapIndex ? options.wrapIndex(index) : index,
    state,
    deadLetters,
    queueDir: join(dir, 'queue'),
    maxQueuedChanges: 1000,
    readBatch: options.readBatch,
    log,
  });
  await engine.start();
  return {
    db, engine, index, state, dir,
    async close() {
      await engine.stop(2000);
      await index.close();
      await state.close();
    },
  };
}

async function done(engine: Engine, jobId: string) {
  await eventually(() => ['done', 'failed'].includes(engine.job(jobId)?.status ?? ''), `job ${jobId}`);
  return engine.job(jobId)!;
}

describe('bundled worker engine', () => {
  test('full sync indexes the table; search ranks sensibly; similar uses the stored vector', async (t) => {
    const h = await engineFor(t);
    const { jobId } = await h.engine.submit('products', { mode: 'full' });
    const job = await done(h.engine, jobId);
    assert.equal(job.status, 'done');
    assert.equal(await h.index.count('products'), 6);

    const shoes = await h.engine.search('products', { query: 'running shoe', limit: 3, minScore: 0, mode: 'semantic' });
    assert.deepEqual(shoes.slice(0, 2).map((r) => r.id).sort(), ['1', '2']);
    assert.deepEqual(shoes[0].metadata.category, 'footwear');
    const keyword = await h.engine.search('products', { query: 'cast iron', limit: 5, minScore: 0, mode: 'keyword' });
    assert.equal(keyword[0].id, '3');
    const hybrid = await h.engine.search('products', { query: 'waterproof jacket', limit: 2, minScore: 0, mode: 'hybrid' });
    assert.equal(hybrid[0].id, '5');
    assert.ok(hybrid[0].score <= 1 && hybrid[0].score > 0);
    const strict = await h.engine.search('products', { query: 'running shoe', limit: 10, minScore: 0.99, mode: 'semantic' });
    assert.equal(strict.length, 0, 'minScore filters');

    const calls = h.engine.counters('products').embedCalls;
    const similar = await h.engine.similar('products', { id: '1', limit: 2, minScore: 0 });
    assert.equal(h.engine.counters('products').embedCalls, calls, 'similar makes no embedding call');
    assert.equal(similar![0].id, '2');
    assert.ok(!similar!.some((r) => r.id === '1'), 'the record itself is left out');
    assert.equal(await h.engine.similar('products', { id: '999', limit: 2, minScore: 0 }), undefined);
    await h.close();
  });

  test('records jobs re-read rows: a deleted row leaves the index; a metadata-only update costs no embedding', async (t) => {
    const h = await engineFor(t, { embedder: 'openai' });
    await done(h.engine, (await h.engine.submit('products', { mode: 'full' })).jobId);
    const before = openai.requests.length;
    await pg.query(h.db, `UPDATE products SET price = 1 WHERE id = 1; DELETE FROM products WHERE id = 4`);
    // The actions are hints: the rows' current state decides (4 says upsert but is gone).
    const job = await done(h.engine, (await h.engine.submit('products', { mode: 'records', changes: [{ id: '1', action: 'upsert' }, { id: '4', action: 'upsert' }] })).jobId);
    assert.equal(job.deleted, 1);
    assert.equal(await h.index.get('products', '4'), undefined);
    assert.equal((await h.index.get('products', '1'))!.metadata.price, '1');
    assert.equal(openai.requests.length, before, 'the text did not change: no embedding call');
    assert.ok(h.engine.counters('products').skippedByHash >= 1);
    await pg.query(h.db, `UPDATE products SET description = 'Now with carbon plate' WHERE id = 1`);
    await done(h.engine, (await h.engine.submit('products', { mode: 'records', changes: [{ id: '1', action: 'upsert' }] })).jobId);
    assert.equal(openai.requests.length, before + 1, 'a text change is embedded');
    await h.close();
  });

  test('one poisoned input among 100: 99 indexed, 1 dead-lettered, replayed after the fault is fixed', async (t) => {
    const h = await engineFor(t, { embedder: 'openai' });
    await pg.query(h.db, `INSERT INTO products (id, name, description) SELECT g, 'item ' || g, CASE WHEN g = 57 THEN 'POISON' ELSE 'fine ' || g END FROM generate_series(100, 199) g`);
    openai.failOn((input) => (input.includes('POISON') ? openAIError(400, "This model's maximum context length is 8192 tokens", 'context_length_exceeded') : undefined));
    const ids = Array.from({ length: 100 }, (_, i) => ({ id: String(100 + i), action: 'upsert' as const }));
    await pg.query(h.db, `UPDATE products SET description = 'POISON' WHERE id = 157`);
    const job = await done(h.engine, (await h.engine.submit('products', { mode: 'records', changes: ids })).jobId);
    assert.equal(job.indexed, 99);
    assert.equal(job.deadLettered, 1);
    const letters = await h.state.listDeadLetters('products');
    assert.equal(letters.length, 1);
    assert.deepEqual(letters[0].provenance.changes, [{ id: '157', action: 'upsert' }]);
    assert.equal(letters[0].reason, 'context-length');
    assert.match(letters[0].error, /maximum context length/);
    assert.equal(h.engine.status('products')[0].dlq, 1);

    openai.failOn(undefined);
    assert.equal(await h.engine.replayDeadLetters('products'), 1);
    await eventually(async () => (await h.index.get('products', '157')) !== undefined, 'the replayed item indexed');
    assert.equal((await h.state.listDeadLetters('products')).length, 0);
    assert.equal(h.engine.status('products')[0].dlq, 0);
    await h.close();
  });

  test('a full sync deletes ghosts and keeps live rows', async (t) => {
    const h = await engineFor(t);
    await done(h.engine, (await h.engine.submit('products', { mode: 'full' })).jobId);
    // Rows deleted behind the worker's back (no records job told it).
    await pg.query(h.db, `DELETE FROM products WHERE id IN (2, 6)`);
    const job = await done(h.engine, (await h.engine.submit('products', { mode: 'full' })).jobId);
    assert.equal(job.deleted, 2);
    assert.equal(await h.index.count('products'), 4);
    assert.equal(await h.index.get('products', '2'), undefined);
    assert.ok(await h.index.get('products', '1'));
    await h.close();
  });

  test('incremental syncs page through rows that share a timestamp without skipping any', async (t) => {
    // Pages of 2 rows over 6 rows with one timestamp: a cursor on the timestamp alone would skip 4.
    const h = await engineFor(t, { readBatch: 2 });
    await pg.query(h.db, `UPDATE products SET updated_at = '2026-01-01T00:00:00Z'`);
    const first = await done(h.engine, (await h.engine.submit('products', { mode: 'incremental' })).jobId);
    assert.equal(first.indexed, 6);
    assert.equal(h.engine.status('products')[0].cursor, '2026-01-01 00:00:00+00');
    // A row with the same timestamp and a higher key, and an update: only those two are read.
    await pg.query(h.db, `INSERT INTO products (id, name, description, updated_at) VALUES (7, 'Seven', 'same instant', '2026-01-01T00:00:00Z')`);
    await pg.query(h.db, `UPDATE products SET name = 'Air Glide 4', updated_at = '2026-01-02T00:00:00Z' WHERE id = 1`);
    const job = await done(h.engine, (await h.engine.submit('products', { mode: 'incremental' })).jobId);
    assert.equal(job.indexed, 2, 'the new row and the changed row, not the whole table');
    assert.ok(await h.index.get('products', '7'));
    assert.equal((await h.index.get('products', '1'))!.metadata.name, 'Air Glide 4');
    await h.close();
  });

  test('requests merge while a job is queued (deduplicated), last action per id wins', async (t) => {
    const h = await engineFor(t, { embedder: 'openai' });
    openai.delayMs = 300; // keeps the first job running
    const first = await h.engine.submit('products', { mode: 'records', changes: [{ id: '1', action: 'upsert' }] });
    await eventually(() => h.engine.job(first.jobId)?.status === 'running', 'the first job running');
    const second = await h.engine.submit('products', { mode: 'records', changes: [{ id: '2', action: 'upsert' }, { id: '3', action: 'upsert' }] });
    const third = await h.engine.submit('products', { mode: 'records', changes: [{ id: '3', action: 'delete' }] });
    assert.equal(first.status, 'queued');
    assert.equal(second.status, 'queued');
    assert.equal(third.status, 'deduplicated');
    assert.equal(third.jobId, second.jobId);
    assert.equal(third.changesBuffered, 2);
    openai.delayMs = 0;
    await done(h.engine, second.jobId);
    await h.close();
  });

  test('a failing job is retried until it succeeds: status shows the error meanwhile', async (t) => {
    const h = await engineFor(t);
    t.after(() => h.close());
    await pg.query(h.db, `ALTER TABLE products RENAME TO products_moved`);
    const { jobId } = await h.engine.submit('products', { mode: 'full' });
    await eventually(() => h.engine.status('products')[0].state === 'error', 'the error state');
    assert.match(h.engine.status('products')[0].lastError ?? '', /table public\.products does not exist/);
    assert.equal(h.engine.job(jobId)?.status, 'failed');
    await pg.query(h.db, `ALTER TABLE products_moved RENAME TO products`);
    await eventually(() => h.engine.job(jobId)?.status === 'done', 'the retried job done');
    assert.equal(await h.index.count('products'), 6);
    assert.equal(h.engine.status('products')[0].state, 'idle');
  });

  test('a full queue answers QueueFullError (429) instead of growing without bound', async (t) => {
    const h = await engineFor(t, { embedder: 'openai' });
    openai.delayMs = 300;
    const first = await h.engine.submit('products', { mode: 'records', changes: [{ id: '1', action: 'upsert' }] });
    await eventually(() => h.engine.job(first.jobId)?.status === 'running', 'the first job running');
    const many = Array.from({ length: 1000 }, (_, i) => ({ id: String(1000 + i), action: 'upsert' as const }));
    await h.engine.submit('products', { mode: 'records', changes: many });
    await assert.rejects(h.engine.submit('products', { mode: 'records', changes: [{ id: '5000', action: 'upsert' }] }), QueueFullError);
    openai.delayMs = 0;
    await h.close();
  });

  test('the same pipeline on a pgvector index: full sync, search, ghosts', async (t) => {
    const pgvector = await startPgvector();
    t.after(() => pgvector.stop());
    const h = await engineFor(t, { pgvectorUrl: pgvector.url });
    await done(h.engine, (await h.engine.submit('products', { mode: 'full' })).jobId);
    assert.equal(await h.index.count('products'), 6);
    const hits = await h.engine.search('products', { query: 'cast iron pan', limit: 2, minScore: 0, mode: 'hybrid' });
    assert.equal(hits[0].id, '3');
    await pg.query(h.db, `DELETE FROM products WHERE id = 3`);
    const job = await done(h.engine, (await h.engine.submit('products', { mode: 'full' })).jobId);
    assert.equal(job.deleted, 1);
    assert.equal(await h.index.get('products', '3'), undefined);
    await h.close();
  });

  test('a restart keeps the index and finishes what the journal holds', async (t) => {
    const h = await engineFor(t);
    await done(h.engine, (await h.engine.submit('products', { mode: 'full' })).jobId);
    const hits = await h.engine.search('products', { query: 'chef knife', limit: 3, minScore: 0, mode: 'hybrid' });
    await h.close();
    const again = await engineFor(t, { dir: h.dir, db: h.db });
    assert.equal(await again.index.count('products'), 6);
    assert.deepEqual(await again.engine.search('products', { query: 'chef knife', limit: 3, minScore: 0, mode: 'hybrid' }), hits);
    await again.close();
  });

  test('an incremental sync on an integer changeTrackingColumn starts from the first row', async (t) => {
    const h = await engineFor(t, { lens: { changeTrackingColumn: 'version' }, readBatch: 4 });
    t.after(() => h.close());
    await pg.query(h.db, `ALTER TABLE products ADD COLUMN version bigint; UPDATE products SET version = id * 10`);
    const first = await done(h.engine, (await h.engine.submit('products', { mode: 'incremental' })).jobId);
    assert.equal(first.status, 'done', first.error);
    assert.equal(first.indexed, 6);
    assert.equal(h.engine.status('products')[0].cursor, '60');
    await pg.query(h.db, `UPDATE products SET name = 'Trail Master 2', version = 70 WHERE id = 2`);
    const second = await done(h.engine, (await h.engine.submit('products', { mode: 'incremental' })).jobId);
    assert.equal(second.indexed, 1);
    assert.equal((await h.index.get('products', '2'))!.metadata.name, 'Trail Master 2');
  });

  test('an explicit delete removes the id even though its row still exists (soft delete); an upsert re-reads', async (t) => {
    const h = await engineFor(t);
    t.after(() => h.close());
    await done(h.engine, (await h.engine.submit('products', { mode: 'full' })).jobId);
    await pg.query(h.db, `UPDATE products SET name = 'Skillet XL' WHERE id = 3`);
    const job = await done(h.engine, (await h.engine.submit('products', { mode: 'records', changes: [{ id: '2', action: 'delete' }, { id: '3', action: 'upsert' }] })).jobId);
    assert.equal(job.deleted, 1);
    assert.equal(await h.index.get('products', '2'), undefined, 'the delete wins although row 2 is still there');
    assert.equal((await h.index.get('products', '3'))!.metadata.name, 'Skillet XL');
    assert.equal(await h.index.count('products'), 5);
  });

  test('an embedding API refusing the key, then returning the wrong dimensions, holds the lens in error with no dead letters; everything is indexed once it accepts', async (t) => {
    const h = await engineFor(t, { embedder: 'openai' });
    t.after(async () => {
      openai.failOn(undefined);
      openai.dimensions = 64;
      await h.close();
    });
    openai.failOn(() => openAIError(401, 'Incorrect API key provided', 'invalid_api_key'));
    const { jobId } = await h.engine.submit('products', { mode: 'full' });
    // Between a retry's 401 and its failure being recorded the lens shows `indexing`: wait for the error.
    await eventually(() => openai.requests.filter((r) => r.status === 401).length >= 2 && h.engine.status('products')[0].state === 'error', 'the job retried, the lens in error');
    const held = h.engine.status('products')[0];
    assert.match(held.lastError ?? '', /HTTP 401.*check worker\.embedder\.key/);
    assert.equal(held.dlq, 0);
    assert.equal((await h.state.listDeadLetters('products')).length, 0);
    openai.failOn(undefined);
    await eventually(() => h.engine.job(jobId)?.status === 'done', 'the job done once the key is accepted');
    assert.equal(await h.index.count('products'), 6);
    assert.equal(h.engine.status('products')[0].state, 'idle');

    openai.dimensions = 32;
    await pg.query(h.db, `UPDATE products SET description = description || ' (new)'`);
    const second = await h.engine.submit('products', { mode: 'full' });
    await eventually(() => /set worker\.embedder\.dimensions to 32/.test(h.engine.status('products')[0].lastError ?? ''), 'the dimensions error in status');
    assert.equal(h.engine.status('products')[0].dlq, 0);
    openai.dimensions = 64;
    await eventually(() => h.engine.job(second.jobId)?.status === 'done', 'the second job done');
    assert.equal((await h.state.listDeadLetters('products')).length, 0);
    assert.match((await h.index.get('products', '1'))!.content, /\(new\)/);
  });

  test('stop() returns within its bound while a full sync waits on a slow embedding API; the sync finishes after a restart', async (t) => {
    const h = await engineFor(t, { embedder: 'openai', readBatch: 2 });
    t.after(() => (openai.delayMs = 0));
    openai.delayMs = 3000;
    const { jobId } = await h.engine.submit('products', { mode: 'full' });
    await eventually(() => openai.inFlight > 0, 'an embedding request in flight');
    const started = performance.now();
    await h.engine.stop(1000);
    assert.ok(performance.now() - started < 1000, `stop took ${Math.round(performance.now() - started)} ms`);
    await h.close();
    openai.delayMs = 0;
    const again = await engineFor(t, { embedder: 'openai', dir: h.dir, db: h.db, readBatch: 2 });
    t.after(() => again.close());
    const job = await done(again.engine, jobId);
    assert.equal(job.status, 'done');
    assert.equal(await again.index.count('products'), 6);
  });

  test('stop() returns after its timeout even when a step hangs and ignores the abort', async (t) => {
    let called = false;
    const hanging: Embedder = { id: 'hang', dimensions: 8, tokensUsed: 0, embed: () => ((called = true), new Promise(() => {})) };
    const h = await engineFor(t, { embedder: hanging });
    await h.engine.submit('products', { mode: 'full' });
    await eventually(() => called, 'the embedder called');
    const started = performance.now();
    await h.engine.stop(300);
    const took = performance.now() - started;
    assert.ok(took >= 250 && took < 1000, `stop took ${Math.round(took)} ms`);
    await h.close();
  });

  test('a failing index count is logged once, shown in status once it persists, and cleared when it works again', async (t) => {
    const logged: Array<{ level: string; msg?: string }> = [];
    const log: Logger = {
      debug: () => {},
      info: (_, msg) => logged.push({ level: 'info', msg }),
      warn: (_, msg) => logged.push({ level: 'warn', msg }),
      error: (_, msg) => logged.push({ level: 'error', msg }),
      child: () => log,
    };
    let failing = true;
    const wrapIndex = (index: VectorIndex) =>
      new Proxy(index, {
        get(target, prop) {
          if (prop === 'count' && failing) return async () => Promise.reject(new Error('disk on fire'));
          const value = Reflect.get(target, prop, target);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      });
    const h = await engineFor(t, { wrapIndex, log });
    t.after(() => h.close());
    await h.engine.refresh();
    assert.equal(h.engine.status('products')[0].lastError, undefined, 'one failure is not yet persistent');
    await h.engine.refresh();
    await h.engine.refresh();
    assert.match(h.engine.status('products')[0].lastError ?? '', /cannot count the indexed records.*disk on fire/);
    assert.equal(logged.filter((l) => l.level === 'warn').length, 1, 'logged once, not once a second');
    failing = false;
    await h.engine.refresh();
    assert.equal(h.engine.status('products')[0].lastError, undefined);
    assert.equal(logged.filter((l) => l.level === 'info').length, 1, 'the recovery is logged');
  });

  for (const kind of ['pgvector', 'embedded'] as const) {
    test(`a record with a NUL character: ${kind === 'pgvector' ? 'pgvector refuses it, it alone is dead-lettered' : 'the embedded index stores it'}; the rest are indexed`, async (t) => {
      const pgvector = kind === 'pgvector' ? await startPgvector() : undefined;
      const h = await engineFor(t, { pgvectorUrl: pgvector?.url, lens: { fields: ['name', 'description', 'note'] } });
      t.after(async () => {
        await h.close();
        await pgvector?.stop();
      });
      // Postgres text cannot hold NUL, but a json string can carry one (as \u0000).
      await pg.query(h.db, `ALTER TABLE products ADD COLUMN note json; UPDATE products SET note = '"bad\\u0000note"' WHERE id = 4`);
      const job = await done(h.engine, (await h.engine.submit('products', { mode: 'full' })).jobId);
      assert.equal(job.status, 'done', job.error);
      const letters = await h.state.listDeadLetters('products');
      if (kind === 'embedded') {
        assert.equal(letters.length, 0);
        assert.equal(await h.index.count('products'), 6);
        assert.match((await h.index.get('products', '4'))!.content, /bad\u0000note/);
        return;
      }
      assert.equal(job.indexed, 5);
      assert.equal(job.deadLettered, 1);
      assert.equal(letters.length, 1);
      assert.equal(letters[0].reason, 'index-rejected');
      assert.deepEqual(letters[0].provenance.changes, [{ id: '4', action: 'upsert' }]);
      assert.match(letters[0].error, /its content holds a NUL character/);
      assert.equal(await h.index.count('products'), 5);
      assert.equal(h.engine.status('products')[0].state, 'idle');
    });
  }

  test('a read refused for one id dead-letters that id alone; any other read failure holds the lens in error, without dead letters', async (t) => {
    let reads = 0;
    let broken = true;
    const wrapReader = (reader: RowReader): RowReader => ({
      ...reader,
      readByIds: async (ids) => {
        reads++;
        if (ids.includes('5')) throw new RecordRejectedError('lens "products": invalid input syntax for type integer');
        if (broken && ids.includes('6')) throw new TypeError('cannot read properties of undefined');
        return reader.readByIds(ids);
      },
    });
    const h = await engineFor(t, { wrapReader });
    t.after(() => h.close());
    const rejected = await done(h.engine, (await h.engine.submit('products', { mode: 'records', changes: [{ id: '5', action: 'upsert' }, { id: '1', action: 'upsert' }] })).jobId);
    assert.equal(rejected.status, 'done');
    const letters = await h.state.listDeadLetters('products');
    assert.deepEqual(letters.map((l) => [l.provenance.changes, l.attempts, l.reason]), [[[{ id: '5', action: 'upsert' }], 1, 'source-read']]);
    assert.ok(await h.index.get('products', '1'), 'the other id of the batch is indexed');

    reads = 0;
    const { jobId } = await h.engine.submit('products', { mode: 'records', changes: [{ id: '6', action: 'upsert' }] });
    await eventually(() => h.engine.status('products')[0].state === 'error', 'the lens in error');
    assert.match(h.engine.status('products')[0].lastError ?? '', /cannot read properties of undefined/);
    assert.equal(reads, 1, 'a programmer error is not retried within the job');
    assert.equal((await h.state.listDeadLetters('products')).length, 1, 'and dead-letters nothing');
    broken = false;
    await eventually(() => h.engine.job(jobId)?.status === 'done', 'the job runs again and succeeds once the read works', 20_000);
    assert.ok(await h.index.get('products', '6'));
  });
});

describe('bundled worker end to end', () => {
  test('a Postgres commit becomes a search hit through the HTTP API', async (t) => {
    const name = databaseName(t.name);
    const db = await pg.createDatabase(name);
    await pg.query(db, CATALOGUE);
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'tributary-e2e-'));
    const config = testConfig({ dbUrl: db, sinkUrl: 'http://127.0.0.1:1', slot: name, lenses: { products: { table: 'products' } }, dataDir: join(dir, 'state') });
    config.sinks = { local: { type: 'worker' } };
    config.lenses.products = lensConfig();
    config.worker = {
      listen: `127.0.0.1:${port}`,
      embedder: { type: 'hash', dimensions: 384 },
      index: { type: 'embedded', path: join(dir, 'index') },
      keys: [{ key: 'ik_ingest_key', scope: 'ingest' }, { key: 'sk_search_key', scope: 'search' }],
      maxQueuedChanges: 100000,
      readBatch: 500,
    };
    const daemon = await startTestDaemon(config);
    const api = (path: string, key: string, body: unknown) =>
      fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const search = async (query: string) => (await (await api('/v1/search/products', 'sk_search_key', { query, limit: 3 })).json()) as any;

    await eventually(async () => (await search('skillet')).results?.[0]?.sourceRowId === '3', 'the initial full sync searchable');
    await pg.query(db, `INSERT INTO products (id, name, description, category, price) VALUES (42, 'Espresso Grinder', 'Conical burr grinder for espresso', 'kitchen', 249)`);
    await eventually(async () => (await search('burr grinder espresso')).results?.[0]?.sourceRowId === '42', 'the new row searchable');
    const body = await search('burr grinder espresso');
    assert.deepEqual(Object.keys(body.results[0]).sort(), ['content', 'id', 'metadata', 'score', 'sourceRowId']);
    assert.deepEqual(body.results[0].metadata, { id: 42, name: 'Espresso Grinder', category: 'kitchen', price: '249' });
    assert.equal(body.meta.lens, 'products');
    assert.equal(body.meta.mode, 'semantic');
    assert.equal(body.meta.count, body.results.length);

    await pg.query(db, `DELETE FROM products WHERE id = 42`);
    await eventually(async () => !(await search('burr grinder espresso')).results.some((r: any) => r.sourceRowId === '42'), 'the deleted row gone from search');

    assert.equal((await api('/v1/search/products', 'ik_ingest_key', { query: 'x' })).status, 403, 'an ingest key cannot search');
    assert.equal((await api('/v1/ingest/products', 'sk_search_key', { mode: 'full' })).status, 403, 'a search key cannot ingest');
    const ingest = await api('/v1/ingest/products', 'ik_ingest_key', { mode: 'records', changes: [{ id: '1', action: 'upsert' }] });
    assert.equal(ingest.status, 202);
    assert.equal((await api('/v1/ingest/nope', 'ik_ingest_key', { mode: 'full' })).status, 404);
    assert.equal(await daemon.stop(), 0);
  });

  test('dead letters through the CLI: list, replay after the fault is fixed; worker metrics', async (t) => {
    const name = databaseName(t.name);
    const db = await pg.createDatabase(name);
    await pg.query(db, CATALOGUE);
    const [apiPort, metricsPort] = [await freePort(), await freePort()];
    const dir = mkdtempSync(join(tmpdir(), 'tributary-dlq-'));
    const file = join(dir, 'tributary.yaml');
    writeFileSync(file, `
sources:
  app: { type: postgres, url: "${db}", slot: ${name}, publication: ${name} }
lenses:
  products: { source: app, table: products, sink: local, fields: [name, description], metadata: [id, name], maxWaitMs: 10 }
sinks:
  local: { type: worker }
worker:
  listen: 127.0.0.1:${apiPort}
  embedder: { type: openai, url: "${openai.url}", model: test-embed, dimensions: 64, maxRetries: 0 }
  keys: [{ key: ik_admin_key_1, scope: admin }]
state: { type: embedded, path: ./state }
metrics: { listen: "127.0.0.1:${metricsPort}" }
`);
    openai.failOn((input) => (input.includes('POISON') ? openAIError(400, 'Invalid input: poisoned', 'invalid_input') : undefined));
    const daemon = spawnCli(['run', '--config', file]);
    t.after(() => {
      openai.failOn(undefined);
      daemon.child.kill('SIGKILL');
    });
    const metrics = async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`).catch(() => undefined))?.text();
    await eventually(async () => /tributary_worker_indexed_records\{lens="products"\} 6/.test((await metrics()) ?? ''), 'the initial full sync indexed', 20_000);
    assert.match((await metrics()) ?? '', /tributary_worker_written_records_total\{lens="products"\} 6\n/);
    await pg.query(db, `INSERT INTO products (id, name, description) VALUES (50, 'Bad', 'POISON pill')`);
    await eventually(async () => /tributary_worker_dead_letters\{lens="products"\} 1/.test((await metrics()) ?? ''), 'a dead letter', 20_000);

    const list = await runCli(['dlq', 'list', '--config', file]);
    assert.equal(list.code, 0, list.output);
    assert.match(list.output, /^dl_\S+ {2}products {2}embedding-input {2}attempts=1 {2}last=\S+ {2}ids=50 {2}error=".*poisoned.*"$/m);

    openai.failOn(undefined);
    const replay = await runCli(['dlq', 'replay', '--config', file, '--lens', 'products']);
    assert.equal(replay.code, 0, replay.output);
    assert.match(replay.output, /queued 1 change\(s\) of lens products again/);
    await eventually(async () => /tributary_worker_indexed_records\{lens="products"\} 7/.test((await metrics()) ?? ''), 'the replayed row indexed', 20_000);
    assert.match((await runCli(['dlq', 'list', '--config', file])).output, /the dead-letter queue is empty/);

    // A metadata-only update: no embedding call, a hash skip.
    const text = (await metrics())!;
    const calls = Number(/tributary_worker_embedding_calls_total\{lens="products"\} (\d+)/.exec(text)![1]);
    await pg.query(db, `UPDATE products SET category = 'shoes' WHERE id = 1`);
    await eventually(async () => /tributary_worker_hash_skips_total\{lens="products"\} [1-9]/.test((await metrics()) ?? ''), 'a hash skip', 20_000);
    const after = (await metrics())!;
    assert.equal(Number(/tributary_worker_embedding_calls_total\{lens="products"\} (\d+)/.exec(after)![1]), calls);
    assert.match(after, /tributary_worker_freshness_seconds_count\{lens="products"\} [1-9]/);
    assert.match(after, /tributary_worker_embed_seconds_count\{lens="products"\} [1-9]/);
    assert.match(after, /tributary_worker_tokens_total\{lens="products"\} [1-9]/);
    // Every record went into the HNSW graph once writes paused.
    await eventually(async () => /tributary_worker_graph_backlog\{lens="products"\} 0\n/.test((await metrics()) ?? ''), 'an empty graph backlog', 20_000);
    daemon.child.kill('SIGTERM');
    assert.equal(await daemon.exited, 0);
  });
});

