/**
 * PostgreSQL 15 and 17 in the same run (BENCH_PG_VERSIONS, default `15 17`), each on its own
 * throwaway cluster: WAL → delivered throughput of a backlog of BENCH_VERSION_ROWS inserts
 * (default 200,000) and commit → delivered p99 at 2,000 single-row transactions/s. The reference
 * is that version's own server-side decoding rate: pg_logical_slot_peek_binary_changes over the
 * same backlog WAL, timed (the npm server binaries ship no pg_recvlogical).
 */
import pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { startPostgres, type PgVersion, type TestPostgres } from '../test/helpers/postgres.js';
import { startSemilayerServer } from '../test/helpers/semilayer-server.js';
import { fmt, percentile, progress, startDaemonChild, until, type Row } from './lib.js';

const VERSIONS = (process.env.BENCH_PG_VERSIONS ?? '15 17').split(/\s+/).filter(Boolean) as PgVersion[];
const ROWS = Number(process.env.BENCH_VERSION_ROWS ?? 200_000);
const RATE = 2_000; // single-row transactions/s
const SECONDS = 5;

export async function postgresVersions(rows: Row[]): Promise<void> {
  for (const version of VERSIONS) {
    const cluster = await startPostgres({ version, settings: { track_commit_timestamp: 'on', max_wal_size: "'4GB'", shared_buffers: "'256MB'" } });
    try {
      progress(`PostgreSQL ${version} (${cluster.server.from}: ${cluster.server.bin})`);
      const { rate, decodeRate } = await throughput(cluster, version);
      const p99 = await latencyP99(cluster, version);
      rows.push({
        metric: `PostgreSQL ${version}: WAL → delivered, backlog of ${fmt(ROWS)} inserts (changes/s, from spawn)`,
        tributary: fmt(rate),
        reference: `server-side decoding ${fmt(decodeRate)}`,
        goal: `${(rate / decodeRate).toFixed(2)} of decoding`,
        pass: 'info',
      });
      rows.push({
        metric: `PostgreSQL ${version}: commit → delivered p99 at ${fmt(RATE)} tx/s, maxWaitMs 20 (ms)`,
        tributary: fmt(p99, 1),
        reference: `server-side decoding ${fmt(decodeRate)} changes/s`,
        goal: `${fmt((p99 / 1000) * decodeRate)} changes' decoding time`,
        pass: 'info',
      });
    } finally {
      await cluster.stop();
    }
  }
}

/** The daemon's rate over a backlog, and the server's own decoding rate of the same WAL. */
async function throughput(cluster: TestPostgres, version: string): Promise<{ rate: number; decodeRate: number }> {
  const db = await cluster.createDatabase('bench_versions');
  await cluster.query(db, `CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, description text, price numeric(10,2))`);
  const sink = await startSemilayerServer({ recordChanges: false });
  try {
    const options = { dbUrl: db, sinkUrl: sink.url, slot: 'tributary_versions', lens: 'items', table: 'items', maxWaitMs: 50 };
    const first = await startDaemonChild(options);
    await first.ready;
    await first.stop();
    await cluster.query(db, `SELECT pg_create_logical_replication_slot('bench_decode', 'pgoutput')`);
    await cluster.query(
      db,
      // Flushed at commit: walsenders and the SQL decoding functions read only flushed WAL.
      `SET synchronous_commit = on; INSERT INTO items SELECT g, 'item ' || g, md5(g::text) || ' ' || md5((g + 1)::text), (g % 1000) / 10.0
         FROM generate_series(1, ${ROWS}) g`,
    );
    const endpos = (await cluster.query(db, 'SELECT pg_current_wal_lsn()::text AS lsn'))[0].lsn as string;

    let at = performance.now();
    const [decoded] = await cluster.query(
      db,
      `SELECT count(*) FILTER (WHERE get_byte(data, 0) = 73)::int AS inserts
         FROM pg_logical_slot_peek_binary_changes('bench_decode', '${endpos}', NULL, 'proto_version', '1', 'publication_names', 'tributary_versions')`,
    );
    const decodeRate = ROWS / ((performance.now() - at) / 1000);
    await cluster.query(db, `SELECT pg_drop_replication_slot('bench_decode')`);
    progress(`  server-side decoding: ${fmt(decoded.inserts)} inserts at ${fmt(decodeRate)} changes/s`);

    at = performance.now();
    const d = await startDaemonChild({ ...options, stateDir: first.stateDir });
    await until(() => sink.counts('items') >= ROWS, `${fmt(ROWS)} changes at the sink on ${version}`, 180_000);
    const rate = ROWS / ((performance.now() - at) / 1000);
    await d.stop();
    progress(`  tributary: ${fmt(rate)} changes/s from spawn (${(rate / decodeRate).toFixed(2)} of decoding)`);
    return { rate, decodeRate };
  } finally {
    await sink.close();
  }
}

/** p99 of sink receive time minus commit timestamp, at RATE single-row transactions/s. */
async function latencyP99(cluster: TestPostgres, version: string): Promise<number> {
  const db = await cluster.createDatabase('bench_versions_lat');
  await cluster.query(db, `CREATE TABLE lat (id bigint PRIMARY KEY, payload text NOT NULL)`);
  const sink = await startSemilayerServer({ recordChanges: true });
  try {
    const d = await startDaemonChild({ dbUrl: db, sinkUrl: sink.url, slot: 'tributary_versions_lat', lens: 'lat', table: 'lat', maxWaitMs: 20 });
    await d.ready;
    const writer = new pg.Client({ connectionString: db });
    await writer.connect();
    await writer.query('SET synchronous_commit = on');
    const perTick = RATE / 100; // every 10 ms
    const total = RATE * SECONDS;
    const start = performance.now();
    for (let tick = 0, id = 0; id < total; tick++) {
      const wait = start + tick * 10 - performance.now();
      if (wait > 0) await sleep(wait);
      let sql = '';
      for (let i = 0; i < perTick; i++) sql += `BEGIN;INSERT INTO lat VALUES (${++id}, 'row ${id}');COMMIT;`;
      await writer.query(sql);
    }
    await writer.end();
    await until(() => sink.counts('lat') >= total, `${fmt(total)} changes at the sink on ${version}`, 60_000);
    await d.stop();
    const committed = new Map<string, number>();
    for (const row of await cluster.query(db, `SELECT id::text, extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000 AS ms FROM lat`)) {
      committed.set(row.id, Number(row.ms));
    }
    const latencies: number[] = [];
    for (const req of sink.requests) {
      for (const c of req.lens === 'lat' ? (req.changes ?? []) : []) if (Number(c.id) > RATE) latencies.push(req.receivedAt - committed.get(c.id)!);
    }
    latencies.sort((a, b) => a - b);
    const p99 = percentile(latencies, 0.99);
    progress(`  commit → delivered: p50 ${fmt(percentile(latencies, 0.5), 1)} ms, p99 ${fmt(p99, 1)} ms over ${fmt(latencies.length)} changes`);
    return p99;
  } finally {
    await sink.close();
  }
}
