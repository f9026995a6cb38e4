/** What the logical connector tells users when the database is not ready for it, and how it recovers. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startPostgres, databaseName, type TestPostgres } from './helpers/postgres.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';
import { eventually, startError, startTestDaemon, testConfig } from './helpers/daemon.js';
import { startDaemon } from '../src/daemon.js';
import { createLogger } from '../src/log.js';

let pg: TestPostgres;
let sink: SemilayerServer;

before(async () => {
  [pg, sink] = await Promise.all([startPostgres(), startSemilayerServer()]);
});
after(async () => {
  await sink?.close();
  await pg?.stop();
});


async function database(t: { name: string }, ddl: string) {
  const name = databaseName(t.name);
  const url = await pg.createDatabase(name);
  await pg.query(url, ddl);
  return { name, url };
}

describe('postgres logical setup errors', () => {
  test('wal_level other than logical: says how to fix it', async () => {
    const replica = await startPostgres({ settings: { wal_level: 'replica' } });
    try {
      await replica.query(replica.url(), 'CREATE TABLE t (id int PRIMARY KEY)');
      const message = await startError(testConfig({ dbUrl: replica.url(), sinkUrl: sink.url, lenses: { t: { table: 't' } } }));
      assert.match(message, /wal_level is "replica", logical replication needs "logical"/);
      assert.match(message, /ALTER SYSTEM SET wal_level = logical/);
      assert.match(message, /capture: trigger/);
    } finally {
      await replica.stop();
    }
  });

  test('a role without REPLICATION: says which role and what to grant', async (t) => {
    const db = await database(t, `CREATE TABLE t (id int PRIMARY KEY); CREATE ROLE plain LOGIN; GRANT SELECT ON t TO plain`);
    const url = db.url.replace('postgres@', 'plain@');
    const message = await startError(testConfig({ dbUrl: url, sinkUrl: sink.url, slot: db.name, lenses: { t: { table: 't' } } }));
    assert.match(message, /role "plain" may not use replication/);
    assert.match(message, /ALTER ROLE "plain" WITH REPLICATION/);
  });

  test('a table without a primary key: says to add one or set primaryKey with REPLICA IDENTITY FULL', async (t) => {
    const db = await database(t, `CREATE TABLE nokey (a int, b text)`);
    const message = await startError(testConfig({ dbUrl: db.url, sinkUrl: sink.url, slot: db.name, lenses: { nokey: { table: 'nokey' } } }));
    assert.match(message, /table public\.nokey of lens "nokey" has no primary key/);
    assert.match(message, /REPLICA IDENTITY FULL/);
  });

  test('a primaryKey the replica identity does not cover, and a missing table', async (t) => {
    const db = await database(t, `CREATE TABLE keyed (id int PRIMARY KEY, code text UNIQUE)`);
    const uncovered = await startError(
      testConfig({ dbUrl: db.url, sinkUrl: sink.url, slot: db.name, lenses: { keyed: { table: 'keyed', primaryKey: ['code'] } } }),
    );
    assert.match(uncovered, /replica identity of public\.keyed does not include key column\(s\) code/);
    const missing = await startError(testConfig({ dbUrl: db.url, sinkUrl: sink.url, slot: db.name, lenses: { ghost: { table: 'ghost' } } }));
    assert.match(missing, /table public\.ghost of lens "ghost" does not exist/);
  });
});

describe('postgres logical recovery', () => {
  test('a dropped connection reconnects and nothing is lost', async (t) => {
    const db = await database(t, `CREATE TABLE flaky (id int PRIMARY KEY)`);
    const lens = `${db.name}_flaky`;
    const daemon = await startTestDaemon(testConfig({ dbUrl: db.url, sinkUrl: sink.url, slot: db.name, lenses: { [lens]: { table: 'flaky', initialSync: 'none' } } }));
    await pg.query(db.url, `INSERT INTO flaky VALUES (1)`);
    await eventually(() => sink.lastAction(lens).get('1') === 'upsert', 'first row');
    await pg.query(db.url, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '${db.name}'`);
    await pg.query(db.url, `INSERT INTO flaky VALUES (2)`);
    await eventually(() => sink.lastAction(lens).get('2') === 'upsert', 'a row written while reconnecting');
    assert.equal(daemon.status().lenses[0].state, 'streaming');
    assert.equal(await daemon.stop(), 0);
  });

  test('a second daemon on the same slot stands by and takes over when the first stops', async (t) => {
    const db = await database(t, `CREATE TABLE shared (id int PRIMARY KEY)`);
    const lens = `${db.name}_shared`;
    const config = () => testConfig({ dbUrl: db.url, sinkUrl: sink.url, slot: db.name, lenses: { [lens]: { table: 'shared', initialSync: 'none' } } });
    const active = await startTestDaemon(config());
    const standby = await startDaemon(config(), createLogger({ level: 'fatal' }));
    await eventually(() => standby.status().lenses[0]?.state === 'standby', 'the second daemon standing by');
    assert.match(standby.status().lenses[0].lastError ?? '', /active for PID/);
    await active.stop();
    await eventually(() => standby.status().lenses[0].state === 'streaming', 'the standby taking over', 15_000);
    await pg.query(db.url, `INSERT INTO shared VALUES (7)`);
    await eventually(() => sink.lastAction(lens).get('7') === 'upsert', 'changes flowing through the new active daemon');
    assert.equal(await standby.stop(), 0);
  });
});

describe('failoverSlot', () => {
  /** A config on `url` whose source creates its slot with failover. */
  function failoverConfig(url: string) {
    const config = testConfig({ dbUrl: url, sinkUrl: sink.url, slot: 'failover_slot', lenses: { fo: { table: 't', initialSync: 'none' } } });
    Object.assign(config.sources.app, { failoverSlot: true });
    return config;
  }

  test('on PostgreSQL 17 the slot is created with failover', async () => {
    const pg17 = await startPostgres({ version: '17' });
    try {
      await pg17.query(pg17.url(), 'CREATE TABLE t (id int PRIMARY KEY)');
      const daemon = await startTestDaemon(failoverConfig(pg17.url()));
      const [slot] = await pg17.query(pg17.url(), `SELECT failover FROM pg_replication_slots WHERE slot_name = 'failover_slot'`);
      assert.equal(slot.failover, true);
      assert.equal(await daemon.stop(), 0);
    } finally {
      await pg17.stop();
    }
  });

  test('on PostgreSQL 15 it is a setup error that says what to do', async () => {
    const pg15 = await startPostgres({ version: '15' });
    try {
      await pg15.query(pg15.url(), 'CREATE TABLE t (id int PRIMARY KEY)');
      const message = await startError(failoverConfig(pg15.url()));
      assert.match(message, /failoverSlot: true needs PostgreSQL 17 or later \(this server is 15\)/);
      assert.match(message, /set it to false/);
      const slots = await pg15.query(pg15.url(), 'SELECT slot_name FROM pg_replication_slots');
      assert.deepEqual(slots, []);
    } finally {
      await pg15.stop();
    }
  });
});
