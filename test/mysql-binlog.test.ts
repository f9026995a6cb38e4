/** The MySQL binlog connector against a real throwaway MariaDB with a ROW binlog. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createMysqlBinlogConnector } from '../connectors/mysql/binlog/index.js';
import { defaultServerId, type MysqlSourceConfig } from '../connectors/mysql/spec.js';
import { parseConfig } from '../src/config/load.js';
import { ConfigError, SourceSetupError } from '../src/errors.js';
import { createMysqlReader } from '../connectors/mysql/reader.js';
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
    owed: [] as Array<{ lens: string; reason: string }>,
    connector: undefined as SourceConnector | undefined,
    handler: {
      change: (c) => void r.changes.push(c),
      checkpoint: (p) => {
        r.checkpoints.push(p);
        r.connector?.acknowledge(p);
      },
      resync: (lens, reason) => void r.resyncs.push({ lens, reason }),
      fullSyncOwed: (lens, reason) => void r.owed.push({ lens, reason }),
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
  const ctxLenses = lenses.map((l) => ({
    ...l,
    config: { source: 'app', table: l.table, primaryKey: l.primaryKey, sink: 'hosted', fields: [], metadata: [], initialSync: 'full' as const, maxBatch: 10_000, maxWaitMs: 20 },
  }));
  const connector = createMysqlBinlogConnector(sourceConfig(url, overrides), { sourceName: 'app', lenses: ctxLenses, log, report: rec.handler });
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
      assert.match(saved, by === 'gtid' ? /^mysql-bin\.\d+:\d+@0-1-\d+$/ : /^mysql-bin\.\d+:\d+$/, `position ${saved}`);

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

  test('a first start checkpoints its starting place: stopped before any transaction, it still resumes there', async (t) => {
    const { name, url, q } = await setUp(t, 'CREATE TABLE items (id INT PRIMARY KEY)');
    const lenses = [{ name: 'items', table: `${name}.items` }];
    const first = await open(url, lenses, { heartbeatMs: 60_000 });
    await first.connector.stop();
    assert.equal(first.rec.checkpoints.length, 1);
    await q('INSERT INTO items VALUES (1)');
    const second = await open(url, lenses, {}, first.rec.last());
    try {
      await eventually(() => second.rec.seen('items').length === 1, 'the insert made after the first stop');
      assert.deepEqual(second.rec.seen('items'), ['upsert 1']);
    } finally {
      await second.connector.stop();
    }
  });

  test('a quiet server sends heartbeats: checkpoints keep coming and the stream stays up', async (t) => {
    const { name, url } = await setUp(t, 'CREATE TABLE items (id INT PRIMARY KEY)');
    const { rec, connector } = await open(url, [{ name: 'items', table: `${name}.items` }], { heartbeatMs: 1000 });
    try {
      await eventually(() => rec.checkpoints.length >= 4, 'heartbeat checkpoints on an idle binlog');
      assert.deepEqual(rec.states.map((s) => s.state), ['connecting', 'streaming']);
      assert.deepEqual(rec.changes, []);
    } finally {
      await connector.stop();
    }
  });

  test('the server killed and restarted mid-stream: the connector reconnects and loses nothing', async (t) => {
    const own = await startMariadb();
    try {
      const name = databaseName(t.name);
      const url = await own.createDatabase(name);
      await own.query('CREATE TABLE items (id INT PRIMARY KEY)', [], name);
      const { rec, connector } = await open(url, [{ name: 'items', table: `${name}.items` }]);
      try {
        await own.query('INSERT INTO items VALUES (1)', [], name);
        await eventually(() => rec.seen('items').length === 1, 'the first insert');
        await own.halt(true);
        await eventually(() => rec.states.some((s) => s.state === 'reconnecting'), 'the connector reconnecting');
        await own.start();
        await own.query('INSERT INTO items VALUES (2); DELETE FROM items WHERE id = 1', [], name);
        await eventually(() => rec.seen('items').length >= 3, 'the changes after the restart');
        assert.deepEqual(rec.seen('items'), ['upsert 1', 'upsert 2', 'delete 1']);
        assert.equal(rec.states[rec.states.length - 1].state, 'streaming');
      } finally {
        await connector.stop();
      }
    } finally {
      await own.stop();
    }
  });

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

describe('mysql binlog connector errors', () => {
  test('a second connection with the same serverId: the first stops in error and says to set serverId', async (t) => {
    const { name, url, q } = await setUp(t, 'CREATE TABLE items (id INT PRIMARY KEY, v INT)');
    const lenses = [{ name: 'items', table: `${name}.items` }];
    const first = await open(url, lenses, { serverId: 77 });
    const second = await open(url, lenses, { serverId: 77 });
    try {
      await eventually(() => first.rec.states.some((s) => s.state === 'error'), 'the first connection in error');
      const detail = first.rec.states.find((s) => s.state === 'error')!.detail!;
      assert.match(detail, /same server_id 77/);
      assert.match(detail, /set serverId:/);
      await q('INSERT INTO items VALUES (1, 1)');
      await eventually(() => second.rec.seen('items').length === 1, 'the second connection streaming');
      assert.deepEqual(first.rec.seen('items'), []);
    } finally {
      await first.connector.stop();
      await second.connector.stop();
    }
  });

  test('binlog_format other than ROW is refused with the fix', async (t) => {
    const other = await startMariadb({ settings: { binlog_format: 'STATEMENT' } });
    try {
      const name = databaseName(t.name);
      const url = await other.createDatabase(name);
      await other.query('CREATE TABLE items (id INT PRIMARY KEY)', [], name);
      await assert.rejects(open(url, [{ name: 'items', table: `${name}.items` }]), (err: Error) => {
        assert.ok(err instanceof SourceSetupError);
        assert.match(err.message, /binlog_format is STATEMENT; the binlog connector needs ROW\. Run SET GLOBAL binlog_format = 'ROW'/);
        return true;
      });
    } finally {
      await other.stop();
    }
  });

  test('binlog_row_image MINIMAL is refused when the lens key is not the primary key, accepted when it is', async (t) => {
    const { name, url, q } = await setUp(t, 'CREATE TABLE items (id INT PRIMARY KEY, code VARCHAR(10) UNIQUE, v INT)');
    await server.query("SET GLOBAL binlog_row_image = 'MINIMAL'");
    try {
      await assert.rejects(open(url, [{ name: 'items', table: `${name}.items`, primaryKey: ['code'] }]), /binlog_row_image is MINIMAL .* SET GLOBAL binlog_row_image = 'FULL'/);
      const { rec, connector } = await open(url, [{ name: 'items', table: `${name}.items` }]);
      try {
        await q(`INSERT INTO items VALUES (1, 'a', 1); UPDATE items SET v = 2 WHERE id = 1; UPDATE items SET id = 5 WHERE id = 1; DELETE FROM items WHERE id = 5`);
        await eventually(() => rec.seen('items').length === 5, 'five changes');
        assert.deepEqual(rec.seen('items'), ['upsert 1', 'upsert 1', 'delete 1', 'upsert 5', 'delete 5']);
      } finally {
        await connector.stop();
      }
    } finally {
      await server.query("SET GLOBAL binlog_row_image = 'FULL'");
    }
  });

  test('missing replication privileges are named with the GRANT to run', async (t) => {
    const { name } = await setUp(t, 'CREATE TABLE items (id INT PRIMARY KEY)');
    await server.query(
      `CREATE USER 'reader'@'127.0.0.1' IDENTIFIED BY 'pw'; GRANT SELECT ON *.* TO 'reader'@'127.0.0.1';
       CREATE USER 'monitor'@'127.0.0.1' IDENTIFIED BY 'pw'; GRANT SELECT, BINLOG MONITOR ON *.* TO 'monitor'@'127.0.0.1'`,
    );
    const lenses = [{ name: 'items', table: `${name}.items` }];
    for (const user of ['reader', 'monitor']) {
      await assert.rejects(open(server.url(name, user, 'pw'), lenses), (err: Error) => {
        assert.ok(err instanceof SourceSetupError, `${user}: ${err.message}`);
        assert.match(err.message, /permission denied .*GRANT REPLICATION SLAVE/);
        assert.doesNotMatch(err.message, /pw@/);
        return true;
      });
    }
  });

  for (const mode of ['error', 'resync'] as const) {
    test(`a purged saved position (${mode === 'error' ? 'gtid, onPurgedPosition: error' : 'file, onPurgedPosition: resync'})`, async (t) => {
      const { name, url, q } = await setUp(t, 'CREATE TABLE items (id INT PRIMARY KEY)');
      const lenses = [{ name: 'items', table: `${name}.items` }];
      const gtid = mode === 'error';
      const first = await open(url, lenses, { gtid });
      await q('INSERT INTO items VALUES (1)');
      await eventually(() => first.rec.checkpoints.length > 0, 'a checkpoint');
      await first.connector.stop();
      const saved = first.rec.last();
      await q('INSERT INTO items VALUES (2)'); // lost with the purged file
      const [{ File: current }] = await server.query('SHOW MASTER STATUS');
      await server.query('FLUSH BINARY LOGS');
      const [{ File: next }] = await server.query('SHOW MASTER STATUS');
      assert.notEqual(current, next);
      // The server keeps a file while a dump thread still reads it: purge until it is gone.
      await eventually(async () => {
        await server.query(`PURGE BINARY LOGS TO '${next}'`);
        return !(await server.query('SHOW BINARY LOGS')).some((f) => f.Log_name === current);
      }, `${current} purged`);

      const second = await open(url, lenses, { gtid, onPurgedPosition: mode }, saved);
      try {
        await q('INSERT INTO items VALUES (3)');
        await eventually(() => second.rec.seen('items').includes('upsert 3'), 'streaming on from the current position');
        assert.deepEqual(second.rec.seen('items'), ['upsert 3']);
        if (mode === 'error') {
          assert.deepEqual(second.rec.owed.map((o) => o.lens), ['items'], 'the lens owes a full sync (the pipeline shows it as error until one is done)');
          assert.match(second.rec.owed[0].reason, /is no longer on the server \(purged/);
          assert.match(second.rec.owed[0].reason, /tributary ingest items --config FILE --mode full/);
          assert.deepEqual(second.rec.resyncs, []);
        } else {
          assert.deepEqual(second.rec.resyncs.map((r) => r.lens), ['items']);
          assert.match(second.rec.resyncs[0].reason, /was purged/);
          assert.equal(second.rec.states[second.rec.states.length - 1].state, 'streaming');
        }
      } finally {
        await second.connector.stop();
      }
    });
  }
});

describe('mysql row reader', () => {
  const tables: Record<string, string> = {
    int_k: 'k INT PRIMARY KEY',
    unsigned_k: 'k BIGINT UNSIGNED PRIMARY KEY',
    decimal_k: 'k DECIMAL(20,4) PRIMARY KEY',
    datetime_k: 'k DATETIME(6) PRIMARY KEY',
    timestamp_k: 'k TIMESTAMP(3) PRIMARY KEY',
    varchar_k: 'k VARCHAR(40) PRIMARY KEY',
    binary_k: 'k VARBINARY(16) PRIMARY KEY',
    composite_k: 'a VARCHAR(10), b BIGINT UNSIGNED, c DECIMAL(8,3), d DATETIME, PRIMARY KEY (a, b, c, d)',
  };
  const values: Record<string, string[]> = {
    int_k: ['-2147483648', '0', '42', '2147483647'],
    unsigned_k: ['0', '9007199254740993', '18446744073709551615'],
    decimal_k: ['-1.5', '0', '12.3456', '9999999999999999.9999'],
    datetime_k: ["'1000-01-01 00:00:00'", "'2024-02-29 23:59:59.999999'", "'2038-01-19 03:14:08.5'"],
    timestamp_k: ["'2001-02-03 04:05:06.789'", "'2030-12-31 23:59:59'"],
    varchar_k: ["'p_7712'", "'with \"quotes\" and , commas'", "'[1,2]'", "'ünïcödé ✓'"],
    binary_k: ["X'00'", "X'deadbeef'", "X'ff00ff'"],
    composite_k: ["'eu', 1, 0.5, '2024-01-01 00:00:00'", "'eu', 18446744073709551615, -3.25, '2024-01-01 00:00:01'", "'us', 1, 0.5, '2024-01-01 00:00:00'"],
  };

  test('reads the ids the binlog connector produces, for every key type; by id and in pages', async (t) => {
    const ddl = Object.entries(tables).map(([name, cols]) => `CREATE TABLE ${name} (${cols}, label VARCHAR(20), changed INT)`).join('; ');
    const { name, url, q } = await setUp(t, ddl);
    const lenses = Object.keys(tables).map((table) => ({ name: table, table: `${name}.${table}` }));
    const { rec, connector } = await open(url, lenses);
    try {
      let n = 0;
      for (const [table, rows] of Object.entries(values)) {
        await q(`INSERT INTO ${table} VALUES ${rows.map((v) => `(${v}, 'row ${++n}', ${n})`).join(', ')}`);
      }
      const total = Object.values(values).flat().length;
      await eventually(() => rec.changes.length === total, `${total} changes`);
      for (const table of Object.keys(tables)) {
        const streamed = rec.seen(table).map((s) => s.slice('upsert '.length));
        const reader = await createMysqlReader(url, { lens: table, table: `${name}.${table}`, columns: ['label'], changeTrackingColumn: 'changed' });
        try {
          const paged: string[] = [];
          let after: string | undefined;
          for (;;) {
            const page = await reader.page({ after, limit: 2 });
            if (page.length === 0) break;
            paged.push(...page.map((r) => r.id));
            after = page[page.length - 1].id;
          }
          assert.deepEqual([...paged].sort(), [...streamed].sort(), `${table}: the reader pages through the ids the binlog produced`);
          assert.equal(new Set(paged).size, paged.length, `${table}: no id twice across pages`);
          const absent = table === 'composite_k' ? '["zz",1,0.5,"2024-01-01 00:00:00"]' : table === 'binary_k' ? '\\x0102' : table === 'datetime_k' ? '2000-01-01 00:00:00.000000' : table === 'timestamp_k' ? '2000-01-01 00:00:00.000' : table === 'varchar_k' ? 'missing' : '7';
          const byId = await reader.readByIds([...streamed, absent]);
          assert.deepEqual([...byId.keys()].sort(), [...streamed].sort(), `${table}: readByIds finds every streamed id`);
          assert.match(String(byId.get(streamed[0])?.label), /^row \d+$/);
          const changed = await reader.page({ limit: 10, changedSince: { value: String(n - 1) } });
          assert.ok(changed.every((r) => Number(r.cursor) > n - 1));
        } finally {
          await reader.close();
        }
      }
      // Incremental keyset: (changed, key) after a cursor and id resumes in between equal cursors.
      await q(`UPDATE int_k SET changed = 100`);
      const reader = await createMysqlReader(url, { lens: 'int_k', table: `${name}.int_k`, columns: ['label'], changeTrackingColumn: 'changed' });
      try {
        assert.deepEqual((await reader.page({ limit: 10, changedSince: {} })).map((r) => r.id), ['-2147483648', '0', '42', '2147483647'], 'no cursor: from the first row');
        const tracking = await reader.describeChangeTracking!();
        assert.deepEqual([tracking.exists, tracking.indexed], [true, false]);
        await q(tracking.createIndex);
        assert.equal((await reader.describeChangeTracking!()).indexed, true);
        const first = await reader.page({ limit: 2, changedSince: { value: '99' } });
        assert.deepEqual(first.map((r) => r.id), ['-2147483648', '0']);
        const rest = await reader.page({ limit: 10, changedSince: { value: first[1].cursor!, id: first[1].id } });
        assert.deepEqual(rest.map((r) => r.id), ['42', '2147483647']);
      } finally {
        await reader.close();
      }
    } finally {
      await connector.stop();
    }
  });
});

describe('mysql source configuration', () => {
  const yaml = (source: string, table = 'items') => `
sources:
  shop: ${source}
lenses:
  items: { source: shop, table: ${table}, sink: hosted }
sinks:
  hosted: { type: semilayer, url: "https://api.semilayer.com", key: ik_x }
`;

  test('defaults: capture binlog, a serverId derived from the source name, bare tables in the url database', () => {
    const config = parseConfig(yaml('{ type: mysql, url: "mysql://u:p@db:3306/app" }'), 'f.yaml', {});
    assert.deepEqual(config.sources.shop, {
      type: 'mysql',
      url: 'mysql://u:p@db:3306/app',
      capture: 'binlog',
      serverId: defaultServerId('shop'),
      heartbeatMs: 10000,
      onPurgedPosition: 'error',
      gtid: true,
    });
    assert.equal(config.lenses.items.table, 'app.items');
    assert.equal(defaultServerId('shop'), defaultServerId('shop'));
    assert.notEqual(defaultServerId('shop'), defaultServerId('shop2'));
    assert.ok(defaultServerId('shop') >= 2_000_000_000 && defaultServerId('shop') < 4_000_000_000);
  });

  test('mistakes are reported with their path: an unknown capture, no database for a bare table, a bad serverId', () => {
    const problems = (text: string) => {
      try {
        parseConfig(text, 'f.yaml', {});
        return [];
      } catch (err) {
        return (err as ConfigError).problems.map((p) => `${p.path}: ${p.message}`);
      }
    };
    assert.deepEqual(problems(yaml('{ type: mysql, url: "mysql://u:p@db/app", capture: logical }')), [
      'sources.shop.capture: expected one of: binlog, poll; got "logical"',
    ]);
    assert.deepEqual(problems(yaml('{ type: mysql, url: "mysql://u:p@db:3306" }')), [
      'lenses.items.table: the url of source "shop" names no database; write the table as database.table',
    ]);
    assert.deepEqual(problems(yaml('{ type: mysql, url: "mysql://u:p@db:3306" }', 'other.items')), []);
    assert.deepEqual(problems(yaml('{ type: mysql, url: "mysql://u:p@db/app", serverId: 0, onPurgedPosition: ignore }')), [
      'sources.shop.serverId: expected at least 1, got 0',
      'sources.shop.onPurgedPosition: expected one of: error, resync; got "ignore"',
    ]);
  });
});
