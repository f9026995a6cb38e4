/**
 * The psykhe sink end to end: a daemon (in-process, or a child process that is killed)
 * captures a throwaway Postgres and feeds a loopback Psykhe ingestion API that checks every
 * line and header. Each scenario has its own key, so its own catalog.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../src/config/load.js';
import type { Config, LensConfig } from '../src/config/types.js';
import { ConfigError } from '../src/errors.js';
import { eventually, killChildren, runCli, spawnCli, startTestDaemon, stopDaemon, testConfig } from './helpers/daemon.js';
import { databaseName, startPostgres, type TestPostgres } from './helpers/postgres.js';
import { startPsykheServer, type PsykheServer } from './helpers/psykhe-server.js';

let cluster: TestPostgres;
let psykhe: PsykheServer;

before(async () => {
  [cluster, psykhe] = await Promise.all([startPostgres(), startPsykheServer()]);
});
after(async () => {
  killChildren();
  await psykhe?.close();
  await cluster?.stop();
});

const PRODUCTS = `CREATE TABLE products (sku text PRIMARY KEY, title text NOT NULL, price numeric(10,2), hidden text)`;
const PAYLOAD = { product_identifier: 'sku', title: 'title', price: 'price' };
const insertProducts = (from: number, to: number) => `INSERT INTO products SELECT 'p' || g, 'Product ' || g, g + 0.5 FROM generate_series(${from}, ${to}) g`;

async function scenario(title: string, lens: Partial<LensConfig> = {}, sink: Record<string, unknown> = {}) {
  const name = databaseName(`psykhe ${title}`);
  const db = await cluster.createDatabase(name);
  const sql = (text: string) => cluster.query(db, text);
  await sql(PRODUCTS);
  const config = testConfig({ dbUrl: db, sinkUrl: psykhe.url, slot: name, lenses: { [name]: { table: 'products', payload: PAYLOAD, ...lens } } });
  const key = `sk_test_${name}`;
  config.sinks.hosted = { type: 'psykhe', url: psykhe.url, key, resyncAfter: '1s', gzip: true, maxRequestBytes: 8 << 20, timeoutMs: 5000, ...sink } as Config['sinks'][string];
  const requests = () => psykhe.requests.filter((r) => r.key === key);
  const active = () => [...psykhe.catalog(key)].filter(([, p]) => p.active).map(([id]) => id);
  return { name, db, sql, config, key, requests, active, catalog: () => psykhe.catalog(key) };
}

test('first start streams the whole table as one gzip soft_replace; live changes go as insert; status keeps the last ingestion_id', async () => {
  const { sql, config, name, requests, active, catalog } = await scenario('first start');
  await sql(insertProducts(1, 2500));
  const daemon = await startTestDaemon(config);
  await eventually(() => active().length === 2500, 'the whole catalog');
  const [full] = requests();
  assert.equal(full.mode, 'soft_replace');
  assert.equal(full.headers['content-encoding'], 'gzip');
  assert.equal(full.headers['content-type'], 'application/x-ndjson');
  assert.equal(full.ids.length, 2500, 'one request for three pages of rows');
  assert.deepEqual(catalog().get('p7')!.data, { product_identifier: 'p7', title: 'Product 7', price: 7.5 });

  await sql(`INSERT INTO products VALUES ('p9000', 'New', 1.25, 'x'); UPDATE products SET title = 'Renamed' WHERE sku = 'p1'`);
  await eventually(() => catalog().get('p9000')?.active === true && catalog().get('p1')?.data.title === 'Renamed', 'live changes');
  assert.ok(requests().slice(1).every((r) => r.mode === 'insert' && r.status === 200));
  const status = () => daemon.status().lenses.find((l) => l.lens === name)!;
  await eventually(() => status().sink?.lastIngestionId === requests().at(-1)!.ingestionId, 'the last ingestion_id in status');
  assert.equal(status().sink?.fullSync?.state, 'done');
  assert.equal(status().sink?.fullSync?.rows, 2500);
  assert.equal(await daemon.stop(), 0);
});

test('deletes schedule one coalesced soft_replace, later, that deactivates exactly the deleted products', async () => {
  const { sql, config, name, requests, active, catalog } = await scenario('deletes', {}, { resyncAfter: '2s' });
  await sql(insertProducts(1, 30));
  const daemon = await startTestDaemon(config);
  await eventually(() => active().length === 30, 'the catalog');
  await sql(`DELETE FROM products WHERE sku = 'p3'`);
  const status = () => daemon.status().lenses.find((l) => l.lens === name)!;
  await eventually(() => status().sink?.resyncAt !== undefined, 'a soft_replace scheduled');
  await sql(`DELETE FROM products WHERE sku = 'p4'`);
  await sql(`UPDATE products SET title = 'kept' WHERE sku = 'p5'`);
  await eventually(() => catalog().get('p3')?.active === false && catalog().get('p4')?.active === false, 'both deactivated', 10_000);
  const replaces = requests().filter((r) => r.mode === 'soft_replace');
  assert.equal(replaces.length, 2, 'the first start, and one for both deletes');
  assert.deepEqual(replaces[1].deactivated!.sort(), ['p3', 'p4']);
  assert.equal(active().length, 28);
  assert.equal(catalog().get('p5')!.data.title, 'kept');
  await eventually(() => status().sink?.resyncAt === undefined, 'nothing scheduled any more');
  assert.equal(await daemon.stop(), 0);
});

test('a batch over maxRequestBytes goes as several inserts at once; a 503 on one sends the batch again and every product arrives', async () => {
  // maxWaitMs: the 3,000 rows of one transaction make one batch (about 3.3 MB of JSONL).
  const lens = { initialSync: 'none', maxWaitMs: 1000, payload: { ...PAYLOAD, description: 'hidden' } } as const;
  const { sql, config, key, requests, active } = await scenario('concurrent', lens, { maxRequestBytes: 1 << 20 });
  const daemon = await startTestDaemon(config);
  psykhe.setDelay(300);
  let failures = 1;
  psykhe.respondWith((req) => (req.key === key && failures-- > 0 ? { status: 503, body: { errors: [{ code: 'unavailable', message: 'try later' }], meta: null, data: null } } : undefined));
  try {
    await sql(`INSERT INTO products SELECT 'p' || g, 'Product ' || g, g, repeat('x', 1000) FROM generate_series(1, 3000) g`);
    await eventually(() => active().length === 3000, 'every product', 30_000);
  } finally {
    psykhe.respondWith(undefined);
    psykhe.setDelay(0);
  }
  const sizes = requests().map((r) => r.ids.length);
  assert.ok(requests().every((r) => r.mode === 'insert' && r.ids.length < 1000), `inserts of at most 1 MiB: ${sizes}`);
  const first = requests().slice(0, 4).map((r) => r.receivedAt);
  assert.ok(Math.max(...first) - Math.min(...first) < 300, `the first 4 inserts (of ${sizes} products) arrived within ${Math.max(...first) - Math.min(...first)} ms, not one answer (300 ms) apart`);
  assert.equal(requests()[0].status, 503);
  assert.equal(await daemon.stop(), 0);
});

test('payload_too_large splits an insert batch in halves until it passes', async () => {
  const { sql, config, requests, active } = await scenario('split', { initialSync: 'none' });
  const daemon = await startTestDaemon(config);
  psykhe.setMaxBodyBytes(1500);
  try {
    await sql(insertProducts(1, 40));
    await eventually(() => active().length === 40, 'every product');
    const answers = requests().map((r): [number, number] => [r.status ?? 0, r.ids.length]);
    assert.deepEqual(answers[0], [413, 40]);
    assert.ok(answers.some(([status, n]) => status === 413 && n === 20), JSON.stringify(answers));
    assert.equal(answers.filter(([status]) => status === 200).reduce((n, [, ids]) => n + ids, 0), 40);
  } finally {
    psykhe.setMaxBodyBytes(64 << 20);
  }
  assert.equal(await daemon.stop(), 0);
});

test('a catalog too large for one request puts the lens in error, saying so; 401 too', async () => {
  const big = await scenario('too large');
  await big.sql(insertProducts(1, 300));
  psykhe.setMaxBodyBytes(4000);
  try {
    const daemon = await startTestDaemon(big.config);
    const status = () => daemon.status().lenses.find((l) => l.lens === big.name)!;
    await eventually(() => status().state === 'error', 'the lens in error');
    assert.match(status().lastError ?? '', /413 \(payload_too_large: Payload is too large\).*whole catalog .*too large for one soft_replace request/);
    psykhe.setMaxBodyBytes(64 << 20);
    await eventually(() => big.active().length === 300, 'the catalog once Psykhe takes it');
    assert.equal(await daemon.stop(), 0);
  } finally {
    psykhe.setMaxBodyBytes(64 << 20);
  }

  const auth = await scenario('auth', { initialSync: 'none' });
  const daemon = await startTestDaemon(auth.config);
  let failing = true;
  psykhe.respondWith((req) => (failing && req.key === auth.key ? { status: 401 } : undefined));
  await auth.sql(insertProducts(1, 1));
  const status = () => daemon.status().lenses.find((l) => l.lens === auth.name)!;
  await eventually(() => status().state === 'error', 'the lens in error');
  assert.match(status().lastError ?? '', /HTTP 401: the API key is missing or invalid/);
  assert.doesNotMatch(status().lastError ?? '', new RegExp(auth.key));
  failing = false;
  await eventually(() => auth.active().length === 1, 'delivered once the key passes');
  psykhe.respondWith(undefined);
  assert.equal(await daemon.stop(), 0);
});

test('gzip: false sends plain JSONL', async () => {
  const { sql, config, requests, active } = await scenario('plain', {}, { gzip: false });
  await sql(insertProducts(1, 3));
  const daemon = await startTestDaemon(config);
  await eventually(() => active().length === 3, 'the catalog');
  assert.equal(requests()[0].headers['content-encoding'], undefined);
  assert.equal(await daemon.stop(), 0);
});

test('kill -9 mid-request, and with a soft_replace scheduled: a restart loses nothing', async () => {
  const name = databaseName('psykhe kill');
  const db = await cluster.createDatabase(name);
  const sql = (text: string) => cluster.query(db, text);
  await sql(`${PRODUCTS}; ${insertProducts(1, 3000)}`);
  const key = `sk_test_${name}`;
  const file = writeYaml(name, db, key);
  const catalog = () => psykhe.catalog(key);
  const active = () => [...catalog()].filter(([, p]) => p.active).length;

  // 1. Killed while its soft_replace waits for Psykhe's answer (Psykhe applied it; Tributary cannot know).
  psykhe.setDelay(5000);
  let daemon = spawnCli(['run', '--config', file]);
  await eventually(() => psykhe.requests.some((r) => r.key === key && r.mode === 'soft_replace'), 'the soft_replace sent', 30_000);
  daemon.child.kill('SIGKILL');
  await daemon.exited;
  psykhe.setDelay(0);
  await sql(`INSERT INTO products VALUES ('p5000', 'while down', 1)`);
  daemon = spawnCli(['run', '--config', file]);
  await eventually(() => active() === 3001, 'the whole catalog after the restart', 30_000);

  // 2. Killed after a delete was accepted, before its soft_replace ran.
  await sql(`DELETE FROM products WHERE sku = 'p10'`);
  const cli = (args: string[]) => runCli([...args, '--config', file]);
  await eventually(async () => /soft-replace-at=/.test((await cli(['status', '--lens', name])).output), 'status shows the scheduled soft_replace', 20_000);
  daemon.child.kill('SIGKILL');
  await daemon.exited;
  daemon = spawnCli(['run', '--config', file]);
  try {
    await eventually(() => catalog().get('p10')?.active === false, 'the delete applied after the restart', 30_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${daemon.output()}`);
    });
    assert.equal(active(), 3000);
  } finally {
    await stopDaemon(daemon);
  }
});

test('bad configs: two lenses on one psykhe sink, a bad resyncAfter, a bad gzip', () => {
  const yaml = (sink: string, lenses = 'a: { source: app, table: t, sink: s }') => `
sources: { app: { type: postgres, url: "postgres://x" } }
lenses: { ${lenses} }
sinks:
  s: ${sink}
`;
  const problems = (text: string) => {
    try {
      parseConfig(text, 'tributary.yaml', {});
    } catch (err) {
      return (err as ConfigError).problems.map((p) => `${p.path}: ${p.message}`).join('\n');
    }
    return '';
  };
  const ok = '{ type: psykhe, url: "https://api.psykhe.dev", key: k }';
  assert.equal(problems(yaml(ok)), '');
  assert.match(problems(yaml(ok, 'a: { source: app, table: t, sink: s }, b: { source: app, table: u, sink: s }')), /sinks\.s: a psykhe sink feeds one catalog, but lenses a, b use sink "s"/);
  assert.match(problems(yaml('{ type: psykhe, url: "https://api.psykhe.dev", key: k, resyncAfter: soon }')), /sinks\.s\.resyncAfter: .*duration like 30s/);
  assert.match(problems(yaml('{ type: psykhe, url: "https://api.psykhe.dev", key: k, gzip: maybe }')), /sinks\.s\.gzip/);
  assert.match(problems(yaml('{ type: psykhe, url: "https://api.psykhe.dev" }')), /sinks\.s\.key: missing required key "key"/);
});

/** A config file: one lens `name` on `products` to the loopback Psykhe, state in a temp dir. */
function writeYaml(name: string, db: string, key: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-psykhe-'));
  const file = join(dir, 'tributary.yaml');
  writeFileSync(
    file,
    `sources:
  app: { type: postgres, url: "${db}", capture: logical, slot: ${name}, publication: ${name} }
lenses:
  ${name}: { source: app, table: products, sink: s, maxWaitMs: 20, payload: { product_identifier: sku, title: title, price: price } }
sinks:
  s: { type: psykhe, url: "${psykhe.url}", key: ${key}, resyncAfter: 4s }
state: { type: embedded, path: "${join(dir, 'state')}" }
metrics: false
log: { level: warn }
pipeline: { drainTimeoutMs: 2000 }
`,
  );
  return file;
}
