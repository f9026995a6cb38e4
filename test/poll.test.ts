/**
 * `capture: poll` against a real Postgres and a loopback SemiLayer server: keyset paging over
 * rows sharing one timestamp, late commits inside the overlap window, restarts from the saved
 * cursor, and the startup checks on the change tracking column.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import pg from 'pg';
import { startPostgres, databaseName, type TestPostgres } from './helpers/postgres.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';
import { eventually, startTestDaemon, testConfig } from './helpers/daemon.js';
import { PAGE_SIZE, timeMinus } from '../connectors/poll/index.js';
import type { LensConfig } from '../src/config/types.js';
import { startDaemon } from '../src/daemon.js';
import { SourceSetupError } from '../src/errors.js';
import { createLogger } from '../src/log.js';

let cluster: TestPostgres;
let sink: SemilayerServer;

before(async () => {
  [cluster, sink] = await Promise.all([startPostgres(), startSemilayerServer()]);
});
after(async () => {
  await sink?.close();
  await cluster?.stop();
});

const TABLE = `CREATE TABLE items (id int PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT now());
               CREATE INDEX ON items (updated_at, id);`;

async function database(t: { name: string }, ddl = TABLE) {
  const db = await cluster.createDatabase(databaseName(t.name));
  await cluster.query(db, ddl);
  return { db, sql: (text: string, params?: unknown[]) => cluster.query(db, text, params) };
}

function pollConfig(db: string, lenses: Record<string, Partial<LensConfig> & { table: string }>, dataDir?: string) {
  const config = testConfig({ dbUrl: db, sinkUrl: sink.url, dataDir, lenses });
  config.sources.app.capture = 'poll';
  return config;
}

const pollLens = (overrides: Partial<LensConfig> = {}) => ({
  table: 'items',
  changeTrackingColumn: 'updated_at',
  syncInterval: '1s',
  syncOverlap: '1s',
  initialSync: 'none' as const,
  ...overrides,
});

/** How many times each id of `lens` was delivered. */
function deliveries(lens: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const c of sink.received(lens)) counts.set(c.id, (counts.get(c.id) ?? 0) + 1);
  return counts;
}

describe('capture: poll', () => {
  test('rows sharing one timestamp are all delivered across pages, and a restart resumes from the saved cursor', async (t) => {
    const { db, sql } = await database(t);
    const shared = 5000;
    assert.ok(shared > PAGE_SIZE * 4, 'the shared timestamp spans several pages');
    await sql(`INSERT INTO items SELECT g, 'n' || g, '2026-01-01 00:00:00+00' FROM generate_series(1, ${shared}) g`);
    await sql(`INSERT INTO items SELECT g, 'n' || g, '2026-01-01 00:00:00+00'::timestamptz + (g - ${shared}) * interval '1 second' FROM generate_series(${shared + 1}, ${shared + 50}) g`);
    const config = pollConfig(db, { poll_shared: pollLens() });
    const daemon = await startTestDaemon(config);
    await eventually(() => sink.lastAction('poll_shared').size === shared + 50, 'every row delivered', 30_000);
    assert.ok([...sink.lastAction('poll_shared').values()].every((a) => a === 'upsert'));
    assert.equal(await daemon.stop(), 0);

    // Restart: only rows past the saved cursor (minus the 1 s overlap) are read again.
    const before = deliveries('poll_shared');
    await sql(`INSERT INTO items VALUES (9001, 'later', '2026-06-01 00:00:00+00')`);
    const again = await startTestDaemon(config);
    await eventually(() => sink.lastAction('poll_shared').has('9001'), 'the row inserted while stopped');
    const after = deliveries('poll_shared');
    for (const id of ['1', String(shared), String(shared + 10)]) assert.equal(after.get(id), before.get(id), `id ${id} was not read again`);
    // The cursor moves once the delivery is acknowledged, a moment after the sink saw the row.
    const cursor = () => again.status().lenses.find((l) => l.lens === 'poll_shared')!.position ?? '';
    await eventually(() => /^2026-0[56]-/.test(cursor()), 'status shows the lens cursor past the new row');
    assert.equal(await again.stop(), 0);
  });

  test('a transaction committing late with an earlier timestamp is delivered inside the overlap window', async (t) => {
    const { db, sql } = await database(t);
    const config = pollConfig(db, {
      late_overlap: pollLens({ syncOverlap: '1m' }),
      late_none: pollLens({ syncOverlap: '0s' }),
    });
    const daemon = await startTestDaemon(config);
    const late = new pg.Client({ connectionString: db });
    await late.connect();
    try {
      // now() is the transaction's start: this row's timestamp is earlier than row 2's.
      await late.query('BEGIN');
      await late.query(`INSERT INTO items (id, name) VALUES (1, 'late')`);
      await sql(`INSERT INTO items (id, name) VALUES (2, 'early')`);
      await eventually(() => sink.lastAction('late_overlap').has('2') && sink.lastAction('late_none').has('2'), 'row 2 polled by both lenses');
      await late.query('COMMIT');
    } finally {
      await late.end();
    }
    await eventually(() => sink.lastAction('late_overlap').has('1'), 'the late row delivered thanks to the overlap');
    // The lens without overlap polls past the late commit and never sees it.
    await sql(`INSERT INTO items (id, name) VALUES (3, 'after')`);
    await eventually(() => sink.lastAction('late_none').has('3'), 'row 3 polled without overlap');
    assert.equal(sink.lastAction('late_none').has('1'), false, 'without overlap the late row is skipped: the overlap is what delivers it');
    assert.equal(await daemon.stop(), 0);
  });

  test('a missing change tracking column stops the start with an error naming the lens and column', async (t) => {
    const { db } = await database(t);
    const config = pollConfig(db, { bad_column: pollLens({ changeTrackingColumn: 'modified_at' }) });
    const daemon = await startDaemon(config, createLogger({ level: 'fatal' }));
    await assert.rejects(daemon.started, (err: Error) => {
      assert.ok(err instanceof SourceSetupError);
      assert.match(err.message, /lens "bad_column".*changeTrackingColumn "modified_at"/);
      return true;
    });
    await daemon.stop();
  });

  test('an unindexed change tracking column logs the index to create and still polls', async (t) => {
    const { db, sql } = await database(t, `CREATE TABLE items (id int PRIMARY KEY, name text, updated_at timestamptz NOT NULL DEFAULT now())`);
    await sql(`INSERT INTO items (id, name) VALUES (1, 'a')`);
    const out = new PassThrough();
    let logs = '';
    out.on('data', (d) => (logs += d));
    const daemon = await startDaemon(pollConfig(db, { no_index: pollLens() }), createLogger({ level: 'warn', destination: out }));
    await daemon.started;
    await eventually(() => sink.lastAction('no_index').has('1'), 'row 1 polled');
    assert.match(logs, /CREATE INDEX CONCURRENTLY \\?"items_updated_at_tributary\\?" ON \\?"public\\?".\\?"items\\?" \(\\?"updated_at\\?", \\?"id\\?"\)/);
    assert.equal(await daemon.stop(), 0);
  });
});

test('timeMinus moves database time text back and keeps its form', () => {
  assert.equal(timeMinus('2026-04-20 14:02:03.25+00', 30_000), '2026-04-20T14:01:33.250Z');
  assert.equal(timeMinus('2026-04-20 14:02:03+02', 1000), '2026-04-20T12:02:02.000Z');
  assert.equal(timeMinus('2026-04-20 14:02:03.123456', 60_000), '2026-04-20 14:01:03.123');
  assert.equal(timeMinus('42', 1000), undefined, 'a numeric cursor gets no overlap');
});
