/** Trigger capture (capture: trigger) against a real Postgres: install, delivery, crashes, privileges. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startPostgres, databaseName, type TestPostgres } from './helpers/postgres.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';
import { eventually, killChildren, runCli, spawnDaemon, startError, startTestDaemon, testConfig } from './helpers/daemon.js';
import type { PostgresSourceConfig } from '../connectors/postgres/spec.js';
import { createConnector } from '../connectors/index.js';
import { MAX_UNACKED, READ_LIMIT } from '../connectors/postgres/trigger/index.js';
import { createLogger } from '../src/log.js';
import { Recorder, lensConfig } from './helpers/connector-contract.js';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Config, LensConfig } from '../src/config/types.js';

let server: TestPostgres;
let sink: SemilayerServer;

before(async () => {
  [server, sink] = await Promise.all([startPostgres(), startSemilayerServer()]);
});
after(async () => {
  killChildren();
  await sink?.close();
  await server?.stop();
});

/** A fresh database with `ddl` applied and a trigger-capture config for it (lens names prefixed by the database). */
async function setUp(t: { name: string }, ddl: string, lenses: Record<string, Partial<LensConfig> & { table: string }>) {
  const name = databaseName(t.name);
  const db = await server.createDatabase(name);
  await server.query(db, ddl);
  const prefixed = Object.fromEntries(Object.entries(lenses).map(([lens, l]) => [`${name}_${lens}`, l]));
  const config = testConfig({ dbUrl: db, sinkUrl: sink.url, lenses: prefixed, slot: name });
  config.sources.app.capture = 'trigger';
  const sql = (text: string, params?: unknown[]) => server.query(db, text, params);
  const changelogRows = async () => Number((await sql(`SELECT count(*) AS n FROM tributary.changelog`))[0].n);
  return { name, db, config, sql, lens: (l: string) => `${name}_${l}`, changelogRows };
}


/** The catalog objects trigger capture leaves in a database. */
async function captureObjects(sql: (text: string) => Promise<any[]>): Promise<string[]> {
  const rows = await sql(`
    SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname AS o FROM pg_trigger WHERE tgname LIKE 'tributary%'
    UNION ALL SELECT 'function ' || p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'tributary'
    UNION ALL SELECT 'relation ' || c.oid::regclass FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'tributary'
    UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname = 'tributary'
    ORDER BY 1`);
  return rows.map((r) => r.o as string);
}

describe('postgres trigger capture', () => {
  test('streams inserts, updates and deletes; a key change deletes the old id; the changelog is emptied once delivered', async (t) => {
    const s = await setUp(t, `CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'before')`, { items: { table: 'items' } });
    const daemon = await startTestDaemon(s.config);
    await eventually(() => sink.requests.some((r) => r.lens === s.lens('items') && r.mode === 'full'), 'the initial full sync');
    await s.sql(`INSERT INTO items VALUES (2, 'two'), (3, 'three')`);
    await s.sql(`UPDATE items SET name = 'x' WHERE id = 1`);
    await s.sql(`DELETE FROM items WHERE id = 3`);
    await s.sql(`UPDATE items SET id = 20 WHERE id = 2`);
    const last = () => sink.lastAction(s.lens('items'));
    await eventually(() => last().get('20') === 'upsert' && last().get('2') === 'delete', 'the key change');
    assert.equal(last().get('1'), 'upsert');
    assert.equal(last().get('3'), 'delete');
    await eventually(async () => (await s.changelogRows()) === 0, 'the changelog emptied after delivery');
    assert.equal(await daemon.stop(), 0);
  });

  test('a backlog larger than one read: every change delivered, and every delivered row deleted by the time the daemon stops', async (t) => {
    const s = await setUp(t, `CREATE TABLE backlog (id int PRIMARY KEY)`, { backlog: { table: 'backlog', initialSync: 'none', maxWaitMs: 50 } });
    await startTestDaemon(s.config).then((d) => d.stop()); // installs the triggers
    await s.sql(`INSERT INTO backlog SELECT generate_series(1, 30000)`);
    const daemon = await startTestDaemon(s.config);
    await eventually(() => sink.lastAction(s.lens('backlog')).size === 30000, 'all 30,000 rows', 30_000);
    assert.equal(await daemon.stop(), 0);
    assert.equal(await s.changelogRows(), 0, 'acknowledged rows are deleted, including those acknowledged while a delete was running');
  });

  test('composite and boolean keys are encoded as the logical connector encodes them; TRUNCATE asks for a full sync', async (t) => {
    const s = await setUp(t, `CREATE TABLE flags (k int, on_ boolean, region text, PRIMARY KEY (k, on_, region))`, {
      flags: { table: 'flags', initialSync: 'none' },
    });
    const daemon = await startTestDaemon(s.config);
    await s.sql(`INSERT INTO flags VALUES (7, true, 'eu'), (8, false, 'us')`);
    await eventually(() => sink.lastAction(s.lens('flags')).size === 2, 'two rows');
    assert.deepEqual([...sink.lastAction(s.lens('flags')).keys()].sort(), ['[7,true,"eu"]', '[8,false,"us"]']);
    await s.sql(`TRUNCATE flags`);
    await eventually(() => sink.requests.some((r) => r.lens === s.lens('flags') && r.mode === 'full'), 'a full sync after TRUNCATE');
    assert.equal(await daemon.stop(), 0);
  });

  test('a transaction that commits after a later one was delivered is not lost, and nothing is delivered twice', async (t) => {
    const s = await setUp(t, `CREATE TABLE late (id int PRIMARY KEY)`, { late: { table: 'late', initialSync: 'none', maxWaitMs: 0 } });
    const daemon = await startTestDaemon(s.config);
    const early = new pg.Client({ connectionString: s.db });
    await early.connect();
    await early.query('BEGIN');
    await early.query('INSERT INTO late VALUES (1)'); // takes the lower seq, commits last
    await s.sql('INSERT INTO late VALUES (2)');
    await eventually(() => sink.lastAction(s.lens('late')).get('2') === 'upsert', 'the later transaction');
    await eventually(async () => (await s.changelogRows()) === 0, 'its row deleted');
    await s.sql('INSERT INTO late VALUES (3)');
    await eventually(() => sink.lastAction(s.lens('late')).get('3') === 'upsert', 'another one');
    await early.query('COMMIT');
    await early.end();
    await eventually(() => sink.lastAction(s.lens('late')).get('1') === 'upsert', 'the late committer');
    await eventually(async () => (await s.changelogRows()) === 0, 'every row deleted');
    assert.deepEqual(sink.received(s.lens('late')).map((c) => c.id).sort(), ['1', '2', '3'], 'each change delivered once');
    assert.equal(await daemon.stop(), 0);
  });

  test('each read sends at most MAX_UNACKED read seqs: the reader waits for acknowledgements, and a late committer is still read', async (t) => {
    const s = await setUp(t, `CREATE TABLE bounded (id int PRIMARY KEY)`, {});
    const rec = new Recorder();
    const lens = { name: 'bounded', table: 'public.bounded', config: lensConfig('app', 'public.bounded') };
    const connector = await createConnector(s.config.sources.app, { sourceName: 'app', lenses: [lens], log: createLogger({ level: 'fatal' }), report: rec });
    await connector.start(rec);
    const late = new pg.Client({ connectionString: s.db });
    await late.connect();
    await late.query('BEGIN');
    await late.query('INSERT INTO bounded VALUES (0)'); // the lowest seq, committed last
    await s.sql(`INSERT INTO bounded SELECT generate_series(1, ${MAX_UNACKED + READ_LIMIT})`);
    await eventually(() => rec.ids().length === MAX_UNACKED, 'reads up to MAX_UNACKED unacknowledged rows', 30_000);
    await sleep(1000);
    assert.equal(rec.ids().length, MAX_UNACKED, 'no read while MAX_UNACKED seqs wait for acknowledgement');
    await late.query('COMMIT');
    await late.end();
    connector.acknowledge(rec.covering()!);
    await eventually(() => rec.ids().length === MAX_UNACKED + READ_LIMIT + 1, 'the rest and the late committer', 30_000);
    assert.ok(rec.ids().includes('0'), 'the late committer is read');
    assert.equal(new Set(rec.ids()).size, rec.ids().length, 'each change once');
    await connector.stop();
  });

  test('a late committer whose xid is newer than every finished one (not listed in snapshots) is not lost', async (t) => {
    const s = await setUp(t, `CREATE TABLE newer (id int PRIMARY KEY)`, { newer: { table: 'newer', initialSync: 'none', maxWaitMs: 0 } });
    // The first delivery is held: no acknowledgement, so no DELETE commits a newer xid meanwhile.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let first = true;
    sink.respondWith(async (req) => {
      if (req.lens === s.lens('newer') && first) {
        first = false;
        await held;
      }
      return undefined;
    });
    const daemon = await startTestDaemon(s.config);
    const [older, late] = [new pg.Client({ connectionString: s.db }), new pg.Client({ connectionString: s.db })];
    await Promise.all([older.connect(), late.connect()]);
    await older.query('BEGIN');
    await older.query('SELECT pg_current_xact_id()'); // the older xid
    await late.query('BEGIN');
    await late.query('INSERT INTO newer VALUES (1)'); // a newer xid, the lower seq
    await older.query('INSERT INTO newer VALUES (2)');
    await older.query('COMMIT'); // the newest finished xid is now older than the open transaction's
    await eventually(() => !first, 'the committed row on its way to the sink');
    await late.query('COMMIT');
    await Promise.all([older.end(), late.end()]);
    release();
    await eventually(() => sink.lastAction(s.lens('newer')).get('1') === 'upsert', 'the late committer');
    assert.equal(sink.lastAction(s.lens('newer')).get('2'), 'upsert');
    assert.equal(await daemon.stop(), 0);
    sink.respondWith(undefined);
  });

  test('two sources on one database each get every change; neither deletes the other\'s rows', async (t) => {
    const s = await setUp(t, `CREATE TABLE shared (id int PRIMARY KEY)`, { a: { table: 'shared', initialSync: 'none' } });
    const other: Config = structuredClone(s.config);
    other.state = { type: 'embedded', path: mkdtempSync(join(tmpdir(), 'tributary-trigger-other-')) };
    other.sources = { other: other.sources.app };
    other.lenses = { [s.lens('b')]: { ...s.config.lenses[s.lens('a')], source: 'other' } };
    const [d1, d2] = [await startTestDaemon(s.config), await startTestDaemon(other)];
    await s.sql(`INSERT INTO shared SELECT generate_series(1, 50)`);
    await eventually(() => sink.lastAction(s.lens('a')).size === 50 && sink.lastAction(s.lens('b')).size === 50, 'both sources got all 50');
    await d1.stop();
    await s.sql(`DELETE FROM shared WHERE id <= 10`);
    await eventually(() => sink.lastAction(s.lens('b')).get('10') === 'delete', 'the running source');
    // The running source deletes its rows once the sink's answer is acknowledged, a moment after delivery.
    const waiting = async () => s.sql(`SELECT source, count(*)::int AS n FROM tributary.changelog GROUP BY source ORDER BY source`);
    await eventually(async () => (await waiting()).length === 1, 'the running source acknowledged its rows');
    assert.deepEqual(await waiting(), [{ source: 'app', n: 10 }], 'the stopped source\'s changes wait for it');
    const again = await startTestDaemon(s.config);
    await eventually(() => sink.lastAction(s.lens('a')).get('10') === 'delete', 'the restarted source catches up');
    await Promise.all([again.stop(), d2.stop()]);
  });

  test('a dropped connection: reconnects and goes on', async (t) => {
    const s = await setUp(t, `CREATE TABLE conn (id int PRIMARY KEY)`, { conn: { table: 'conn', initialSync: 'none' } });
    const daemon = await startTestDaemon(s.config);
    await s.sql(`INSERT INTO conn VALUES (1)`);
    await eventually(() => sink.lastAction(s.lens('conn')).get('1') === 'upsert', 'id 1');
    await s.sql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'tributary:app' AND datname = $1`, [s.name]);
    await s.sql(`INSERT INTO conn VALUES (2)`);
    await eventually(() => sink.lastAction(s.lens('conn')).get('2') === 'upsert', 'id 2 after the reconnect');
    assert.equal(daemon.status().lenses[0].state, 'streaming');
    assert.equal(await daemon.stop(), 0);
  });

  test('install and uninstall by hand: idempotent, checked by the daemon, and uninstall leaves nothing behind', async (t) => {
    const s = await setUp(t, `CREATE TABLE ddl (id int PRIMARY KEY)`, { ddl: { table: 'ddl', initialSync: 'none' } });
    const state = mkdtempSync(join(tmpdir(), 'tributary-trigger-'));
    const file = join(state, 'tributary.yaml');
    writeFileSync(
      file,
      `sources:\n  app: { type: postgres, url: "${s.db}", capture: trigger, installTriggers: false }\n` +
        `lenses:\n  ${s.lens('ddl')}: { source: app, table: ddl, sink: hosted, initialSync: none }\n` +
        `sinks:\n  hosted: { type: semilayer, url: "${sink.url}", key: ik_test }\nstate: { type: embedded, path: "${state}" }\n`,
    );
    (s.config.sources.app as PostgresSourceConfig).installTriggers = false;
    const missing = await startError(s.config);
    assert.match(missing, new RegExp(`not installed and installTriggers is false\\. Run tributary triggers install --lens ${s.lens('ddl')}`));

    const first = await runCli(['triggers', 'install', '--lens', s.lens('ddl'), '--config', file]);
    assert.equal(first.code, 0, first.output);
    assert.match(first.output, /installed capture triggers on public\.ddl/);
    const installed = await captureObjects(s.sql);
    assert.deepEqual(
      installed.filter((o) => !o.startsWith('function')),
      [
        'relation tributary.changelog',
        'relation tributary.changelog_pkey',
        'relation tributary.changelog_seq_seq',
        'schema tributary',
        'trigger ddl tributary_app_row',
        'trigger ddl tributary_app_stmt',
      ],
    );
    const second = await runCli(['triggers', 'install', '--lens', s.lens('ddl'), '--config', file]);
    assert.equal(second.code, 0, second.output);
    assert.match(second.output, /already installed/);
    assert.deepEqual(await captureObjects(s.sql), installed, 'a second install changes nothing');

    const daemon = await startTestDaemon(s.config);
    await s.sql(`INSERT INTO ddl VALUES (1)`);
    await eventually(() => sink.lastAction(s.lens('ddl')).get('1') === 'upsert', 'delivery through the installed triggers');
    assert.equal(await daemon.stop(), 0);
    await s.sql(`INSERT INTO ddl VALUES (2)`); // left undelivered in the changelog

    const removed = await runCli(['triggers', 'uninstall', '--lens', s.lens('ddl'), '--config', file]);
    assert.equal(removed.code, 0, removed.output);
    assert.match(removed.output, /1 undelivered changelog row/);
    assert.deepEqual(await captureObjects(s.sql), [], 'nothing left');
    const again = await runCli(['triggers', 'uninstall', '--lens', s.lens('ddl'), '--config', file]);
    assert.equal(again.code, 0, again.output);
    assert.match(again.output, /nothing to remove/);
  });

  test('ordinary privileges are enough; a missing one is named with the GRANT that fixes it', async (t) => {
    const s = await setUp(t, `CREATE TABLE priv (id int PRIMARY KEY); CREATE ROLE app_writer LOGIN; CREATE ROLE capturer LOGIN;`, {
      priv: { table: 'priv', initialSync: 'none' },
    });
    s.config.sources.app.url = s.db.replace('postgres@', 'capturer@');
    assert.match(await startError(s.config), /may not create it: GRANT CREATE ON DATABASE .* TO "capturer".*GRANT TRIGGER ON "public"\."priv" TO "capturer"/);
    await s.sql(`GRANT CREATE ON DATABASE ${s.name} TO capturer`);
    assert.match(await startError(s.config), /may not create triggers on public\.priv: GRANT TRIGGER ON "public"\."priv" TO "capturer"/);
    await s.sql(`GRANT TRIGGER ON priv TO capturer; GRANT SELECT, INSERT, UPDATE, DELETE ON priv TO app_writer`);
    const daemon = await startTestDaemon(s.config);
    // Another role writes: the SECURITY DEFINER function records the change without it needing any grant on the changelog.
    const writer = s.db.replace('postgres@', 'app_writer@');
    await server.query(writer, `INSERT INTO priv VALUES (1)`);
    await server.query(writer, `UPDATE priv SET id = 2`);
    await eventually(() => sink.lastAction(s.lens('priv')).get('2') === 'upsert' && sink.lastAction(s.lens('priv')).get('1') === 'delete', 'changes by another role');
    assert.equal(await daemon.stop(), 0);
  });

  test('concurrent writers, kill -9 and restart: every id ends in its table state', async (t) => {
    const s = await setUp(t, `CREATE TABLE busy (id int PRIMARY KEY, v int)`, {});
    const lens = s.lens('busy');
    const state = mkdtempSync(join(tmpdir(), 'tributary-trigger-crash-'));
    const yaml = `
sources:
  app: { type: postgres, url: "${s.db}", capture: trigger }
lenses:
  ${lens}: { source: app, table: busy, sink: hosted, initialSync: none, maxWaitMs: 20 }
sinks:
  hosted: { type: semilayer, url: "${sink.url}", key: ik_test }
state: { type: embedded, path: "${state}" }
metrics: false
log: { level: ${process.env.TRIBUTARY_TEST_LOG ?? 'info'} }
`;
    // A slow sink keeps batches unacknowledged when the kill lands.
    sink.respondWith(async (req) => (req.lens === lens ? (await new Promise((r) => setTimeout(r, 20)), undefined) : undefined));
    let daemon = spawnDaemon(yaml);
    // Once the triggers exist every change is in the changelog, whenever the daemon reads it.
    await eventually(async () => (await s.sql(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgrelid = 'busy'::regclass`))[0].n === 2, 'the triggers', 20_000);

    const touched = new Set<string>();
    let committed = 0;
    const writer = async (w: number) => {
      const client = new pg.Client({ connectionString: s.db });
      await client.connect();
      for (let txn = 0; txn < 150; txn++) {
        const ids: number[] = [];
        try {
          await client.query('BEGIN');
          for (let k = 0; k < 4; k++) {
            const id = Math.floor(Math.random() * 300);
            const roll = Math.random();
            if (roll < 0.2) {
              if ((await client.query('DELETE FROM busy WHERE id = $1', [id])).rowCount) ids.push(id);
            } else if (roll < 0.3) {
              // A key change: the row moves to id + 1000 (a range nothing else writes).
              if ((await client.query('UPDATE busy SET id = id + 1000 WHERE id = $1', [id])).rowCount) ids.push(id, id + 1000);
            } else {
              await client.query('INSERT INTO busy VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = busy.v + 1', [id, w]);
              ids.push(id);
            }
          }
          await client.query('COMMIT');
          committed++;
          for (const id of ids) touched.add(String(id));
        } catch (err) {
          // Writers collide (deadlocks, an id + 1000 already taken): that transaction rolls back.
          if (!/deadlock|duplicate key/.test(String(err))) throw err;
          await client.query('ROLLBACK');
        }
      }
      await client.end();
    };
    const writing = Promise.all([0, 1, 2, 3].map(writer));
    await eventually(() => committed >= 160 && sink.received(lens).length > 0, 'deliveries before the kill', 30_000);
    daemon.child.kill('SIGKILL');
    await daemon.exited;
    assert.ok(committed < 500, 'the kill lands while the writers write');
    await eventually(() => committed >= 320, 'more writes while the daemon is down');
    daemon = spawnDaemon(yaml);
    await writing;

    const live = new Set((await s.sql('SELECT id::text AS id FROM busy')).map((r) => r.id as string));
    const wrong = () => {
      const last = sink.lastAction(lens);
      return [...touched].filter((id) => last.get(id) !== (live.has(id) ? 'upsert' : 'delete')).map((id) => `${id}: want ${live.has(id) ? 'upsert' : 'delete'}, got ${last.get(id)}`);
    };
    await eventually(() => wrong().length === 0, 'the final state of every touched id', 30_000).catch((err) => {
      throw new Error(`${err.message}: ${wrong().slice(0, 20).join('; ')}\n${daemon.output().slice(-3000)}`);
    });
    await eventually(async () => (await s.changelogRows()) === 0, 'the changelog emptied', 10_000);
    daemon.child.kill('SIGTERM');
    assert.equal(await daemon.exited, 0);
    sink.respondWith(undefined);
  });
});
