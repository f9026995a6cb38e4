import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { startPostgres, databaseName, type TestPostgres } from './helpers/postgres.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';
import { eventually, startTestDaemon, testConfig } from './helpers/daemon.js';
import type { Daemon } from '../src/daemon.js';
import type { LensConfig } from '../src/config/types.js';

let pg: TestPostgres;
let sink: SemilayerServer;

before(async () => {
  [pg, sink] = await Promise.all([startPostgres(), startSemilayerServer()]);
});
after(async () => {
  await sink?.close();
  await pg?.stop();
});

/** A fresh database with `ddl` applied, a daemon streaming it, and helpers. */
async function scenario(
  t: { name: string },
  ddl: string,
  lenses: Record<string, Partial<LensConfig> & { table: string }>,
  extra: Partial<Parameters<typeof testConfig>[0]> = {},
) {
  const name = databaseName(t.name);
  const db = await pg.createDatabase(name);
  await pg.query(db, ddl);
  const config = testConfig({ dbUrl: db, sinkUrl: sink.url, lenses, slot: name, ...extra });
  const daemon = await startTestDaemon(config);
  const sql = (text: string, params?: unknown[]) => pg.query(db, text, params);
  const slot = async () =>
    (await sql(`SELECT confirmed_flush_lsn::text AS lsn, active FROM pg_replication_slots WHERE slot_name = '${name}'`))[0];
  /** Runs `dml` in a transaction; returns an LSN inside it, before its commit record. */
  const insideTransaction = async (dml: string) => {
    const client = new (await import('pg')).default.Client({ connectionString: db });
    await client.connect();
    await client.query('BEGIN');
    await client.query(dml);
    const lsn = (await client.query('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows[0].lsn as string;
    await client.query('COMMIT');
    await client.end();
    return lsn;
  };
  const slotBefore = async (lsn: string) => (await sql(`SELECT confirmed_flush_lsn < '${lsn}'::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = '${name}'`))[0].ok as boolean;
  return { db, daemon, sql, config, slot, insideTransaction, slotBefore };
}

async function stop(daemon: Daemon) {
  assert.equal(await daemon.stop(), 0, 'everything pending was delivered on stop');
}

describe('postgres logical replication to a SemiLayer webhook', () => {
  test('first start requests a full sync, then streams records', async (t) => {
    const s = await scenario(t, `CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'before')`, {
      items_a: { table: 'public.items' },
    });
    await eventually(() => sink.requests.some((r) => r.lens === 'items_a' && r.mode === 'full'), 'the initial full sync');
    await s.sql(`INSERT INTO items VALUES (2, 'after')`);
    await eventually(() => sink.lastAction('items_a').get('2') === 'upsert', 'id 2 delivered');
    assert.equal(sink.lastAction('items_a').has('1'), false, 'a row from before the start arrives through the full sync, not as a record');
    const modes = sink.requests.filter((r) => r.lens === 'items_a').map((r) => r.mode);
    assert.equal(modes[0], 'full');
    await stop(s.daemon);

    // A second start of the same lens resumes: no second full sync.
    const again = await startTestDaemon(s.config);
    await s.sql(`UPDATE items SET name = 'x' WHERE id = 1`);
    await eventually(() => sink.lastAction('items_a').get('1') === 'upsert', 'id 1 update delivered');
    assert.equal(sink.requests.filter((r) => r.lens === 'items_a' && r.mode === 'full').length, 1);
    await stop(again);
  });

  test('state in Postgres: a restart resumes without a second full sync', async (t) => {
    const name = databaseName(t.name);
    const db = await pg.createDatabase(name);
    await pg.query(db, `CREATE TABLE pgstate (id int PRIMARY KEY)`);
    const config = testConfig({ dbUrl: db, sinkUrl: sink.url, slot: name, lenses: { pgstate: { table: 'pgstate' } } });
    config.state = { type: 'postgres', url: db, schema: 'tributary_state' };
    let daemon = await startTestDaemon(config);
    await eventually(() => sink.requests.some((r) => r.lens === 'pgstate' && r.mode === 'full' && r.status === 202), 'the initial full sync');
    await pg.query(db, `INSERT INTO pgstate VALUES (1)`);
    await eventually(() => sink.lastAction('pgstate').get('1') === 'upsert', 'id 1');
    await stop(daemon);
    const saved = await pg.query(db, `SELECT key FROM tributary_state.kv ORDER BY key`);
    assert.deepEqual(saved.map((r) => r.key), ['lens/pgstate', 'position/app', `status/${hostname()}:${process.pid}`]);
    daemon = await startTestDaemon(config);
    await pg.query(db, `INSERT INTO pgstate VALUES (2)`);
    await eventually(() => sink.lastAction('pgstate').get('2') === 'upsert', 'id 2 after the restart');
    assert.equal(sink.requests.filter((r) => r.lens === 'pgstate' && r.mode === 'full').length, 1);
    await stop(daemon);
  });

  test('initialSync: none skips the full sync', async (t) => {
    const s = await scenario(t, `CREATE TABLE quiet (id int PRIMARY KEY)`, { quiet: { table: 'quiet', initialSync: 'none' } });
    await s.sql(`INSERT INTO quiet VALUES (1)`);
    await eventually(() => sink.lastAction('quiet').get('1') === 'upsert', 'id 1');
    assert.equal(sink.requests.filter((r) => r.lens === 'quiet' && r.mode === 'full').length, 0);
    await stop(s.daemon);
  });

  test('coalesces many updates of few rows into one change per id', async (t) => {
    const s = await scenario(t, `CREATE TABLE hot (id int PRIMARY KEY, n int)`, { hot: { table: 'hot', initialSync: 'none', maxWaitMs: 300 } });
    await s.sql(`INSERT INTO hot SELECT g, 0 FROM generate_series(1, 10) g`);
    await s.sql(`DO $$ BEGIN FOR i IN 1..200 LOOP UPDATE hot SET n = n + 1; END LOOP; END $$`);
    await s.sql(`DELETE FROM hot WHERE id = 10`);
    await eventually(() => sink.lastAction('hot').get('10') === 'delete', 'the delete of id 10');
    const batches = sink.requests.filter((r) => r.lens === 'hot' && r.mode === 'records');
    for (const b of batches) {
      const ids = b.changes!.map((c) => c.id);
      assert.equal(new Set(ids).size, ids.length, 'each id appears once in a batch');
    }
    const total = batches.reduce((n, b) => n + b.changes!.length, 0);
    assert.ok(total <= 30, `2,011 row changes became ${total} delivered changes`);
    assert.deepEqual([...sink.lastAction('hot').entries()].sort(), [
      ...Array.from({ length: 9 }, (_, i) => [String(i + 1), 'upsert']),
      ['10', 'delete'],
    ].sort());
    await stop(s.daemon);
  });

  test('the last action wins within a batch and across batches', async (t) => {
    const s = await scenario(t, `CREATE TABLE seq (id int PRIMARY KEY)`, { seq: { table: 'seq', initialSync: 'none' } });
    await s.sql(`BEGIN; INSERT INTO seq VALUES (1); DELETE FROM seq WHERE id = 1; INSERT INTO seq VALUES (2); COMMIT`);
    await eventually(() => sink.lastAction('seq').get('2') === 'upsert', 'first transaction');
    const first = sink.requests.filter((r) => r.lens === 'seq').flatMap((r) => r.changes ?? []);
    assert.deepEqual(first.find((c) => c.id === '1'), { id: '1', action: 'delete' }, 'upsert then delete is delete');
    await s.sql(`INSERT INTO seq VALUES (1)`);
    await eventually(() => sink.lastAction('seq').get('1') === 'upsert', 'delete then upsert across batches is upsert');
    await s.sql(`DELETE FROM seq WHERE id = 1`);
    await eventually(() => sink.lastAction('seq').get('1') === 'delete', 'and the later delete wins again');
    await stop(s.daemon);
  });

  test('composite and text keys are encoded as docs/architecture.md says; key updates delete the old id', async (t) => {
    const s = await scenario(
      t,
      `CREATE TABLE regional (tenant int, region text, flag boolean, PRIMARY KEY (tenant, region, flag));
       CREATE TABLE products (sku text PRIMARY KEY, name text)`,
      { regional: { table: 'regional', initialSync: 'none' }, products: { table: 'products', initialSync: 'none' } },
    );
    await s.sql(`INSERT INTO regional VALUES (7, 'eu', true), (8, 'a"b', false)`);
    await s.sql(`INSERT INTO products VALUES ('p_7712', 'shoe'), ('p_0451', 'sock')`);
    await eventually(() => sink.lastAction('products').size === 2 && sink.lastAction('regional').size === 2, 'inserts');
    assert.deepEqual([...sink.lastAction('regional').keys()].sort(), ['[7,"eu",true]', '[8,"a\\"b",false]']);
    assert.deepEqual([...sink.lastAction('products').keys()].sort(), ['p_0451', 'p_7712']);

    await s.sql(`UPDATE products SET sku = 'p_9999' WHERE sku = 'p_7712'`);
    await s.sql(`UPDATE regional SET region = 'us' WHERE tenant = 7`);
    await eventually(() => sink.lastAction('products').get('p_7712') === 'delete', 'the old sku deleted');
    assert.equal(sink.lastAction('products').get('p_9999'), 'upsert');
    await eventually(() => sink.lastAction('regional').get('[7,"eu",true]') === 'delete', 'the old composite key deleted');
    assert.equal(sink.lastAction('regional').get('[7,"us",true]'), 'upsert');
    await stop(s.daemon);
  });

  test('REPLICA IDENTITY FULL: key updates still delete the old id', async (t) => {
    const s = await scenario(t, `CREATE TABLE full_ident (id int PRIMARY KEY, v text); ALTER TABLE full_ident REPLICA IDENTITY FULL`, {
      full_ident: { table: 'full_ident', initialSync: 'none' },
    });
    await s.sql(`INSERT INTO full_ident VALUES (1, 'a')`);
    await s.sql(`UPDATE full_ident SET v = 'b' WHERE id = 1`);
    await s.sql(`UPDATE full_ident SET id = 2 WHERE id = 1`);
    await eventually(() => sink.lastAction('full_ident').get('1') === 'delete', 'old id deleted');
    assert.equal(sink.lastAction('full_ident').get('2'), 'upsert');
    await stop(s.daemon);
  });

  test('ADD and DROP COLUMN do not stall the stream', async (t) => {
    const s = await scenario(t, `CREATE TABLE evolving (id int PRIMARY KEY, a text)`, { evolving: { table: 'evolving', initialSync: 'none' } });
    await s.sql(`INSERT INTO evolving VALUES (1, 'x')`);
    await s.sql(`ALTER TABLE evolving ADD COLUMN b int; INSERT INTO evolving VALUES (2, 'y', 5)`);
    await s.sql(`ALTER TABLE evolving DROP COLUMN a; INSERT INTO evolving VALUES (3, 6); DELETE FROM evolving WHERE id = 1`);
    await eventually(() => sink.lastAction('evolving').get('3') === 'upsert' && sink.lastAction('evolving').get('1') === 'delete', 'changes after both ALTERs');
    assert.equal(sink.lastAction('evolving').get('2'), 'upsert');
    await stop(s.daemon);
  });

  test('renaming a lens\'s key column puts that lens in error with what to do; the daemon and the other lens go on', async (t) => {
    const s = await scenario(t, `CREATE TABLE renamed (id int PRIMARY KEY, name text); CREATE TABLE steady (id int PRIMARY KEY)`, {
      renamed: { table: 'renamed', initialSync: 'none' },
      steady: { table: 'steady', initialSync: 'none' },
    });
    await s.sql(`INSERT INTO renamed VALUES (1, 'a'); INSERT INTO steady VALUES (1)`);
    await eventually(() => sink.lastAction('renamed').get('1') === 'upsert' && sink.lastAction('steady').get('1') === 'upsert', 'both lenses flowing');
    await s.sql(`ALTER TABLE renamed RENAME COLUMN id TO renamed_id`);
    await s.sql(`INSERT INTO renamed VALUES (2, 'b'); INSERT INTO steady VALUES (2)`);
    await s.sql(`UPDATE renamed SET name = 'c' WHERE renamed_id = 1; INSERT INTO steady VALUES (3)`);
    await eventually(() => sink.lastAction('steady').get('3') === 'upsert', 'the other lens still flowing');
    const status = s.daemon.status().lenses.find((l) => l.lens === 'renamed')!;
    assert.equal(status.state, 'error');
    assert.equal(
      status.lastError,
      'column "id" (the key of lens renamed) is gone from public.renamed (renamed or dropped): set primaryKey on the lens to the new key column(s), ' +
        'restart, then run tributary ingest renamed --mode full',
    );
    assert.equal(sink.lastAction('renamed').get('2'), undefined, 'changes that cannot be keyed are skipped');
    const inside = await s.insideTransaction(`INSERT INTO renamed VALUES (4, 'd'); INSERT INTO steady VALUES (4)`);
    await eventually(async () => !(await s.slotBefore(inside)), 'positions still acknowledged past the unkeyed changes');
    await stop(s.daemon);
  });

  test('TRUNCATE asks the sink for a full sync and says so in status', async (t) => {
    const s = await scenario(t, `CREATE TABLE wiped (id int PRIMARY KEY)`, { wiped: { table: 'wiped', initialSync: 'none' } });
    await s.sql(`INSERT INTO wiped VALUES (1)`);
    await eventually(() => sink.lastAction('wiped').get('1') === 'upsert', 'insert');
    sink.respondWith((req) => (req.lens === 'wiped' && req.mode === 'full' ? { status: 503, body: { error: 'busy' } } : undefined));
    await s.sql(`TRUNCATE wiped`);
    await eventually(() => s.daemon.status().lenses[0].fullSync?.includes('TRUNCATE') ?? false, 'status naming the truncate');
    sink.respondWith(undefined);
    await eventually(() => sink.requests.some((r) => r.lens === 'wiped' && r.mode === 'full' && r.status === 202), 'full sync accepted');
    await eventually(() => s.daemon.status().lenses[0].fullSync === undefined, 'status cleared');
    await stop(s.daemon);
  });

  test('the slot is acknowledged only after delivery, and advances while idle', async (t) => {
    const s = await scenario(
      t,
      `CREATE TABLE acked (id int PRIMARY KEY); CREATE TABLE unrelated (id int)`,
      { acked: { table: 'acked', initialSync: 'none' } },
    );
    sink.respondWith((req) => (req.lens === 'acked' ? { status: 503, body: { error: 'down for maintenance' } } : undefined));
    const inside = await s.insideTransaction(`INSERT INTO acked VALUES (1)`);
    await eventually(() => sink.requests.filter((r) => r.lens === 'acked' && r.status === 503).length >= 3, 'a 5xx storm');
    assert.ok(await s.slotBefore(inside), 'the slot does not confirm the transaction while the sink fails');
    const status = s.daemon.status().lenses[0];
    assert.equal(status.state, 'retrying');
    assert.match(status.lastError ?? '', /503/);
    assert.equal(status.pending, 1);
    sink.respondWith(undefined);
    await eventually(() => sink.lastAction('acked').get('1') === 'upsert', 'delivery after the storm');
    const commitEnd = (await s.sql(`SELECT pg_current_wal_insert_lsn()::text AS lsn`))[0].lsn;
    await eventually(async () => (await s.sql(`SELECT '${(await s.slot()).lsn}'::pg_lsn >= '${commitEnd}'::pg_lsn AS ok`))[0].ok, 'the slot confirming the delivered commit', 20_000);

    // Changes to tables no lens reads still let the slot advance (keepalives while idle).
    await s.sql(`INSERT INTO unrelated SELECT generate_series(1, 1000)`);
    const walEnd = (await s.sql(`SELECT pg_current_wal_insert_lsn()::text AS lsn`))[0].lsn;
    await eventually(async () => (await s.sql(`SELECT '${(await s.slot()).lsn}'::pg_lsn >= '${walEnd}'::pg_lsn AS ok`))[0].ok, 'the idle slot advancing', 30_000);
    await stop(s.daemon);
  });

  test('429 waits for Retry-After; 400 goes to the dead-letter store and the stream goes on', async (t) => {
    const s = await scenario(t, `CREATE TABLE limited (id int PRIMARY KEY)`, { limited: { table: 'limited', initialSync: 'none' } });
    let limitedAt = 0;
    sink.respondWith((req) => {
      if (req.lens !== 'limited') return undefined;
      if (!limitedAt) {
        limitedAt = Date.now();
        return { status: 429, headers: { 'Retry-After': '1' }, body: { error: 'Rate limit exceeded' } };
      }
      if (req.changes?.some((c) => c.id === '13')) return { status: 400, body: { error: 'changes[0].id: unlucky' } };
      return undefined;
    });
    await s.sql(`INSERT INTO limited VALUES (1)`);
    await eventually(() => sink.lastAction('limited').get('1') === 'upsert', 'delivery after the 429');
    const accepted = sink.requests.find((r) => r.lens === 'limited' && r.status === 202)!;
    assert.ok(accepted.receivedAt - limitedAt >= 950, `retried after ${accepted.receivedAt - limitedAt} ms, Retry-After said 1 s`);

    await s.sql(`INSERT INTO limited VALUES (13)`);
    await eventually(() => s.daemon.status().lenses[0].dlq === 1, 'a dead letter');
    await s.sql(`INSERT INTO limited VALUES (14)`);
    await eventually(() => sink.lastAction('limited').get('14') === 'upsert', 'the stream going on');
    sink.respondWith(undefined);
    await stop(s.daemon);
    const { openStateStore } = await import('../src/state/index.js');
    const store = await openStateStore(s.config.state, { readOnly: true });
    const letters = await store.listDeadLetters('limited');
    await store.close();
    assert.equal(letters.length, 1);
    assert.deepEqual(letters[0].provenance.changes, [{ id: '13', action: 'upsert' }]);
    assert.match(letters[0].provenance.response ?? '', /unlucky/);
    assert.match(letters[0].reason, /400/);
  });

  test('401 puts the lens in error with the reason, holds the position, loses nothing', async (t) => {
    const s = await scenario(t, `CREATE TABLE locked (id int PRIMARY KEY)`, { locked: { table: 'locked', initialSync: 'none' } });
    sink.respondWith((req) => (req.lens === 'locked' ? { status: 401, body: { error: 'Missing or invalid API key' } } : undefined));
    const inside = await s.insideTransaction(`INSERT INTO locked VALUES (1), (2)`);
    await eventually(() => s.daemon.status().lenses[0].state === 'error', 'error state');
    const status = s.daemon.status().lenses[0];
    assert.match(status.lastError ?? '', /401/);
    assert.match(status.lastError ?? '', /key/);
    assert.equal(status.pending, 2);
    assert.ok(await s.slotBefore(inside), 'position held');
    sink.respondWith(undefined);
    await eventually(() => sink.lastAction('locked').size === 2, 'delivery once the key works');
    await eventually(() => s.daemon.status().lenses[0].state === 'streaming', 'back to streaming');
    await stop(s.daemon);
  });

  test('one lens failing holds the position for the whole source; the other lens keeps flowing', async (t) => {
    const s = await scenario(t, `CREATE TABLE good (id int PRIMARY KEY); CREATE TABLE bad (id int PRIMARY KEY)`, {
      good: { table: 'good', initialSync: 'none' },
      bad: { table: 'bad', initialSync: 'none' },
    });
    sink.respondWith((req) => (req.lens === 'bad' ? { status: 502, body: { error: 'bad gateway' } } : undefined));
    const inside = await s.insideTransaction(`INSERT INTO bad VALUES (1)`);
    await s.sql(`INSERT INTO good VALUES (1)`);
    await eventually(() => sink.lastAction('good').get('1') === 'upsert', 'the healthy lens delivering');
    await eventually(() => sink.requests.filter((r) => r.lens === 'bad' && r.status === 502).length >= 2, 'the failing lens retrying');
    assert.ok(await s.slotBefore(inside), 'the slot waits for the failing lens');
    sink.respondWith(undefined);
    await eventually(() => sink.lastAction('bad').get('1') === 'upsert', 'the failing lens recovering');
    await eventually(async () => !(await s.slotBefore(inside)), 'the slot moving on');
    await stop(s.daemon);
  });

  test('backpressure: a slow sink pauses the source, memory stays bounded, keepalives keep the connection', async (t) => {
    await pg.query(pg.url(), `ALTER SYSTEM SET wal_sender_timeout = '2s'`);
    await pg.query(pg.url(), `SELECT pg_reload_conf()`);
    t.after(async () => {
      await pg.query(pg.url(), `ALTER SYSTEM RESET wal_sender_timeout`);
      await pg.query(pg.url(), `SELECT pg_reload_conf()`);
    });
    const s = await scenario(t, `CREATE TABLE flood (id int PRIMARY KEY)`, { flood: { table: 'flood', initialSync: 'none', maxBatch: 100 } }, {
      pipeline: { maxPendingChanges: 500 },
    });
    const pid = async () => (await s.sql(`SELECT active_pid FROM pg_replication_slots WHERE slot_name = '${databaseName(t.name)}'`))[0].active_pid;
    const walsender = await pid();
    sink.respondWith((req) => (req.lens === 'flood' ? { status: 503, body: { error: 'overloaded' } } : undefined));
    await s.sql(`INSERT INTO flood SELECT generate_series(1, 20000)`);
    const paused = async () => /tributary_source_paused\{source="app"\} 1/.test(await s.daemon.metrics.registry.metrics());
    await eventually(paused, 'the source paused');
    await new Promise((r) => setTimeout(r, 5000)); // well past wal_sender_timeout
    const pending = s.daemon.status()[`lenses`][0].pending;
    // The limit (500) plus what one socket read already held when the pause came (≤ 64 KiB).
    assert.ok(pending < 3000, `pending changes stay bounded while paused (${pending} of 20,000)`);
    assert.equal(await pid(), walsender, 'the replication connection survived the pause');
    sink.respondWith(undefined);
    await eventually(() => sink.lastAction('flood').size === 20000, 'all 20,000 rows after the sink recovers', 30_000);
    assert.equal(await paused(), false);
    await stop(s.daemon);
  });
});

