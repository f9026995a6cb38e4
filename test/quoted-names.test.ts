/**
 * Tables and columns whose names need quoting (spaces, dots, quotes, mixed case), named in the
 * configuration as a user would and loaded through the real config loader: Postgres through
 * logical capture, trigger capture, smart sync and the bundled worker; MariaDB through the
 * binlog and its reader.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres, databaseName, freePort, type TestPostgres } from './helpers/postgres.js';
import { startMariadb, type TestMariadb } from './helpers/mariadb.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';
import { eventually, startTestDaemon } from './helpers/daemon.js';
import { parseConfig } from '../src/config/load.js';
import { createMysqlReader } from '../connectors/mysql/reader.js';

let cluster: TestPostgres;
let maria: TestMariadb;
let sink: SemilayerServer;

before(async () => {
  [cluster, maria, sink] = await Promise.all([startPostgres(), startMariadb(), startSemilayerServer()]);
});
after(async () => {
  await sink?.close();
  await maria?.stop();
  await cluster?.stop();
});

const ORDER_ITEMS = `
  CREATE SCHEMA "Sales";
  CREATE TABLE "Sales"."Order Items" ("Order Id" int, "Line.No" int, "Unit Price" numeric(8,2), "Say ""hi""" text,
                                      "Updated At" timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY ("Order Id", "Line.No"));`;

/** The lens as a user writes it: quoted table, quoted and unquoted column names. */
const LENS = `table: '"Sales"."Order Items"', fields: ['"Say ""hi"""'], metadata: ['Unit Price', '"Order Id"'], changeTrackingColumn: '"Updated At"'`;

/** A fresh database with the table, and a daemon config for it loaded from YAML. */
async function scenario(t: { name: string }, source: string, lensExtra: string, sinkYaml?: string) {
  const name = databaseName(t.name);
  const db = await cluster.createDatabase(name);
  await cluster.query(db, ORDER_ITEMS);
  const lens = `${name}_items`;
  const yaml = `
sources:
  app: { type: postgres, url: "${db}", slot: ${name}, publication: ${name}, triggerSchema: ${name}, ${source} }
lenses:
  ${lens}: { source: app, sink: hosted, initialSync: none, maxWaitMs: 20, ${LENS}${lensExtra} }
sinks:
  hosted: ${sinkYaml ?? `{ type: semilayer, url: "${sink.url}", key: ik_test }`}
state: { type: embedded, path: ./state }
metrics: false
`;
  const config = parseConfig(yaml, join(mkdtempSync(join(tmpdir(), 'tributary-quoted-')), 'tributary.yaml'), {});
  const sql = (text: string) => cluster.query(db, text);
  return { name, db, lens, config, sql };
}

/** Inserts three lines. */
async function insertLines(sql: (text: string) => Promise<unknown>): Promise<void> {
  await sql(`INSERT INTO "Sales"."Order Items" ("Order Id", "Line.No", "Unit Price", "Say ""hi""") VALUES (1, 1, 9.50, 'one'), (1, 2, 3.25, 'two'), (2, 1, 7.00, 'three')`);
}

/** Moves line (1, 2) to a new key and deletes order 2; returns the expected last actions. */
async function changeLines(sql: (text: string) => Promise<unknown>): Promise<Map<string, string>> {
  await sql(`UPDATE "Sales"."Order Items" SET "Line.No" = 3, "Updated At" = clock_timestamp() WHERE "Order Id" = 1 AND "Line.No" = 2`);
  await sql(`DELETE FROM "Sales"."Order Items" WHERE "Order Id" = 2`);
  return new Map([
    ['[1,1]', 'upsert'],
    ['[1,2]', 'delete'],
    ['[1,3]', 'upsert'],
    ['[2,1]', 'delete'],
  ]);
}

async function delivered(lens: string, expected: Map<string, string>, timeoutMs?: number) {
  const wrong = () => [...expected].filter(([id, action]) => sink.lastAction(lens).get(id) !== action);
  await eventually(() => wrong().length === 0, `the last actions of ${lens} (wrong: ${JSON.stringify(wrong())})`, timeoutMs);
}

describe('names that need quoting', () => {
  test('the config keeps one canonical table name and plain column names', async (t) => {
    const s = await scenario(t, 'capture: logical', '');
    const lens = s.config.lenses[s.lens];
    assert.equal(lens.table, 'Sales."Order Items"');
    assert.deepEqual(lens.fields, ['Say "hi"']);
    assert.deepEqual(lens.metadata, ['Unit Price', 'Order Id']);
    assert.equal(lens.changeTrackingColumn, 'Updated At');
  });

  for (const capture of ['logical', 'trigger'] as const) {
    test(`postgres ${capture} capture of "Sales"."Order Items"`, async (t) => {
      const s = await scenario(t, `capture: ${capture}`, '');
      const daemon = await startTestDaemon(s.config);
      await insertLines(s.sql);
      await delivered(s.lens, await changeLines(s.sql));
      assert.equal(await daemon.stop(), 0);
    });
  }

  test('postgres smart sync (polling) of "Sales"."Order Items": the sweep deletes the moved and deleted ids', async (t) => {
    const s = await scenario(t, 'capture: poll', ', syncInterval: 1s, syncOverlap: 1s, smartSyncInterval: 1s');
    await s.sql(`CREATE INDEX ON "Sales"."Order Items" ("Updated At", "Order Id", "Line.No")`);
    const daemon = await startTestDaemon(s.config);
    await insertLines(s.sql);
    await eventually(() => sink.lastAction(s.lens).size === 3, 'the lines polled');
    await delivered(s.lens, await changeLines(s.sql), 20_000);
    assert.equal(await daemon.stop(), 0);
  });

  test('the bundled worker indexes "Sales"."Order Items" with its quoted columns and re-reads changed rows', async (t) => {
    const port = await freePort();
    const s = await scenario(t, 'capture: logical', '', '{ type: worker }');
    s.config.worker = { ...s.config.worker!, listen: `127.0.0.1:${port}`, keys: [{ key: 'sk_search', scope: 'search' }] };
    await s.sql(`INSERT INTO "Sales"."Order Items" ("Order Id", "Line.No", "Unit Price", "Say ""hi""") VALUES (7, 1, 12.00, 'blue ceramic teapot')`);
    const daemon = await startTestDaemon({ ...s.config, lenses: { [s.lens]: { ...s.config.lenses[s.lens], initialSync: 'full' } } });
    const search = async (query: string) =>
      (await (
        await fetch(`http://127.0.0.1:${port}/v1/search/${s.lens}`, {
          method: 'POST',
          headers: { authorization: 'Bearer sk_search', 'content-type': 'application/json' },
          body: JSON.stringify({ query, limit: 3 }),
        })
      ).json()) as { results?: Array<{ sourceRowId: string; metadata: Record<string, unknown> }> };
    try {
      await eventually(async () => (await search('teapot')).results?.[0]?.sourceRowId === '[7,1]', 'the full sync searchable');
      assert.deepEqual((await search('teapot')).results![0].metadata, { 'Unit Price': '12.00', 'Order Id': 7 });
      await s.sql(`UPDATE "Sales"."Order Items" SET "Say ""hi""" = 'green glass vase' WHERE "Order Id" = 7`);
      await eventually(async () => (await search('glass vase')).results?.[0]?.sourceRowId === '[7,1]', 'the update re-read and searchable');
    } finally {
      assert.equal(await daemon.stop(), 0);
    }
  });

  test('mariadb binlog capture and reader of shop.`Order Items` with backticked names', async (t) => {
    const name = databaseName(t.name);
    const url = await maria.createDatabase(name);
    await maria.query('CREATE TABLE `Order Items` (`Order Id` INT, `Line.No` INT, `Unit Price` DECIMAL(8,2), `Say ``hi``` TEXT, PRIMARY KEY (`Order Id`, `Line.No`))', [], name);
    const lens = `${name}_items`;
    const config = parseConfig(
      `
sources:
  app: { type: mysql, url: "${url}", heartbeatMs: 1000 }
lenses:
  ${lens}: { source: app, table: '\`Order Items\`', sink: hosted, initialSync: none, maxWaitMs: 20, fields: ['\`Say \`\`hi\`\`\`'], metadata: ['Unit Price'] }
sinks:
  hosted: { type: semilayer, url: "${sink.url}", key: ik_test }
state: { type: embedded, path: ./state }
metrics: false
`,
      join(mkdtempSync(join(tmpdir(), 'tributary-quoted-mysql-')), 'tributary.yaml'),
      {},
    );
    assert.equal(config.lenses[lens].table, `${name}.\`Order Items\``);
    assert.deepEqual(config.lenses[lens].fields, ['Say `hi`']);
    const daemon = await startTestDaemon(config);
    const q = (text: string) => maria.query(text, [], name);
    await q("INSERT INTO `Order Items` VALUES (1, 1, 9.50, 'one'), (1, 2, 3.25, 'two'), (2, 1, 7.00, 'three')");
    await q('UPDATE `Order Items` SET `Line.No` = 3 WHERE `Order Id` = 1 AND `Line.No` = 2');
    await q('DELETE FROM `Order Items` WHERE `Order Id` = 2');
    await delivered(lens, new Map([['[1,1]', 'upsert'], ['[1,2]', 'delete'], ['[1,3]', 'upsert'], ['[2,1]', 'delete']]));
    assert.equal(await daemon.stop(), 0);

    const reader = await createMysqlReader(url, { lens, table: config.lenses[lens].table, columns: ['Say `hi`', 'Unit Price'] });
    try {
      const rows = await reader.readByIds(['[1,1]', '[2,1]']);
      assert.deepEqual([...rows.keys()], ['[1,1]']);
      assert.equal(rows.get('[1,1]')!['Say `hi`'], 'one');
      assert.deepEqual((await reader.page({ limit: 10 })).map((r) => r.id), ['[1,1]', '[1,3]']);
    } finally {
      await reader.close();
    }
  });
});
