/** The whole daemon on a MariaDB source: kill -9 mid-stream, and the bundled worker end to end. */
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import { parseConfig } from '../src/config/load.js';
import { eventually, killChildren, runCli, spawnCli, spawnDaemon, startTestDaemon, stopDaemon } from './helpers/daemon.js';
import { startMariadb, type TestMariadb } from './helpers/mariadb.js';
import { databaseName, freePort } from './helpers/postgres.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';
import { SEYN_SOURCE_ID, startSeynServer, type SeynServer } from './helpers/seyn-server.js';

let server: TestMariadb;
let sink: SemilayerServer;
let seyn: SeynServer;

before(async () => {
  [server, sink, seyn] = await Promise.all([startMariadb(), startSemilayerServer(), startSeynServer()]);
});
after(async () => {
  killChildren();
  await sink?.close();
  await seyn?.close();
  await server?.stop();
});

/** The position the daemon last saved in its embedded state directory. */
function savedPosition(stateDir: string): string | undefined {
  const file = join(stateDir, 'state.json');
  if (!existsSync(file)) return undefined;
  try {
    return JSON.parse(readFileSync(file, 'utf8'))['position/app'];
  } catch {
    return undefined; // being replaced right now
  }
}

/**
 * A database with an `items` table of `columns`, and the YAML of a daemon streaming it into the
 * loopback sink with embedded state; `extra` adds top-level sections (`pipeline`, `log`).
 */
async function itemsDaemon(t: TestContext, columns: string, extra: Record<string, string>) {
  const name = databaseName(t.name);
  const url = await server.createDatabase(name);
  await server.query(`CREATE TABLE items (${columns})`, [], name);
  const state = mkdtempSync(join(tmpdir(), 'tributary-mysql-'));
  const lens = `${name}_items`;
  const yaml = `
sources:
  app: { type: mysql, url: "${url}", heartbeatMs: 1000 }
lenses:
  ${lens}: { source: app, table: items, sink: hosted, initialSync: none, maxWaitMs: 20 }
sinks:
  hosted: { type: semilayer, url: "${sink.url}", key: ik_test }
state: { type: embedded, path: "${state}" }
metrics: false
${Object.entries(extra).map(([key, value]) => `${key}: ${value}`).join('\n')}
`;
  return { name, url, state, lens, yaml };
}

describe('mysql daemon', () => {
  test('kill -9 mid-stream and restart: every committed change arrives, the final state per id is right', async (t) => {
    const { url, state, lens, yaml } = await itemsDaemon(t, 'id INT PRIMARY KEY, v INT', {
      pipeline: '{ errorRetryMs: 300, drainTimeoutMs: 10000 }',
      log: `{ level: ${process.env.TRIBUTARY_TEST_LOG ?? 'info'} }`,
    });
    // A slow sink keeps batches in flight and unacknowledged when the kill lands.
    sink.respondWith(async (req) => (req.lens === lens ? (await sleep(30), undefined) : undefined));
    let daemon = spawnDaemon(yaml);
    await eventually(() => /"streaming"/.test(daemon.output()), 'the daemon streaming', 20_000);

    const conn = await mysql.createConnection({ uri: url });
    const touched = new Set<string>();
    let killed = false;
    for (let txn = 0; txn < 300; txn++) {
      await conn.query('BEGIN');
      for (let k = 0; k < 5; k++) {
        const id = Math.floor(Math.random() * 200);
        const [result] = (Math.random() < 0.25
          ? await conn.query('DELETE FROM items WHERE id = ?', [id])
          : await conn.query('INSERT INTO items VALUES (?, ?) ON DUPLICATE KEY UPDATE v = v + 1', [id, txn])) as unknown as [{ affectedRows: number }];
        if (result.affectedRows) touched.add(String(id)); // deleting a missing row changes nothing
      }
      await conn.query('COMMIT');
      if (txn === 120) {
        await eventually(() => sink.received(lens).length > 0 && savedPosition(state) !== undefined, 'deliveries and a saved position before the kill');
        daemon.child.kill('SIGKILL');
        await daemon.exited;
        killed = true;
      }
      if (txn === 200) daemon = spawnDaemon(yaml);
    }
    assert.ok(killed);
    const [rows] = (await conn.query('SELECT id FROM items')) as unknown as [Array<{ id: number }>];
    await conn.end();
    const live = new Set(rows.map((r) => String(r.id)));
    const expected = new Map([...touched].map((id) => [id, live.has(id) ? 'upsert' : 'delete']));
    const wrong = () => {
      const last = sink.lastAction(lens);
      return [...expected].filter(([id, action]) => last.get(id) !== action).map(([id, action]) => `${id}: want ${action}, got ${last.get(id)}`);
    };
    await eventually(() => wrong().length === 0, 'the final state of every touched id', 30_000).catch((err) => {
      throw new Error(`${err.message}: ${wrong().join('; ')}\n${daemon.output().slice(-3000)}`);
    });
    daemon.child.kill('SIGTERM');
    assert.equal(await daemon.exited, 0);
    assert.match(savedPosition(state)!, /^mysql-bin\.\d+:\d+@0-1-\d+$/, 'file:pos@gtid');
    sink.respondWith(undefined);
  });

  test('a MariaDB commit becomes a search hit of the bundled worker, which re-reads rows through the MySQL reader', async (t) => {
    const name = databaseName(t.name);
    const url = await server.createDatabase(name);
    await server.query(
      `CREATE TABLE products (id BIGINT UNSIGNED PRIMARY KEY, name VARCHAR(80), description TEXT, price DECIMAL(8,2));
       INSERT INTO products VALUES (1, 'Trail Running Shoe', 'Lightweight shoe for running on trails', 129.00),
                                   (2, 'Cast Iron Skillet', 'Heavy skillet that holds heat', 39.50),
                                   (3, 'Rain Jacket', 'Waterproof breathable jacket', 99.99)`,
      [],
      name,
    );
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'tributary-mysql-e2e-'));
    const config = parseConfig(
      `
sources:
  shop: { type: mysql, url: "${url}" }
lenses:
  products: { source: shop, table: products, sink: local, fields: [name, description], metadata: [name, price], maxWaitMs: 10 }
sinks:
  local: { type: worker }
worker:
  listen: 127.0.0.1:${port}
  keys: [{ key: sk_search_key, scope: search }]
state: { type: embedded, path: ./state }
metrics: false
`,
      join(dir, 'tributary.yaml'),
      {},
    );
    assert.equal(config.lenses.products.table, `${name}.products`, 'a bare table is in the url database');
    const daemon = await startTestDaemon(config);
    try {
      const search = async (query: string) =>
        (await (
          await fetch(`http://127.0.0.1:${port}/v1/search/products`, {
            method: 'POST',
            headers: { authorization: 'Bearer sk_search_key', 'content-type': 'application/json' },
            body: JSON.stringify({ query, limit: 3 }),
          })
        ).json()) as { results: Array<{ sourceRowId: string; metadata: Record<string, unknown> }> };

      await eventually(async () => (await search('cast iron skillet')).results?.[0]?.sourceRowId === '2', 'the initial full sync searchable');
      await server.query(`INSERT INTO products VALUES (18446744073709551615, 'Espresso Grinder', 'Conical burr grinder for espresso', 249.00)`, [], name);
      await eventually(async () => (await search('burr grinder espresso')).results?.[0]?.sourceRowId === '18446744073709551615', 'the new row searchable');
      assert.deepEqual((await search('burr grinder espresso')).results[0].metadata, { name: 'Espresso Grinder', price: '249.00' });
      await server.query(`UPDATE products SET description = 'Conical burr grinder for pour-over coffee' WHERE id = 18446744073709551615`, [], name);
      await eventually(async () => (await search('pour-over coffee')).results?.[0]?.sourceRowId === '18446744073709551615', 'the update searchable');
      await server.query(`DELETE FROM products WHERE id = 18446744073709551615`, [], name);
      await eventually(async () => !(await search('burr grinder')).results.some((r) => r.sourceRowId === '18446744073709551615'), 'the deleted row gone');
    } finally {
      assert.equal(await daemon.stop(), 0);
    }
  });

  test('a payload sink gets MySQL values typed as from Postgres: exact numbers, ISO 8601 UTC times, JSON, base64', async (t) => {
    const name = databaseName(t.name);
    const url = await server.createDatabase(name);
    await server.query(
      `CREATE TABLE deals (id BIGINT PRIMARY KEY, amount DECIMAL(12,2), big BIGINT UNSIGNED, score DOUBLE, meta JSON, blob_c VARBINARY(8),
        created DATETIME(3), seen TIMESTAMP(6) NULL, due DATE);
       SET time_zone = '+00:00';
       INSERT INTO deals VALUES (1, 42000.50, 18446744073709551615, 0.25, '{"owner":"jane","tags":[1,2]}', X'deadbeef', '2026-06-10 14:03:00.5', '2026-06-10 14:03:00.123456', '2026-07-01')`,
      [],
      name,
    );
    const config = parseConfig(
      `
sources:
  app: { type: mysql, url: "${url}", heartbeatMs: 1000 }
lenses:
  ${name}: { source: app, table: deals, sink: seyn, initialSync: full, maxWaitMs: 20 }
sinks:
  seyn: { type: seyn, url: "${seyn.url}", key: sk_live_test, sourceId: ${SEYN_SOURCE_ID} }
state: { type: embedded, path: ./state }
metrics: false
`,
      join(mkdtempSync(join(tmpdir(), 'tributary-mysql-seyn-')), 'tributary.yaml'),
      {},
    );
    const daemon = await startTestDaemon(config);
    try {
      const expected = (id: number) => ({
        id,
        amount: 42000.5,
        big: '18446744073709551615',
        score: 0.25,
        meta: { owner: 'jane', tags: [1, 2] },
        blob_c: '3q2+7w==',
        created: '2026-06-10T14:03:00.500Z',
        seen: '2026-06-10T14:03:00.123Z',
        due: '2026-07-01',
      });
      await eventually(() => seyn.latest(name).has('1'), 'the row of the full sync');
      assert.deepEqual(seyn.latest(name).get('1')!.payload, expected(1), 'read in pages (full sync)');
      await server.query(`SET time_zone = '+00:00'; INSERT INTO deals SELECT 2, amount, big, score, meta, blob_c, created, seen, due FROM deals WHERE id = 1`, [], name);
      await eventually(() => seyn.latest(name).has('2'), 'the row inserted later');
      assert.deepEqual(seyn.latest(name).get('2')!.payload, expected(2), 'read by id (a live change)');
    } finally {
      assert.equal(await daemon.stop(), 0);
    }
  });

  test('capture: poll on MySQL reads new and changed rows by their changeTrackingColumn', async (t) => {
    const name = databaseName(t.name);
    const url = await server.createDatabase(name);
    await server.query('CREATE TABLE notes (id INT PRIMARY KEY, body TEXT, updated_at DATETIME(6) NOT NULL DEFAULT NOW(6) ON UPDATE NOW(6))', [], name);
    const lens = `${name}_notes`;
    const config = parseConfig(
      `
sources:
  app: { type: mysql, url: "${url}", capture: poll }
lenses:
  ${lens}: { source: app, table: notes, sink: hosted, changeTrackingColumn: updated_at, syncInterval: 1s, syncOverlap: 1s, initialSync: none, maxWaitMs: 10 }
sinks:
  hosted: { type: semilayer, url: "${sink.url}", key: ik_test }
state: { type: embedded, path: ./state }
metrics: false
`,
      join(mkdtempSync(join(tmpdir(), 'tributary-mysql-poll-')), 'tributary.yaml'),
      {},
    );
    const daemon = await startTestDaemon(config);
    try {
      await server.query(`INSERT INTO notes (id, body) VALUES (1, 'one'), (2, 'two')`, [], name);
      await eventually(() => ['1', '2'].every((id) => sink.lastAction(lens).get(id) === 'upsert'), 'the new rows polled');
      const before = sink.received(lens).filter((c) => c.id === '2').length;
      await server.query(`UPDATE notes SET body = 'two!' WHERE id = 2`, [], name);
      await eventually(() => sink.received(lens).filter((c) => c.id === '2').length > before, 'the changed row polled again');
    } finally {
      assert.equal(await daemon.stop(), 0);
    }
  });
  test('a purged binlog position: the lens shows error across restarts until `tributary ingest --mode full` re-reads it', async (t) => {
    const { name, lens, yaml } = await itemsDaemon(t, 'id INT PRIMARY KEY', { log: '{ level: warn }' });
    let daemon = spawnDaemon(yaml);
    const configFile = daemon.child.spawnargs.at(-1)!;
    const status = async () => (await runCli(['status', '--config', configFile, '--lens', lens])).output;
    await eventually(async () => /\bstreaming\b/.test(await status()), 'the daemon streaming', 20_000);
    await server.query('INSERT INTO items VALUES (1)', [], name);
    await eventually(() => sink.lastAction(lens).has('1'), 'row 1 delivered', 20_000);
    await stopDaemon(daemon);

    await server.query('INSERT INTO items VALUES (2)', [], name); // lost with the purged file
    const [{ File: current }] = await server.query('SHOW MASTER STATUS');
    await server.query('FLUSH BINARY LOGS');
    const [{ File: next }] = await server.query('SHOW MASTER STATUS');
    // The server keeps a file while a dump thread still reads it: purge until it is gone.
    await eventually(async () => {
      await server.query(`PURGE BINARY LOGS TO '${next}'`);
      return !(await server.query('SHOW BINARY LOGS')).some((f) => f.Log_name === current);
    }, `${current} purged`);

    daemon = spawnCli(['run', '--config', configFile]);
    await eventually(async () => /\berror\b.*no longer on the server.*--mode full/.test(await status()), 'status shows the lens in error with the recovery', 20_000);
    await server.query('INSERT INTO items VALUES (3)', [], name);
    await eventually(() => sink.lastAction(lens).has('3'), 'streaming goes on meanwhile');
    assert.equal(sink.lastAction(lens).has('2'), false);
    await stopDaemon(daemon);

    daemon = spawnCli(['run', '--config', configFile]);
    await eventually(async () => /\berror\b.*no longer on the server/.test(await status()) && !/may not be running/.test(await status()), 'still in error after a restart', 20_000);
    const fullSyncs = () => sink.requests.filter((r) => r.lens === lens && r.mode === 'full').length;
    const ingest = await runCli(['ingest', lens, '--mode', 'full', '--config', configFile], { TRIBUTARY_CONTROL_WAIT_MS: '20000' });
    assert.equal(ingest.code, 0, ingest.output);
    await eventually(() => fullSyncs() === 1, 'the full sync requested from the sink');
    await eventually(async () => /\bstreaming\b/.test(await status()) && !/no longer on the server/.test(await status()), 'the lens is healthy once the full sync was accepted');
    await stopDaemon(daemon);
  });
});
