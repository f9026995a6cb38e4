/** Crashes, restarts and shutdowns of the real daemon process: nothing committed is lost. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { startPostgres, databaseName, freePort, type TestPostgres } from './helpers/postgres.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';
import { eventually, killChildren, spawnDaemon, type ChildDaemon } from './helpers/daemon.js';

let pgServer: TestPostgres;
let sink: SemilayerServer;

before(async () => {
  [pgServer, sink] = await Promise.all([startPostgres(), startSemilayerServer()]);
});
after(async () => {
  killChildren();
  await sink?.close();
  await pgServer?.stop();
});

async function setUp(t: { name: string }, lensOptions = 'maxWaitMs: 20') {
  const name = databaseName(t.name);
  const db = await pgServer.createDatabase(name);
  await pgServer.query(db, `CREATE TABLE items (id int PRIMARY KEY, v int)`);
  const state = mkdtempSync(join(tmpdir(), 'tributary-crash-'));
  const lens = `${name}_items`;
  const yaml = `
sources:
  app: { type: postgres, url: "${db}", slot: ${name}, publication: ${name} }
lenses:
  ${lens}: { source: app, table: items, sink: hosted, initialSync: none, ${lensOptions} }
sinks:
  hosted: { type: semilayer, url: "${sink.url}", key: ik_test }
state: { type: embedded, path: "${state}" }
metrics: false
pipeline: { errorRetryMs: 300, drainTimeoutMs: 10000 }
log: { level: ${process.env.TRIBUTARY_TEST_LOG ?? 'info'} }
`;
  const slotLsn = async () =>
    (await pgServer.query(db, `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = '${name}'`))[0]?.lsn as
      | string
      | undefined;
  const lsnAtLeast = async (a: string, b: string) => (await pgServer.query(db, `SELECT '${a}'::pg_lsn >= '${b}'::pg_lsn AS ok`))[0].ok as boolean;
  return { db, yaml, lens, slotLsn, lsnAtLeast };
}

async function waitStreaming(d: ChildDaemon, slotLsn: () => Promise<string | undefined>) {
  await eventually(async () => (await slotLsn()) !== undefined && /streaming/.test(d.output()), 'the daemon streaming', 20_000);
}

describe('crash safety', () => {
  test('kill -9 mid-stream and restart: every committed change arrives, the final state per id is right', async (t) => {
    const s = await setUp(t);
    // A slow sink keeps batches in flight and unacknowledged when the kill lands.
    sink.respondWith(async (req) => (req.lens === s.lens ? (await sleep(30), undefined) : undefined));
    let daemon = spawnDaemon(s.yaml);
    await eventually(async () => (await s.slotLsn()) !== undefined, 'the slot', 20_000);

    const client = new pg.Client({ connectionString: s.db });
    await client.connect();
    const touched = new Set<string>();
    let killed = false;
    for (let txn = 0; txn < 300; txn++) {
      await client.query('BEGIN');
      for (let k = 0; k < 5; k++) {
        const id = Math.floor(Math.random() * 200);
        const result =
          Math.random() < 0.25
            ? await client.query('DELETE FROM items WHERE id = $1', [id])
            : await client.query('INSERT INTO items VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = items.v + 1', [id, txn]);
        if (result.rowCount) touched.add(String(id)); // deleting a missing row changes nothing
      }
      await client.query('COMMIT');
      if (txn === 120) {
        await eventually(() => sink.received(s.lens).length > 0, 'some deliveries before the kill');
        daemon.child.kill('SIGKILL');
        await daemon.exited;
        killed = true;
      }
      if (txn === 200) daemon = spawnDaemon(s.yaml);
    }
    assert.ok(killed);
    const rows = await client.query('SELECT id::text AS id FROM items');
    await client.end();
    const live = new Set(rows.rows.map((r) => r.id as string));
    const expected = new Map([...touched].map((id) => [id, live.has(id) ? 'upsert' : 'delete']));
    const wrong = () => {
      const last = sink.lastAction(s.lens);
      return [...expected].filter(([id, action]) => last.get(id) !== action).map(([id, action]) => `${id}: want ${action}, got ${last.get(id)}`);
    };
    await eventually(() => wrong().length === 0, 'the final state of every touched id', 30_000).catch((err) => {
      throw new Error(`${err.message}: ${wrong().join('; ')}\n${daemon.output().slice(-3000)}`);
    });
    daemon.child.kill('SIGTERM');
    assert.equal(await daemon.exited, 0);
    sink.respondWith(undefined);
  });

  test('two concurrent transactions around an acknowledgement, then a crash: the second is not lost', async (t) => {
    // maxBatch 1: the first transaction's change is delivered and acknowledged on its own.
    const s = await setUp(t, 'maxWaitMs: 0, maxBatch: 1');
    sink.respondWith((req) => (req.lens === s.lens && req.changes?.some((c) => c.id === '2') ? { status: 503, body: { error: 'down' } } : undefined));
    const daemon = spawnDaemon(s.yaml);
    await waitStreaming(daemon, s.slotLsn);

    const c1 = new pg.Client({ connectionString: s.db });
    const c2 = new pg.Client({ connectionString: s.db });
    await Promise.all([c1.connect(), c2.connect()]);
    await c1.query('BEGIN');
    await c2.query('BEGIN');
    await c1.query('INSERT INTO items VALUES (1, 1)');
    await c2.query('INSERT INTO items VALUES (2, 2)');
    // Back-to-back commits, in this order: the second commit record starts where the first one
    // ends (nothing else writes WAL on this cluster in between).
    await c1.query('COMMIT');
    await c2.query('COMMIT');
    const end = (await c1.query('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows[0].lsn as string;
    await Promise.all([c1.end(), c2.end()]);

    await eventually(() => sink.lastAction(s.lens).get('1') === 'upsert', 'the first transaction delivered');
    await eventually(() => sink.requests.filter((r) => r.lens === s.lens && r.status === 503).length >= 2, 'the second one failing');
    const before = await s.slotLsn();
    assert.ok(!(await s.lsnAtLeast(before!, end)), `the slot (${before}) must not confirm the undelivered transaction (ends ${end})`);
    daemon.child.kill('SIGKILL');
    await daemon.exited;

    sink.respondWith(undefined);
    const restarted = spawnDaemon(s.yaml);
    await eventually(() => sink.lastAction(s.lens).get('2') === 'upsert', 'the second transaction after the restart', 20_000);
    restarted.child.kill('SIGTERM');
    assert.equal(await restarted.exited, 0);
  });

  test('SIGTERM drains pending batches, acknowledges them and exits 0', async (t) => {
    const s = await setUp(t, 'maxWaitMs: 50, maxBatch: 10');
    sink.respondWith(async (req) => (req.lens === s.lens ? (await sleep(100), undefined) : undefined));
    const daemon = spawnDaemon(s.yaml);
    await waitStreaming(daemon, s.slotLsn);
    await pgServer.query(s.db, `INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g`);
    const end = (await pgServer.query(s.db, `SELECT pg_current_wal_insert_lsn()::text AS lsn`))[0].lsn as string;
    await eventually(() => sink.received(s.lens).length > 0, 'the first batch');
    daemon.child.kill('SIGTERM');
    assert.equal(await daemon.exited, 0, daemon.output());
    sink.respondWith(undefined);
    assert.equal(sink.lastAction(s.lens).size, 100, 'all 100 rows delivered before exit');
    assert.match(daemon.output(), /drained/);
    await eventually(async () => s.lsnAtLeast((await s.slotLsn())!, end), 'the slot confirming the drained changes', 5000);
  });

  test('kill -9 with the bundled worker as the sink: after a restart the index matches the table', async (t) => {
    const name = databaseName(t.name);
    const db = await pgServer.createDatabase(name);
    await pgServer.query(db, `CREATE TABLE notes (id int PRIMARY KEY, body text)`);
    const dir = mkdtempSync(join(tmpdir(), 'tributary-crash-worker-'));
    const port = await freePort();
    const yaml = `
sources:
  app: { type: postgres, url: "${db}", slot: ${name}, publication: ${name} }
lenses:
  notes: { source: app, table: notes, sink: local, fields: [body], initialSync: none, maxWaitMs: 20 }
sinks:
  local: { type: worker }
worker:
  listen: 127.0.0.1:${port}
  index: { type: embedded, path: "${dir}/index" }
state: { type: embedded, path: "${dir}/state" }
metrics: false
`;
    let daemon = spawnDaemon(yaml);
    const client = new pg.Client({ connectionString: db });
    await client.connect();
    await eventually(async () => (await client.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = $1`, [name])).rowCount === 1, 'the slot', 20_000);
    for (let txn = 0; txn < 200; txn++) {
      const id = Math.floor(Math.random() * 100);
      if (Math.random() < 0.3) await client.query('DELETE FROM notes WHERE id = $1', [id]);
      else await client.query('INSERT INTO notes VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET body = $2', [id, `note ${txn}`]);
      if (txn === 80) {
        daemon.child.kill('SIGKILL');
        await daemon.exited;
      }
      if (txn === 140) daemon = spawnDaemon(yaml);
    }
    const rows = new Map((await client.query('SELECT id::text AS id, body FROM notes')).rows.map((r) => [r.id as string, r.body as string]));
    const end = (await client.query('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows[0].lsn as string;
    // Caught up: the slot confirms every commit (all delivered to the worker's queue) and the worker is idle.
    await eventually(async () => {
      const slot = await client.query(`SELECT confirmed_flush_lsn >= $2::pg_lsn AS ok FROM pg_replication_slots WHERE slot_name = $1`, [name, end]);
      const status = (await (await fetch(`http://127.0.0.1:${port}/v1/status/notes`).catch(() => undefined))?.json().catch(() => undefined)) as
        | { state: string; pending: number }
        | undefined;
      return slot.rows[0]?.ok === true && status?.state === 'idle' && status.pending === 0;
    }, 'the restarted daemon caught up', 30_000);
    await client.end();
    const { EmbeddedVectorIndex } = await import('../src/worker/index/embedded.js');
    const indexed = async () => {
      daemon.child.kill('SIGTERM');
      assert.equal(await daemon.exited, 0);
      const index = await EmbeddedVectorIndex.open(join(dir, 'index', 'index'));
      const ids = await index.idsAfter('notes', undefined, 1000);
      const contents = new Map(await Promise.all(ids.map(async (id) => [id, (await index.get('notes', id))!.content] as const)));
      await index.close();
      return contents;
    };
    const contents = await indexed();
    assert.deepEqual([...contents.keys()].sort(), [...rows.keys()].sort(), 'exactly the live rows are indexed');
    for (const [id, body] of rows) assert.equal(contents.get(id), body, `row ${id} has its latest text`);
  });
});

