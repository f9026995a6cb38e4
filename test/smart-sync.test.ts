/**
 * Smart sync sweeps against a real Postgres and a loopback SemiLayer server: ghost ids (rows
 * deleted where no CDC sees it) become deletes, live rows are left alone, changed rows are
 * upserted again, and the snapshot survives a restart, with either state store.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startPostgres, databaseName, type TestPostgres } from './helpers/postgres.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';
import { eventually, runCli, startTestDaemon, testConfig } from './helpers/daemon.js';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Daemon } from '../src/daemon.js';
import { bucketOf } from '../src/sweep.js';
import { SNAPSHOT_BUCKETS } from '../src/types.js';

let cluster: TestPostgres;
let sink: SemilayerServer;

before(async () => {
  [cluster, sink] = await Promise.all([startPostgres(), startSemilayerServer()]);
});
after(async () => {
  await sink?.close();
  await cluster?.stop();
});

const ROWS = 300;

/** A polled table of ROWS rows whose lens sweeps every second; polling itself runs once an hour. */
async function scenario(lens: string, state: 'embedded' | 'postgres') {
  const db = await cluster.createDatabase(databaseName(lens));
  const sql = (text: string) => cluster.query(db, text);
  await sql(`CREATE TABLE items (id int PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(1, ${ROWS}) g`);
  const config = testConfig({
    dbUrl: db,
    sinkUrl: sink.url,
    lenses: { [lens]: { table: 'items', fields: ['name'], changeTrackingColumn: 'updated_at', syncInterval: '1h', smartSyncInterval: '1s', initialSync: 'none' } },
  });
  config.sources.app.capture = 'poll';
  if (state === 'postgres') config.state = { type: 'postgres', url: db, schema: 'tributary_state' };
  return { sql, config };
}

const sweeps = (daemon: Daemon, lens: string) => daemon.status().lenses.find((l) => l.lens === lens)!.sweep!;

/** Waits for a sweep that started after now to complete. */
async function nextSweep(daemon: Daemon, lens: string): Promise<void> {
  const done = sweeps(daemon, lens).completed;
  await eventually(() => sweeps(daemon, lens).completed >= done + 2, 'a whole sweep after this point', 30_000);
}

for (const state of ['embedded', 'postgres'] as const) {
  describe(`smart sync with the ${state} state store`, () => {
    test('deletes ghost ids, upserts changed rows and leaves live ones alone, across a restart', async () => {
      const lens = `sweep_${state}`;
      const { sql, config } = await scenario(lens, state);
      const daemon = await startTestDaemon(config);
      await eventually(() => sweeps(daemon, lens).completed >= 1, 'the first sweep', 30_000);
      assert.equal(sink.lastAction(lens).size, ROWS, 'every row upserted');

      // Ghosts: deleted without any CDC; id 40 changes; everything else stays.
      const mark = sink.received(lens).length;
      await sql(`DELETE FROM items WHERE id IN (10, 20, 30); UPDATE items SET name = 'changed' WHERE id = 40`);
      await nextSweep(daemon, lens);
      const since = sink.received(lens).slice(mark);
      assert.deepEqual(since.filter((c) => c.action === 'delete').map((c) => c.id).sort(), ['10', '20', '30']);
      assert.deepEqual([...new Set(since.filter((c) => c.action === 'upsert').map((c) => c.id))], ['40'], 'only the changed row is upserted again');
      const progress = sweeps(daemon, lens);
      assert.equal(progress.rows, ROWS - 3);
      assert.equal(await daemon.stop(), 0);

      // Deleted while no daemon runs: the next daemon's sweep compares with the saved snapshot.
      await sql(`DELETE FROM items WHERE id = 77`);
      const mark2 = sink.received(lens).length;
      const again = await startTestDaemon(config);
      await eventually(() => sink.lastAction(lens).get('77') === 'delete', 'id 77 deleted by the first sweep after the restart', 30_000);
      await nextSweep(again, lens);
      const since2 = sink.received(lens).slice(mark2);
      assert.deepEqual(since2.filter((c) => c.action === 'delete').map((c) => c.id), ['77'], 'no live id is ever deleted');
      for (const [id, action] of sink.lastAction(lens)) {
        assert.equal(action, ['10', '20', '30', '77'].includes(id) ? 'delete' : 'upsert', `id ${id}`);
      }
      assert.equal(await again.stop(), 0);
    });
  });
}

test('a row polled after one sweep and deleted before the next is deleted by the next sweep, also across a restart', async () => {
  const lens = 'sweep_journal';
  const { sql, config } = await scenario(lens, 'embedded');
  Object.assign(config.lenses[lens], { syncInterval: '1s', smartSyncInterval: '1h' });
  // The CLI forces sweeps (`ingest --mode full`) through the same state directory.
  const file = join(mkdtempSync(join(tmpdir(), 'tributary-journal-')), 'tributary.yaml');
  const path = (config.state as { path: string }).path;
  writeFileSync(
    file,
    `sources: { app: { type: postgres, url: "${config.sources.app.url}", capture: poll } }
lenses: { ${lens}: { source: app, table: items, changeTrackingColumn: updated_at, syncInterval: 1s, sink: hosted } }
sinks: { hosted: { type: semilayer, url: "${sink.url}", key: ik_test } }
state: { type: embedded, path: "${path}" }
`,
  );
  const forceSweep = async (daemon: Daemon) => {
    const done = sweeps(daemon, lens).completed;
    const forced = await runCli(['ingest', lens, '--mode', 'full', '--config', file]);
    assert.equal(forced.code, 0, forced.output);
    await eventually(() => sweeps(daemon, lens).completed > done, 'the forced sweep', 30_000);
  };

  const daemon = await startTestDaemon(config);
  await eventually(() => sweeps(daemon, lens).completed >= 1, 'the first sweep', 30_000);
  await sql(`INSERT INTO items (id, name) VALUES (1001, 'polled')`);
  await eventually(() => sink.lastAction(lens).get('1001') === 'upsert', 'row 1001 polled');
  await sql(`DELETE FROM items WHERE id = 1001`);
  await forceSweep(daemon);
  assert.equal(sink.lastAction(lens).get('1001'), 'delete', 'the journaled id is gone from the table: deleted');

  // The journal is written on stop: an id polled before a restart is checked after it.
  await sql(`INSERT INTO items (id, name) VALUES (1002, 'polled')`);
  await eventually(() => sink.lastAction(lens).get('1002') === 'upsert', 'row 1002 polled');
  assert.equal(await daemon.stop(), 0);
  await sql(`DELETE FROM items WHERE id = 1002`);
  const again = await startTestDaemon(config);
  await forceSweep(again);
  assert.equal(sink.lastAction(lens).get('1002'), 'delete');
  const deletes = sink.received(lens).filter((c) => c.action === 'delete').map((c) => c.id).sort();
  assert.deepEqual(deletes, ['1001', '1002'], 'no live id is deleted');
  assert.equal(await again.stop(), 0);
});

test('ids spread over every snapshot bucket', () => {
  const counts = new Array<number>(SNAPSHOT_BUCKETS).fill(0);
  for (let i = 0; i < SNAPSHOT_BUCKETS * 100; i++) counts[bucketOf(String(i))]++;
  assert.ok(Math.min(...counts) > 50 && Math.max(...counts) < 150, `bucket sizes ${Math.min(...counts)}..${Math.max(...counts)}`);
});
