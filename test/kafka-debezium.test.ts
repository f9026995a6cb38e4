/**
 * Debezium change events end to end: Debezium Server (test/helpers/debezium.ts) captures a
 * throwaway Postgres into the test Kafka broker, and a daemon with a `kafka` source
 * (`format: debezium`) delivers them to a loopback SemiLayer server; every id's final action
 * is checked. Two runs: the envelope with schemas, and ExtractNewRecordState rows without.
 * Each covers a snapshot (op r), inserts, updates, deletes with tombstones, a key change
 * (delete, tombstone, create); the envelope run a truncate too.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Config } from '../src/config/types.js';
import { eventually, startTestDaemon, testConfig } from './helpers/daemon.js';
import { startDebezium, type RunningDebezium } from './helpers/debezium.js';
import { startKafka, type TestKafka } from './helpers/kafka.js';
import { readTopic } from './helpers/kafka-topic.js';
import { startPostgres, type TestPostgres } from './helpers/postgres.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';

let kafka: TestKafka;
let pg: TestPostgres;
let sink: SemilayerServer;
const debeziums: RunningDebezium[] = [];
/** Consumers a failed test left running: stopped before the broker. */
const readers: Array<{ stop(): Promise<void> }> = [];
before(async () => {
  [kafka, pg, sink] = await Promise.all([startKafka(), startPostgres(), startSemilayerServer({ keys: ['ik_test'] })]);
});
after(async () => {
  await Promise.all([...debeziums.map((d) => d.stop()), ...readers.map((r) => r.stop().catch(() => {}))]);
  await Promise.all([kafka?.stop(), pg?.stop(), sink?.close()]);
});

/** What every id's last action must be after `workload`. */
function expected(): Map<string, string> {
  const want = new Map<string, string>();
  for (let id = 1; id <= 40; id++) want.set(String(id), id >= 15 && id <= 19 ? 'delete' : 'upsert');
  want.set('100', 'upsert');
  return want;
}

async function run(title: string, options: { schemas: boolean; unwrap: boolean; truncate: boolean }) {
  const name = `dbz_${title}`;
  const db = await pg.createDatabase(name);
  const sql = (text: string) => pg.query(db, text);
  await sql(`CREATE TABLE items (id int PRIMARY KEY, note text); CREATE TABLE scratch (id int PRIMARY KEY)`);
  await sql(`INSERT INTO items SELECT g, 'snap' FROM generate_series(1, 20) g; INSERT INTO scratch VALUES (1)`);
  const prefix = title;
  const topics = [`${prefix}.public.items`, `${prefix}.public.scratch`];
  for (const topic of topics) await kafka.createTopic(topic, 2);
  const debezium = await startDebezium({ sink: { kafka: kafka.broker }, pgPort: pg.port, database: name, prefix, tables: ['public.items', 'public.scratch'], ...options });
  debeziums.push(debezium);
  const items = await readTopic(kafka.client, topics[0]);
  readers.push(items);
  await eventually(() => items.all().length >= 20, 'the snapshot on the topic', 60_000).catch((err: Error) => {
    throw new Error(`${err.message}\n${debezium.output()}`);
  });

  const config: Config = testConfig({ dbUrl: db, sinkUrl: sink.url, lenses: { [`${title}_items`]: { table: 'items', initialSync: 'none' }, [`${title}_scratch`]: { table: 'scratch', initialSync: 'none' } } });
  config.sources.app = { type: 'kafka', brokers: [kafka.broker], clientId: 'tributary', topics, groupId: `tributary-${title}`, format: 'debezium', fromBeginning: true, sessionTimeoutMs: 10_000 };
  const daemon = await startTestDaemon(config);

  await sql(`INSERT INTO items SELECT g, 'new' FROM generate_series(21, 40) g`);
  await sql(`UPDATE items SET note = 'changed' WHERE id <= 10`);
  await sql(`DELETE FROM items WHERE id BETWEEN 15 AND 18`);
  await sql(`UPDATE items SET id = 100 WHERE id = 19`);
  if (options.truncate) await sql(`TRUNCATE scratch`);
  const lens = `${title}_items`;
  const want = expected();
  await eventually(() => [...want].every(([id, action]) => sink.lastAction(lens).get(id) === action), 'every id with its final action', 60_000).catch((err: Error) => {
    throw new Error(`${err.message}: got ${JSON.stringify([...sink.lastAction(lens)])}`);
  });
  assert.deepEqual(new Map([...sink.lastAction(lens)].map(([id, a]) => [id, String(a)])), want);
  if (options.truncate) await eventually(() => sink.requests.some((r) => r.lens === `${title}_scratch` && r.mode === 'full'), 'the truncate as a full sync request', 30_000);
  const values = (): Array<Record<string, any> | null> => items.all().map((m) => m.value);
  await eventually(() => values().includes(null), 'deletes followed by tombstones on the topic');
  const snapshot = values().find((v) => v && ((v.payload ?? v).op === 'r' || (v.payload ?? v).__op === 'r'));
  assert.ok(snapshot, 'the snapshot arrives as op r');
  const status = daemon.status().lenses.find((l) => l.lens === lens)!;
  assert.equal(status.dlq, 0);
  assert.equal(await daemon.stop(), 0);
  await items.stop();
}

test('Debezium envelope with schemas: snapshot, inserts, updates, deletes, a key change, a truncate', async () => {
  await run('envelope', { schemas: true, unwrap: false, truncate: true });
});

// ExtractNewRecordState drops truncate events (Debezium Server 3.0: nothing reaches the topic), so this run has none.
test('Debezium ExtractNewRecordState rows without schemas: snapshot, inserts, updates, deletes, a key change', async () => {
  await run('unwrapped', { schemas: false, unwrap: true, truncate: false });
});
