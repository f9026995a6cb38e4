/** The MySQL binlog connector against a real throwaway MariaDB with a ROW binlog. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { createMysqlBinlogConnector } from '../connectors/mysql-binlog/index.js';
import type { MysqlSourceConfig } from '../src/config/types.js';
import { defaultServerId } from '../src/config/load.js';
import { SourceSetupError } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import type { Position, SourceChange, SourceConnector, SourceHandler, SourceState } from '../src/types.js';
import { eventually } from './helpers/daemon.js';
import { databaseName } from './helpers/postgres.js';
import { startMariadb, type TestMariadb } from './helpers/mariadb.js';

let server: TestMariadb;
const log = createLogger({ level: process.env.TRIBUTARY_TEST_LOG ?? 'fatal' });

before(async () => {
  server = await startMariadb();
});
after(async () => {
  await server?.stop();
});

/** A SourceHandler that records everything and acknowledges each checkpoint at once. */
function recorder() {
  const r = {
    changes: [] as SourceChange[],
    checkpoints: [] as Position[],
    states: [] as Array<{ state: SourceState; detail?: string }>,
    resyncs: [] as Array<{ lens: string; reason: string }>,
    connector: undefined as SourceConnector | undefined,
    handler: {
      change: (c) => void r.changes.push(c),
      checkpoint: (p) => {
        r.checkpoints.push(p);
        r.connector?.acknowledge(p);
      },
      resync: (lens, reason) => void r.resyncs.push({ lens, reason }),
      state: (state, detail) => void r.states.push({ state, detail }),
    } as SourceHandler,
    /** `action id` strings of one lens, in order. */
    seen: (lens: string) => r.changes.filter((c) => c.lens === lens).map((c) => `${c.action} ${c.id}`),
    last: () => r.checkpoints[r.checkpoints.length - 1],
  };
  return r;
}

function sourceConfig(url: string, overrides: Partial<MysqlSourceConfig> = {}): MysqlSourceConfig {
  return { type: 'mysql', url, capture: 'binlog', serverId: defaultServerId(url), heartbeatMs: 1000, onPurgedPosition: 'error', gtid: true, ...overrides };
}

async function open(url: string, lenses: Array<{ name: string; table: string; primaryKey?: string[] }>, overrides: Partial<MysqlSourceConfig> = {}, saved?: Position) {
  const rec = recorder();
  const connector = createMysqlBinlogConnector(sourceConfig(url, overrides), { sourceName: 'app', lenses, log });
  rec.connector = connector;
  const { fresh } = await connector.start(rec.handler, saved);
  return { rec, connector, fresh };
}

async function setUp(t: { name: string }, ddl: string) {
  const name = databaseName(t.name);
  const url = await server.createDatabase(name);
  await server.query(ddl, [], name);
  const q = (sql: string, params?: unknown[]) => server.query(sql, params, name);
  return { name, url, q };
}

describe('mysql binlog connector', () => {
  test('inserts, updates, deletes and key changes become upserts and deletes; checkpoints at commits', async (t) => {
    const { name, url, q } = await setUp(t, 'CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(20)); CREATE TABLE other (id INT PRIMARY KEY)');
    const { rec, connector, fresh } = await open(url, [{ name: 'items', table: `${name}.items` }]);
    try {
      assert.equal(fresh, true);
      await q(`INSERT INTO items VALUES (1, 'a'), (2, 'b'); INSERT INTO other VALUES (9)`);
      await q(`UPDATE items SET v = 'c' WHERE id = 1`);
      await q(`UPDATE items SET id = 20 WHERE id = 2`);
      await q(`DELETE FROM items WHERE id = 1`);
      await eventually(() => rec.seen('items').length === 6, 'six changes');
      assert.deepEqual(rec.seen('items'), ['upsert 1', 'upsert 2', 'upsert 1', 'delete 2', 'upsert 20', 'delete 1']);
      assert.ok(rec.checkpoints.length >= 4, 'a checkpoint per transaction');
      assert.ok(rec.changes.every((c) => c.committedAt > Date.now() - 60_000));
    } finally {
      await connector.stop();
    }
  });

  test('composite and typed keys are encoded faithfully in ids', async (t) => {
    const { name, url, q } = await setUp(
      t,
      `CREATE TABLE c (tenant VARCHAR(10), n BIGINT UNSIGNED, d DECIMAL(10,2), at DATETIME(3), PRIMARY KEY (tenant, n, d, at));
       CREATE TABLE b (k VARBINARY(8) PRIMARY KEY, v INT)`,
    );
    const { rec, connector } = await open(url, [
      { name: 'c', table: `${name}.c` },
      { name: 'b', table: `${name}.b` },
    ]);
    try {
      await q(`INSERT INTO c VALUES ('eu', 18446744073709551615, 12.50, '2024-05-01 10:20:30.250'), ('u"s', 7, -0.05, '1999-12-31 23:59:59.000')`);
      await q(`UPDATE c SET tenant = 'us' WHERE n = 7`);
      await q(`INSERT INTO b VALUES (X'00ff10', 1)`);
      await eventually(() => rec.changes.length === 5, 'five changes');
      assert.deepEqual(rec.seen('c'), [
        'upsert ["eu",18446744073709551615,12.50,"2024-05-01 10:20:30.250"]',
        'upsert ["u\\"s",7,-0.05,"1999-12-31 23:59:59.000"]',
        'delete ["u\\"s",7,-0.05,"1999-12-31 23:59:59.000"]',
        'upsert ["us",7,-0.05,"1999-12-31 23:59:59.000"]',
      ]);
      assert.deepEqual(rec.seen('b'), ['upsert \\x00ff10']);
    } finally {
      await connector.stop();
    }
  });

  for (const by of ['file', 'gtid'] as const) {
    test(`a restart from the saved ${by} position delivers exactly what changed while stopped`, async (t) => {
      const { name, url, q } = await setUp(t, 'CREATE TABLE items (id INT PRIMARY KEY, v INT)');
      const lenses = [{ name: 'items', table: `${name}.items` }];
      const first = await open(url, lenses, { gtid: by === 'gtid' });
      await q('INSERT INTO items VALUES (1, 1)');
      await eventually(() => first.rec.seen('items').length === 1, 'the first insert');
      await first.connector.stop();
      const saved = first.rec.last();
      assert.equal(JSON.parse(saved).gtid !== undefined, by === 'gtid', `position ${saved} ${by === 'gtid' ? 'carries' : 'carries no'} GTID`);

      await q('INSERT INTO items VALUES (2, 2); UPDATE items SET v = 3 WHERE id = 1');
      await q('DELETE FROM items WHERE id = 2');
      const second = await open(url, lenses, { gtid: by === 'gtid' }, saved);
      try {
        assert.equal(second.fresh, false);
        await eventually(() => second.rec.seen('items').length >= 3, 'the changes made while stopped');
        await q('INSERT INTO items VALUES (4, 4)');
        await eventually(() => second.rec.seen('items').length >= 4, 'a live change');
        assert.deepEqual(second.rec.seen('items'), ['upsert 2', 'upsert 1', 'delete 2', 'upsert 4']);
      } finally {
        await second.connector.stop();
      }
    });
  }

  test('DDL on a lens table does not stall the stream', async (t) => {
    const { name, url, q } = await setUp(t, 'CREATE TABLE items (id INT PRIMARY KEY, v INT)');
    const { rec, connector } = await open(url, [{ name: 'items', table: `${name}.items` }]);
    try {
      await q('INSERT INTO items VALUES (1, 1)');
      await q('ALTER TABLE items ADD COLUMN w VARCHAR(10) FIRST, DROP COLUMN v');
      await q(`INSERT INTO items VALUES ('x', 2); UPDATE items SET w = 'y' WHERE id = 1`);
      await eventually(() => rec.seen('items').length === 3, 'changes after the ALTER');
      assert.deepEqual(rec.seen('items'), ['upsert 1', 'upsert 2', 'upsert 1']);
    } finally {
      await connector.stop();
    }
  });
});
