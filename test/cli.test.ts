/** The command line and the operator's view: validate, status, /metrics, /healthz, /readyz. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startPostgres, freePort, type TestPostgres } from './helpers/postgres.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';
import { eventually, killChildren, runCli, spawnDaemon } from './helpers/daemon.js';

let pg: TestPostgres;
let sink: SemilayerServer;

before(async () => {
  [pg, sink] = await Promise.all([startPostgres(), startSemilayerServer()]);
});
after(async () => {
  killChildren();
  await sink?.close();
  await pg?.stop();
});

function configFile(yaml: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'tributary-cli-')), 'tributary.yaml');
  writeFileSync(file, yaml);
  return file;
}

describe('tributary CLI', () => {
  test('--help and unknown commands', async () => {
    const help = await runCli(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.output, /tributary run --config FILE/);
    const runHelp = await runCli(['run', '--help']);
    assert.equal(runHelp.code, 0);
    assert.match(runHelp.output, /SIGTERM/);
    const unknown = await runCli(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.output, /unknown command "frobnicate"/);
    const noConfig = await runCli(['validate'], { TRIBUTARY_CONFIG: '' });
    assert.equal(noConfig.code, 2);
    assert.match(noConfig.output, /missing --config FILE/);
  });

  test('validate and run reject an invalid file with its paths and lines, exit code 2', async () => {
    const file = configFile(`sources:
  app: { type: postgres, url: "postgres://u:hunter2@db/app" }
lenses:
  products:
    source: app
    table: products
    sink: nowhere
    colour: blue
sinks:
  hosted: { type: semilayer, url: "https://api.semilayer.com", key: ik_x }
`);
    for (const command of ['validate', 'run']) {
      const { code, output } = await runCli([command, '--config', file]);
      assert.equal(code, 2, output);
      assert.match(output, /lenses\.products\.colour \(line 8\): unknown key "colour"/);
      assert.match(output, /lenses\.products\.sink \(line 7\): unknown sink "nowhere"; defined sinks: hosted/);
      assert.doesNotMatch(output, /hunter2/);
    }
    const missing = await runCli(['validate', '--config', '/nonexistent/tributary.yaml']);
    assert.equal(missing.code, 2);
    assert.match(missing.output, /does not exist/);
  });

  test('a running daemon: status line, /metrics, /healthz and /readyz', async () => {
    const db = await pg.createDatabase('cli_status');
    await pg.query(db, `CREATE TABLE products (id int PRIMARY KEY, name text)`);
    const port = await freePort();
    const state = mkdtempSync(join(tmpdir(), 'tributary-cli-state-'));
    const file = configFile(`sources:
  app: { type: postgres, url: "${db}", slot: cli_status, publication: cli_status }
lenses:
  products: { source: app, table: products, sink: hosted, initialSync: none, maxWaitMs: 10 }
sinks:
  hosted: { type: semilayer, url: "${sink.url}", key: ik_test }
state: { type: embedded, path: "${state}" }
metrics: { listen: "127.0.0.1:${port}" }
`);
    const validated = await runCli(['validate', '--config', file]);
    assert.equal(validated.code, 0);
    assert.match(validated.output, /valid \(1 source\(s\), 1 lens\(es\), 1 sink\(s\)\)/);

    const daemon = spawnDaemon(await import('node:fs').then((fs) => fs.readFileSync(file, 'utf8')));
    const base = `http://127.0.0.1:${port}`;
    await eventually(async () => (await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200, '/readyz 200', 20_000);
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    await pg.query(db, `INSERT INTO products SELECT g, 'p' FROM generate_series(1, 5) g`);
    await pg.query(db, `UPDATE products SET name = 'q' WHERE id = 1`);
    await eventually(() => sink.lastAction('products').size === 5, 'five products delivered');

    await eventually(async () => {
      const { output } = await runCli(['status', '--config', file, '--lens', 'products']);
      return /^products\s+streaming\s+cursor=[0-9A-F]+\/[0-9A-F]+\s+pending=0\s+rate=[\d.]+ rows\/s\s+dlq=0$/m.test(output);
    }, 'a status line', 10_000);

    const metrics = await (await fetch(`${base}/metrics`)).text();
    assert.match(metrics, /tributary_changes_captured_total\{lens="products"\} 6/);
    assert.match(metrics, /tributary_changes_delivered_total\{lens="products"\} [56]/);
    assert.match(metrics, /tributary_commit_to_delivered_seconds_count\{lens="products"\} [56]/);
    assert.match(metrics, /tributary_batches_total\{lens="products",outcome="delivered"\} \d+/);
    assert.match(metrics, /tributary_replication_lag_bytes\{source="app"\} \d+/);
    assert.match(metrics, /tributary_retained_wal_bytes\{source="app"\} \d+/);
    assert.doesNotMatch(metrics, /ik_test/);

    daemon.child.kill('SIGTERM');
    assert.equal(await daemon.exited, 0);
    assert.doesNotMatch(daemon.output(), /ik_test/, 'the key never reaches the logs');
  });

  test('/healthz fails when a source stopped for good; /readyz when the state store takes no writes', async () => {
    const db = await pg.createDatabase('cli_health');
    await pg.query(db, `CREATE TABLE products (id int PRIMARY KEY, name text)`);
    const port = await freePort();
    const daemon = spawnDaemon(`sources:
  app: { type: postgres, url: "${db}", slot: cli_health, publication: cli_health }
lenses:
  products: { source: app, table: products, sink: hosted, initialSync: none, maxWaitMs: 10 }
sinks:
  hosted: { type: semilayer, url: "${sink.url}", key: ik_test }
state: { type: postgres, url: "${db}", schema: cli_health_state }
metrics: { listen: "127.0.0.1:${port}" }
pipeline: { drainTimeoutMs: 1000 }
`);
    const base = `http://127.0.0.1:${port}`;
    const get = async (path: string) => {
      const res = await fetch(`${base}${path}`).catch(() => undefined);
      return res && { status: res.status, body: (await res.json()) as { reasons?: string[] } };
    };
    await eventually(async () => (await get('/readyz'))?.status === 200, '/readyz 200', 20_000);

    // Status snapshots and positions cannot be saved: not ready, saying why.
    await pg.query(db, `ALTER TABLE cli_health_state.kv RENAME TO kv_gone`);
    await eventually(async () => (await get('/readyz'))?.body.reasons?.some((r) => /state store: cannot write the status snapshot/.test(r)) === true, '/readyz names the state store', 15_000);
    assert.equal((await get('/healthz'))?.status, 200, 'still alive: it streams');
    await pg.query(db, `ALTER TABLE cli_health_state.kv_gone RENAME TO kv`);
    await eventually(async () => (await get('/readyz'))?.status === 200, 'ready again once writes succeed', 15_000);

    // The publication is dropped under the running stream: the source stops for good.
    await pg.query(db, `DROP PUBLICATION cli_health`);
    await pg.query(db, `INSERT INTO products VALUES (1, 'p')`);
    await eventually(async () => {
      const health = await get('/healthz');
      return health?.status === 503 && health.body.reasons?.some((r) => /source app stopped: .*cli_health/.test(r)) === true;
    }, '/healthz 503 naming the source', 20_000);
    daemon.child.kill('SIGTERM');
    await daemon.exited;
  });
});
