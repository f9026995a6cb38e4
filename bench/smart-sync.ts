/**
 * Smart sync sweeps over a BENCH_SWEEP_ROWS table (default 1,000,000), `tributary run` as a
 * child process on a logical source whose lens has `smartSyncInterval`, to the loopback
 * SemiLayer server.
 *
 * 1. First sweep (no previous snapshot: every row is an upsert), from spawn until
 *    `tributary_sweeps_completed_total` counts it.
 * 2. Second sweep after 1,000 deletes and 1,000 updates, forced with `tributary ingest --mode
 *    full` (the slot delivers them too; the sweep must find exactly those 2,000 changes).
 * References, same run: rows/s of a bare keyset read of the same pages (`ORDER BY id LIMIT
 * 2000`) by node-postgres, no hashing, no snapshot; memory of the naive design (a Map of every
 * id to its row hash) built in the bench process. Peak RSS: VmHWM of the daemon over both sweeps.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { runCli } from '../test/helpers/cli.js';
import { freePort, type TestPostgres } from '../test/helpers/postgres.js';
import type { SemilayerServer } from '../test/helpers/semilayer-server.js';
import { MB, fmt, progress, spawnDaemonYaml, tempDir, until, type Row } from './lib.js';

const ROWS = Number(process.env.BENCH_SWEEP_ROWS ?? 1_000_000);
const CHANGED = 1000;
const PAGE = 2000;
const LENS = 'sweep_items';

export async function smartSync(cluster: TestPostgres, sink: SemilayerServer, rows: Row[]): Promise<void> {
  progress(`smart sync: sweeps over a ${fmt(ROWS)}-row table`);
  const db = await cluster.createDatabase('bench_sweep');
  await cluster.query(
    db,
    `CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, description text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
     INSERT INTO items (id, name, description) SELECT g, 'item ' || g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, ${ROWS}) g`,
  );
  await cluster.query(db, 'VACUUM ANALYZE items');

  // Reference: the same key-order pages read bare.
  const client = new pg.Client({ connectionString: db });
  await client.connect();
  let refStart = performance.now();
  let after = 0;
  let read = 0;
  for (;;) {
    const { rows: page } = await client.query(`SELECT id::text AS key, name, description FROM items WHERE id > $1 ORDER BY id LIMIT ${PAGE}`, [after]);
    read += page.length;
    if (page.length < PAGE) break;
    after = Number(page[page.length - 1].key);
  }
  const refRate = read / ((performance.now() - refStart) / 1000);
  if (read !== ROWS) throw new Error(`the reference read ${read} rows of ${ROWS}`);
  await client.end();
  progress(`  reference: bare keyset read of ${fmt(read)} rows at ${fmt(refRate)} rows/s`);

  const metricsPort = await freePort();
  const stateDir = tempDir('sweep-state-');
  const configFile = join(tempDir('sweep-config-'), 'tributary.yaml');
  const yaml = `
sources:
  app: { type: postgres, url: ${db}, slot: tributary_sweep, publication: tributary_sweep }
lenses:
  ${LENS}:
    source: app
    table: public.items
    fields: [name, description]
    initialSync: none
    smartSyncInterval: 24h
    sink: loopback
sinks:
  loopback: { type: semilayer, url: ${sink.url}, key: ik_test, timeoutMs: 30000 }
state: { type: embedded, path: ${stateDir} }
metrics: { listen: 127.0.0.1:${metricsPort} }
log: { level: info }
`;
  writeFileSync(configFile, yaml); // for `tributary ingest`
  const daemon = spawnDaemonYaml(yaml, metricsPort, stateDir);
  const metric = async (name: string) => (await daemon.metrics()).get(`${name}{lens="${LENS}"}`) ?? 0;
  const start = performance.now();
  await daemon.ready;
  await until(async () => (await metric('tributary_sweeps_completed_total')) >= 1, 'the first sweep', 900_000, 200);
  const firstSeconds = (performance.now() - start) / 1000;
  progress(`  first sweep (every row upserted): ${firstSeconds.toFixed(1)} s = ${fmt(ROWS / firstSeconds)} rows/s, peak RSS ${fmt(daemon.peakRss() / MB, 1)} MB`);

  // Changes the slot would see too; the sweep must find exactly them either way.
  await cluster.query(db, `DELETE FROM items WHERE id % ${Math.floor(ROWS / CHANGED)} = 1; UPDATE items SET name = name || ' v2' WHERE id % ${Math.floor(ROWS / CHANGED)} = 2`);
  refStart = performance.now();
  const forced = await runCli(['ingest', LENS, '--mode', 'full', '--config', configFile]);
  if (forced.code !== 0) throw new Error(`ingest --mode full failed: ${forced.output}`);
  await until(async () => (await metric('tributary_sweeps_completed_total')) >= 2, 'the second sweep', 900_000, 200);
  const secondSeconds = (performance.now() - refStart) / 1000;
  const [upserts, deletes, rss] = [await metric('tributary_sweep_upserts'), await metric('tributary_sweep_deletes'), daemon.peakRss()];
  for (const line of daemon.output().split('\n')) if (line.includes('sweep finished')) progress(`  ${line.slice(0, 300)}`);
  const code = await daemon.stop();
  if (code !== 0) throw new Error(`daemon exited with ${code}:\n${daemon.output().slice(-2000)}`);
  const swept = ROWS - CHANGED;
  const naiveBytes = naiveMapBytes();
  progress(`  second sweep: ${secondSeconds.toFixed(1)} s = ${fmt(swept / secondSeconds)} rows/s; ${fmt(upserts)} upserts, ${fmt(deletes)} deletes; peak RSS ${fmt(rss / MB, 1)} MB`);

  rows.push({
    metric: `Smart sync: first sweep of ${fmt(ROWS)} rows, all upserted (rows/s)`,
    tributary: fmt(ROWS / firstSeconds),
    reference: `bare keyset read ${fmt(refRate)} (${((ROWS / firstSeconds / refRate) * 100).toFixed(0)}%)`,
    goal: '—',
    pass: 'info',
  });
  rows.push({
    metric: `Smart sync: next sweep, ${fmt(CHANGED)} deletes + ${fmt(CHANGED)} updates found (rows/s)`,
    tributary: `${fmt(swept / secondSeconds)} (${fmt(deletes)} deletes, ${fmt(upserts)} upserts)`,
    reference: `bare keyset read ${fmt(refRate)} (${((swept / secondSeconds / refRate) * 100).toFixed(0)}%)`,
    goal: '—',
    pass: deletes === CHANGED && upserts === CHANGED ? 'info' : 'no',
  });
  rows.push({
    metric: `  peak RSS (VmHWM) of the daemon over both sweeps (MB)`,
    tributary: fmt(rss / MB, 1),
    reference: `a Map of ${fmt(ROWS)} ids to row hashes alone: ${fmt(naiveBytes / MB, 1)} MB of heap`,
    goal: '—',
    pass: 'info',
  });
}

/** Heap taken by the naive design's state: every id mapped to its 16-character row hash. */
function naiveMapBytes(): number {
  const before = process.memoryUsage().heapUsed;
  const map = new Map<string, string>();
  for (let i = 1; i <= ROWS; i++) map.set(String(i), `h${i.toString(36).padStart(15, '0')}`);
  const bytes = process.memoryUsage().heapUsed - before;
  if (map.size !== ROWS) throw new Error('unreachable');
  return bytes;
}
