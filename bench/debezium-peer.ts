/**
 * The peer comparison: Debezium Server (its HTTP sink, one POST per event; JSON without schemas)
 * and Tributary (logical capture, the semilayer sink: batches of ids) read the same Postgres WAL,
 * each through its own slot, at the same time, into one loopback HTTP receiver that notes when
 * each id arrived from each.
 *
 * - Throughput: BENCH_PEER_ROWS inserts (default 50,000) committed at once; each reader's rate
 *   from the commit until it delivered them all. Goal: Tributary ≥ 3× Debezium Server.
 * - Latency: 500 single-row transactions a second for 10 s; commit → received p99 of each.
 *   Goal: Tributary's ≤ 0.5× Debezium Server's.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { startDebezium } from '../test/helpers/debezium.js';
import { freePort, type TestPostgres } from '../test/helpers/postgres.js';
import { fmt, percentile, progress, spawnDaemonYaml, tempDir, until, type Row } from './lib.js';

const ROWS = Number(process.env.BENCH_PEER_ROWS ?? 50_000);
const LATENCY_RATE = 500;
const LATENCY_SECONDS = 10;

type Reader = 'debezium' | 'tributary';

/** The loopback receiver: when each id first arrived from each reader. */
async function startReceiver() {
  const arrived: Record<Reader, Map<string, number>> = { debezium: new Map(), tributary: new Map() };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const at = performance.now();
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null');
      if (req.url === '/debezium') {
        const id = body?.after?.id ?? body?.payload?.after?.id;
        if (id !== undefined && !arrived.debezium.has(String(id))) arrived.debezium.set(String(id), at);
      } else {
        for (const c of body?.changes ?? []) if (!arrived.tributary.has(c.id)) arrived.tributary.set(c.id, at);
      }
      res.writeHead(req.url === '/debezium' ? 200 : 202, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, arrived, close: () => new Promise<void>((resolve) => (server.close(() => resolve()), server.closeAllConnections())) };
}

export async function debeziumPeer(cluster: TestPostgres, rows: Row[]): Promise<void> {
  progress(`peer: Debezium Server and Tributary reading the same WAL into one loopback receiver`);
  const name = 'bench_peer';
  const db = await cluster.createDatabase(name);
  await cluster.query(db, `CREATE TABLE items (id bigint PRIMARY KEY, name text, price numeric)`);
  const receiver = await startReceiver();
  const debezium = await startDebezium({ sink: { http: `${receiver.url}/debezium` }, pgPort: cluster.port, database: name, prefix: 'peer', tables: ['public.items'], schemas: false, snapshot: 'no_data' });
  const stateDir = tempDir('peer-state-');
  const metricsPort = await freePort();
  const tributary = spawnDaemonYaml(`
sources:
  app: { type: postgres, url: "${db}", slot: bench_peer, publication: bench_peer }
lenses:
  items: { source: app, table: public.items, sink: receiver, initialSync: none, maxWaitMs: 20 }
sinks:
  receiver: { type: semilayer, url: ${receiver.url}, key: ik_test }
state: { type: embedded, path: ${stateDir} }
metrics: { listen: 127.0.0.1:${metricsPort} }
log: { level: info }
`, metricsPort, stateDir);
  try {
    await tributary.ready;
    await sleep(3000); // Debezium's streaming start after its health check
    const writer = new pg.Client({ connectionString: db });
    await writer.connect();
    await writer.query('SET synchronous_commit = on');

    // Throughput: one backlog, both readers at once.
    await writer.query(`INSERT INTO items SELECT g, 'item ' || g, g % 1000 FROM generate_series(1, ${ROWS}) g`);
    const committed = performance.now();
    const seconds: Partial<Record<Reader, number>> = {};
    await until(() => {
      for (const r of ['debezium', 'tributary'] as const) if (seconds[r] === undefined && receiver.arrived[r].size >= ROWS) seconds[r] = (performance.now() - committed) / 1000;
      return seconds.debezium !== undefined && seconds.tributary !== undefined;
    }, `${fmt(ROWS)} inserts at the receiver from both`, 900_000, 20);
    const rate = (r: Reader) => ROWS / seconds[r]!;
    progress(`  throughput: Tributary ${fmt(rate('tributary'))}/s, Debezium Server ${fmt(rate('debezium'))}/s`);

    // Latency: steady single-row transactions, commit time noted as each returns.
    const commits = new Map<string, number>();
    let next = ROWS + 1;
    const start = performance.now();
    for (let tick = 0; tick < LATENCY_SECONDS * 10; tick++) {
      const wait = start + tick * 100 - performance.now();
      if (wait > 0) await sleep(wait);
      for (let i = 0; i < LATENCY_RATE / 10; i++) {
        const id = next++;
        await writer.query(`INSERT INTO items VALUES (${id}, 'late', 1)`);
        commits.set(String(id), performance.now());
      }
    }
    await writer.end();
    await until(() => [...commits.keys()].every((id) => receiver.arrived.debezium.has(id) && receiver.arrived.tributary.has(id)), 'every latency row at the receiver from both', 300_000, 50);
    const p99 = (r: Reader) => percentile([...commits].map(([id, at]) => receiver.arrived[r].get(id)! - at).sort((a, b) => a - b), 0.99);
    progress(`  commit → received p99: Tributary ${fmt(p99('tributary'), 1)} ms, Debezium Server ${fmt(p99('debezium'), 1)} ms`);

    const throughputRatio = rate('tributary') / rate('debezium');
    const latencyRatio = p99('tributary') / p99('debezium');
    rows.push({
      metric: `Peer: changes/s from the same WAL into one loopback HTTP receiver, ${fmt(ROWS)}-insert backlog, both reading at once (Debezium Server ${'3.0'}: HTTP sink)`,
      tributary: fmt(rate('tributary')),
      reference: `Debezium Server ${fmt(rate('debezium'))}`,
      goal: `${throughputRatio.toFixed(2)}× (goal ≥ 3×)`,
      pass: throughputRatio >= 3 ? 'yes' : 'no',
    });
    rows.push({
      metric: `Peer: commit → received p99 at ${LATENCY_RATE} single-row transactions/s`,
      tributary: `${fmt(p99('tributary'), 1)} ms`,
      reference: `Debezium Server ${fmt(p99('debezium'), 1)} ms`,
      goal: `${latencyRatio.toFixed(2)}× (goal ≤ 0.5×)`,
      pass: latencyRatio <= 0.5 ? 'yes' : 'no',
    });
  } finally {
    await tributary.stop();
    await debezium.stop();
    await receiver.close();
  }
}
