/**
 * Trigger capture (capture: trigger), on its own database of the bench cluster:
 *
 * 1. Write overhead on the source: pgbench TPS of single-row inserts into `events` without the
 *    capture triggers (reference) and with them, as a ratio. 4 clients, BENCH_TRIGGER_SECONDS
 *    (default 10) each.
 * 2. Changes/s delivered: the daemon (child process, capture: trigger) delivering the changelog
 *    left by the second run to the loopback sink, from spawn until the sink counted every
 *    change; reference: the daemon with capture: logical delivering the same inserts from a
 *    slot positioned just before that run.
 * 3. pgbench while the daemon delivers live (writers then also send a NOTIFY whenever the
 *    reader sleeps), against the same run with capture: logical and the triggers disabled.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { freePort, type TestPostgres } from '../test/helpers/postgres.js';
import type { SemilayerServer } from '../test/helpers/semilayer-server.js';
import { installTriggers, resolveTables } from '../connectors/postgres/trigger/setup.js';
import { PG_BIN, fmt, progress, spawnDaemonYaml, tempDir, until, type Row } from './lib.js';

const SECONDS = Number(process.env.BENCH_TRIGGER_SECONDS ?? 10);
const CLIENTS = 4;

/** Runs the pgbench `script` for SECONDS and returns its TPS. */
function pgbench(cluster: TestPostgres, dbName: string, script: string): number {
  const file = join(tempDir('pgbench-'), 'script.sql');
  writeFileSync(file, script);
  const args = ['-n', '-h', '127.0.0.1', '-p', String(cluster.port), '-U', 'postgres', '-c', String(CLIENTS), '-j', '2', '-T', String(SECONDS), '-f', file, dbName];
  const res = spawnSync(join(PG_BIN, 'pgbench'), args, { encoding: 'utf8' });
  const tps = /tps = ([\d.]+)/.exec(res.stdout ?? '')?.[1];
  if (res.status !== 0 || !tps) throw new Error(`pgbench failed (${res.status}): ${res.stderr || res.stdout}`);
  return Number(tps);
}

/** Spawns `tributary run` with one lens over `events` into the loopback sink. */
async function spawnLens(sink: SemilayerServer, lens: string, source: string) {
  const metricsPort = await freePort();
  const stateDir = tempDir('state-');
  const yaml = `
sources:
  app: ${source}
lenses:
  ${lens}: { source: app, table: public.events, sink: loopback, initialSync: none, maxBatch: 10000, maxWaitMs: 50 }
sinks:
  loopback: { type: semilayer, url: ${sink.url}, key: ik_test, timeoutMs: 30000 }
state: { type: embedded, path: ${stateDir} }
metrics: { listen: 127.0.0.1:${metricsPort} }
log: { level: info }
`;
  const d = spawnDaemonYaml(yaml, metricsPort, stateDir);
  return {
    d,
    async stop() {
      const code = await d.stop();
      if (code !== 0) throw new Error(`daemon exited with ${code}:\n${d.output().slice(-2000)}`);
    },
  };
}

/** Changes/s of a daemon from spawn until the sink counted `expected` changes of `lens`. */
async function deliveryRate(sink: SemilayerServer, lens: string, source: string, expected: number): Promise<number> {
  const at = performance.now();
  const daemon = await spawnLens(sink, lens, source);
  await until(() => sink.counts(lens) >= expected, `${fmt(expected)} changes at the sink for ${lens} (got ${fmt(sink.counts(lens))})`, 300_000, 20);
  const seconds = (performance.now() - at) / 1000;
  await daemon.stop();
  return expected / seconds;
}

export async function triggerCapture(cluster: TestPostgres, sink: SemilayerServer, rows: Row[]): Promise<void> {
  progress(`trigger capture: pgbench inserts for ${SECONDS} s without and with the triggers, then delivery of the changelog`);
  const name = 'bench_trigger';
  const db = await cluster.createDatabase(name);
  await cluster.query(db, `CREATE TABLE events (id bigserial PRIMARY KEY, account int NOT NULL, amount numeric(10,2), note text)`);
  await cluster.query(db, `CREATE PUBLICATION bench_trigger_ref FOR TABLE events`);
  await cluster.query(db, `SELECT pg_create_logical_replication_slot('bench_trigger_ref', 'pgoutput')`);
  const script = `\\set account random(1, 100000)\nINSERT INTO events (account, amount, note) VALUES (:account, :account / 100.0, 'payment ' || :account);\n`;

  const without = pgbench(cluster, name, script);
  progress(`  without triggers: ${fmt(without)} TPS`);
  await cluster.query(db, `SELECT pg_replication_slot_advance('bench_trigger_ref', pg_current_wal_lsn())`);
  const client = new pg.Client({ connectionString: db });
  await client.connect();
  await installTriggers(client, 'bench', 'tributary', 'app', await resolveTables(client, 'bench', [{ name: 'events', table: 'public.events' }]));
  await client.end();
  const withTriggers = pgbench(cluster, name, script);
  const changes = Number((await cluster.query(db, `SELECT count(*) AS n FROM tributary.changelog`))[0].n);
  progress(`  with triggers, no daemon reading: ${fmt(withTriggers)} TPS (${fmt(changes)} changelog rows)`);

  const triggerRate = await deliveryRate(sink, 'trg', `{ type: postgres, url: "${db}", capture: trigger }`, changes);
  progress(`  trigger capture delivered ${fmt(triggerRate)} changes/s from spawn`);
  const left = Number((await cluster.query(db, `SELECT count(*) AS n FROM tributary.changelog`))[0].n);
  const logicalRate = await deliveryRate(
    sink,
    'trg_ref',
    `{ type: postgres, url: "${db}", capture: logical, slot: bench_trigger_ref, publication: bench_trigger_ref }`,
    changes,
  );
  progress(`  logical capture of the same inserts: ${fmt(logicalRate)} changes/s from spawn; changelog rows left after the trigger daemon: ${left}`);

  // Live: the daemon delivers while pgbench writes (sharing the CPUs with it); the reference is
  // the same with capture: logical and the triggers disabled.
  const writeLive = async (lens: string, source: string) => {
    const rowCount = async () => Number((await cluster.query(db, `SELECT count(*) AS n FROM events`))[0].n);
    const live = await spawnLens(sink, lens, source);
    await live.d.ready;
    const before = await rowCount();
    const tps = pgbench(cluster, name, script);
    const expected = (await rowCount()) - before;
    await until(() => sink.counts(lens) >= expected, `${lens}: the ${fmt(expected)} live changes delivered`, 60_000, 50).catch(async (err) => {
      const left = await cluster.query(db, `SELECT count(*)::int AS n, min(seq)::text AS lo, max(seq)::text AS hi FROM tributary.changelog`).catch(() => []);
      throw new Error(`${err.message}; sink has ${sink.counts(lens)}; changelog ${JSON.stringify(left)}\n${live.d.output().slice(-3000)}`);
    });
    await live.stop();
    return tps;
  };
  await cluster.query(db, `SELECT pg_replication_slot_advance('bench_trigger_ref', pg_current_wal_lsn())`);
  await cluster.query(db, `ALTER TABLE events DISABLE TRIGGER USER`);
  const liveLogical = await writeLive('trg_live_ref', `{ type: postgres, url: "${db}", capture: logical, slot: bench_trigger_ref, publication: bench_trigger_ref }`);
  await cluster.query(db, `SELECT pg_drop_replication_slot('bench_trigger_ref')`);
  await cluster.query(db, `ALTER TABLE events ENABLE TRIGGER USER`);
  const liveTps = await writeLive('trg_live', `{ type: postgres, url: "${db}", capture: trigger }`);
  const liveLeft = Number((await cluster.query(db, `SELECT count(*) AS n FROM tributary.changelog`))[0].n);
  progress(`  delivering live: ${fmt(liveTps)} TPS with trigger capture, ${fmt(liveLogical)} TPS with logical capture`);

  rows.push(
    {
      metric: `Trigger capture: source write TPS (pgbench, ${CLIENTS} clients, single-row inserts), no daemon reading`,
      tributary: `${fmt(withTriggers)} TPS with triggers`,
      reference: `${fmt(without)} TPS without (${fmt(withTriggers / without, 2)}×)`,
      goal: 'info',
      pass: 'info',
    },
    {
      metric: 'Trigger capture: source write TPS while the daemon delivers live (same 2 CPUs)',
      tributary: `${fmt(liveTps)} TPS`,
      reference: `${fmt(liveLogical)} TPS with capture: logical (${fmt(liveTps / liveLogical, 2)}×); ${fmt(without)} TPS with no capture`,
      goal: 'info',
      pass: liveLeft === 0 ? 'info' : 'no',
    },
    {
      metric: `Trigger capture: changes/s delivered from a backlog of ${fmt(changes)}`,
      tributary: `${fmt(triggerRate)} changes/s`,
      reference: `${fmt(logicalRate)} changes/s by capture: logical (${fmt(triggerRate / logicalRate, 2)}×)`,
      goal: 'info',
      pass: left === 0 ? 'info' : 'no',
    },
  );
}
