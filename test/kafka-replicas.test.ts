/**
 * Worker replicas over the bus: two `tributary run` processes in one consumer group read a
 * `format: tributary` topic (test/helpers/kafka.ts) into the worker sink with one shared
 * pgvector index (a real PostgreSQL 18 with pgvector, test/helpers/pgserver.ts, so the replicas
 * write it concurrently as in production) and one shared Postgres state store, acknowledging batches once indexed (`worker.acknowledge: indexed`).
 * Both read at once (a kafka source takes no source lease: the group splits the partitions);
 * an operator's pause, taken by one, holds on both; killing one with SIGKILL mid-stream loses
 * nothing: its uncommitted offsets are read again by the other.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AssignerProtocol, Partitioners } from 'kafkajs';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { encodeChange } from '../src/bus.js';
import { eventually, killChildren, runCli, spawnCli, stopDaemon, type ChildDaemon } from './helpers/daemon.js';
import { startKafka, withAdmin, type TestKafka } from './helpers/kafka.js';
import { startOpenAIServer, type OpenAIServer } from './helpers/openai-server.js';
import { startVectorServer, type RunningVectorServer } from './helpers/pgserver.js';
import { freePort, startPostgres, type TestPostgres } from './helpers/postgres.js';
import type { StatusSnapshot } from '../src/status.js';

const ROWS = 1200;

let kafka: TestKafka;
let db: TestPostgres;
let vectors: RunningVectorServer;
let openai: OpenAIServer;
before(async () => {
  [kafka, db, vectors, openai] = await Promise.all([startKafka(), startPostgres(), startVectorServer(), startOpenAIServer({ delayMs: 100, dimensions: 32 })]);
});
after(async () => {
  killChildren();
  await Promise.all([kafka?.stop(), db?.stop(), vectors?.stop(), openai?.close()]);
});

interface Replica {
  daemon: ChildDaemon;
  /** Its configuration file, for the CLI (`tributary status`, `pause`). */
  file: string;
}

/** One replica: the bus into the worker sink, the shared pgvector index and state store, its own HTTP port and queue. */
async function replica(o: { topic: string; group: string; dbUrl: string; stateUrl: string; schema: string; port: number }): Promise<Replica> {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-replica-'));
  const file = join(dir, 'tributary.yaml');
  writeFileSync(
    file,
    `
sources:
  bus: { type: kafka, brokers: ["${kafka.broker}"], topics: [${o.topic}], groupId: ${o.group}, format: tributary, sessionTimeoutMs: 6000, rowsFrom: "${o.dbUrl}" }
lenses:
  products: { source: bus, table: public.products, sink: local, fields: [name, description], metadata: [id], initialSync: none, maxBatch: 50 }
sinks:
  local: { type: worker }
worker:
  listen: 127.0.0.1:${o.port}
  acknowledge: indexed
  readBatch: 10
  embedder: { type: openai, url: "${openai.url}", model: test-embed, dimensions: 32, maxRetries: 2 }
  index: { type: pgvector, url: "${vectors.url}", schema: ${o.schema}, path: ${join(dir, 'queue')} }
state: { type: postgres, url: "${o.stateUrl}", schema: workers }
metrics: { listen: "127.0.0.1:${await freePort()}" }
log: { level: warn }
`,
  );
  return { daemon: spawnCli(['run', '--config', file]), file };
}

/** Every replica's last status of lens `products`, from the shared state store. */
async function statuses(stateUrl: string): Promise<Array<{ delivered: number; paused: boolean }>> {
  const rows = await db.query(stateUrl, `SELECT value FROM workers.kv WHERE key LIKE 'status/%'`).catch(() => []);
  return rows.map((r) => (r.value as StatusSnapshot).lenses.find((l) => l.lens === 'products')!);
}

/** The partitions each member of `group` holds, once the group is stable. */
async function assignments(group: string): Promise<number[][]> {
  const { groups } = await withAdmin(kafka.client, (admin) => admin.describeGroups([group]));
  if (groups[0].state !== 'Stable') return [];
  return groups[0].members.map((m) => Object.values(AssignerProtocol.MemberAssignment.decode(m.memberAssignment)?.assignment ?? {}).flat());
}

test('two worker replicas sharing a Postgres state store both read the bus; a pause holds on both; kill -9 of one loses nothing', async () => {
  const dbUrl = await db.createDatabase('replicas');
  const stateUrl = await db.createDatabase('replicas_state');
  await db.query(dbUrl, `CREATE TABLE products (id int PRIMARY KEY, name text, description text)`);
  await db.query(dbUrl, `INSERT INTO products SELECT g, 'product ' || g, 'description of item ' || g FROM generate_series(1, ${ROWS}) g`);
  const topic = 'bus-replicas';
  await kafka.createTopic(topic, 4);
  const producer = kafka.client.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  for (let i = 1; i <= ROWS; i += 200) {
    const ids = Array.from({ length: Math.min(200, ROWS - i + 1) }, (_, k) => i + k);
    await producer.send({ topic, acks: -1, messages: ids.map((id) => encodeChange('products', { id: String(id), action: 'upsert', committedAt: Date.now() })) });
  }
  await producer.disconnect();

  const schema = 'replicas';
  const [portA, portB] = [await freePort(), await freePort()];
  const a = await replica({ topic, group: 'workers', dbUrl, stateUrl, schema, port: portA });
  const b = await replica({ topic, group: 'workers', dbUrl, stateUrl, schema, port: portB });
  const outputs = () => `replica a:\n${a.daemon.output()}\nreplica b:\n${b.daemon.output()}`;
  const within = (what: Promise<void>) => what.catch((err: Error) => Promise.reject(new Error(`${err.message}\n${outputs()}`)));
  await within(
    eventually(async () => {
      const held = await assignments('workers');
      return held.length === 2 && held.every((p) => p.length === 2);
    }, 'both replicas holding two partitions each', 60_000),
  );

  const index = new pg.Pool({ connectionString: vectors.url, max: 1 });
  const indexed = async () => Number((await index.query(`SELECT count(*) AS n FROM ${schema}.lens_products`).catch(() => ({ rows: [{ n: 0 }] }))).rows[0].n);
  await within(eventually(async () => (await indexed()) >= ROWS / 8, 'some rows indexed', 60_000));
  await within(eventually(async () => {
    const s = await statuses(stateUrl);
    return s.length === 2 && s.every((l) => l.delivered > 0);
  }, 'both replicas delivering (their status in the shared store)', 60_000));

  // `tributary pause` is taken by one replica; both hold the lens, and `status` shows both paused.
  const paused = await runCli(['pause', '--config', a.file, '--lens', 'products']);
  assert.equal(paused.code, 0, paused.output);
  await within(eventually(async () => {
    const s = await statuses(stateUrl);
    return s.length === 2 && s.every((l) => l.paused);
  }, 'both replicas paused', 30_000));
  const status = await runCli(['status', '--config', b.file]);
  assert.equal(status.output.split('\n').filter((line) => /^products\s+paused\b.*replica=/.test(line)).length, 2, status.output);
  await sleep(3000); // batches in the worker when the pause came finish
  const whilePaused = await indexed();
  await sleep(3000);
  assert.equal(await indexed(), whilePaused, 'nothing indexed while both replicas are paused');
  assert.ok(whilePaused < ROWS, `paused mid-stream (${whilePaused} of ${ROWS} indexed)`);
  assert.equal((await runCli(['resume', '--config', b.file, '--lens', 'products'])).code, 0);
  await within(eventually(async () => (await indexed()) > whilePaused, 'indexing again after resume', 30_000));

  const before = await indexed();
  a.daemon.child.kill('SIGKILL');
  await a.daemon.exited;
  assert.ok(before < ROWS, `killed mid-stream (${before} of ${ROWS} indexed)`);

  await within(eventually(async () => (await indexed()) === ROWS, `all ${ROWS} rows indexed after the kill`, 120_000));
  const ids = (await index.query(`SELECT id FROM ${schema}.lens_products`)).rows.map((r) => Number(r.id)).sort((x, y) => x - y);
  assert.deepEqual(ids, Array.from({ length: ROWS }, (_, k) => k + 1));
  const res = await fetch(`http://127.0.0.1:${portB}/v1/search/products`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: 'description of item 77', limit: 3 }) });
  assert.equal(res.status, 200);
  assert.ok(((await res.json()) as { results: unknown[] }).results.length > 0, 'the surviving replica serves search');
  await index.end();
  await stopDaemon(b.daemon);
});
