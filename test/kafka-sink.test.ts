/**
 * The kafka sink against a real Kafka 3.9 broker (test/helpers/kafka.ts): a daemon capturing a
 * throwaway Postgres publishes its changes to a topic in the bus format (src/bus.ts), and a
 * batch counts as delivered only once the broker acknowledged it (a broker restart holds it).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { SinkError } from '../src/errors.js';
import { createKafkaSink } from '../src/sinks/kafka/index.js';
import { createLogger } from '../src/log.js';
import { eventually, startTestDaemon, testConfig } from './helpers/daemon.js';
import { startKafka, type TestKafka } from './helpers/kafka.js';
import { databaseName, startPostgres, type TestPostgres } from './helpers/postgres.js';
import { readTopic } from './helpers/kafka-topic.js';

let kafka: TestKafka;
let pg: TestPostgres;
before(async () => {
  [kafka, pg] = await Promise.all([startKafka(), startPostgres()]);
});
after(async () => {
  await Promise.all([kafka?.stop(), pg?.stop()]);
});

/** A database with table `items`, and a daemon publishing its changes to `topic`. */
async function scenario(title: string, initialSync: 'full' | 'none' = 'none', payload?: string[]) {
  const name = databaseName(`kafka sink ${title}`);
  const db = await pg.createDatabase(name);
  await pg.query(db, `CREATE TABLE items (id int PRIMARY KEY, note text, price numeric(10,2), big bigint)`);
  const topic = `sink-${name}`;
  await kafka.createTopic(topic, 3);
  const config = testConfig({ dbUrl: db, sinkUrl: 'http://127.0.0.1:9', slot: name, lenses: { items: { table: 'items', initialSync, ...(payload ? { payload } : {}) } } });
  config.sinks.hosted = { type: 'kafka', brokers: [kafka.broker], clientId: 'tributary', topic, timeoutMs: 5000 };
  const daemon = await startTestDaemon(config);
  const topicReader = await readTopic(kafka.client, topic);
  return { db, topic, daemon, topicReader, sql: (text: string) => pg.query(db, text) };
}

test('publishes each change with key <lens>/<id> and value { lens, id, action, committedAt }, and sync requests', async () => {
  const { daemon, topicReader, sql } = await scenario('shape', 'full');
  await sql(`INSERT INTO items SELECT g, 'n' FROM generate_series(1, 50) g`);
  await sql(`UPDATE items SET note = 'u' WHERE id <= 10`);
  await sql(`DELETE FROM items WHERE id > 45`);
  await eventually(() => topicReader.last().size === 50, 'the last action of all 50 ids on the topic');
  for (let id = 1; id <= 50; id++) {
    const m = topicReader.last().get(`items/${id}`)!;
    assert.equal(m.lens, 'items');
    assert.equal(m.id, String(id));
    assert.equal(m.action, id > 45 ? 'delete' : 'upsert', `id ${id}`);
    assert.ok(typeof m.committedAt === 'number' && Math.abs((m.committedAt as number) - Date.now()) < 60_000);
  }
  const sync = topicReader.all().find((m) => m.key === 'items/');
  assert.deepEqual(sync && { lens: sync.value.lens, sync: sync.value.sync }, { lens: 'items', sync: 'full' }, 'the initial full sync travels as a message');
  assert.equal(await daemon.stop(), 0);
  await topicReader.stop();
});

test('a lens with payload sends each upsert with its row, values typed as payload sinks send them; a delete without', async () => {
  const { daemon, topicReader, sql } = await scenario('payload', 'none', ['id', 'note', 'price', 'big']);
  await sql(`INSERT INTO items VALUES (1, 'one', 12.50, 9007199254740993), (2, 'two', 1, 2)`);
  await sql(`DELETE FROM items WHERE id = 2`);
  await eventually(() => topicReader.last().get('items/2')?.action === 'delete' && topicReader.last().has('items/1'), 'both ids');
  // A payload reader: exact numbers as JSON numbers, others (beyond 2^53) as their text.
  assert.deepEqual(topicReader.last().get('items/1')!.row, { id: 1, note: 'one', price: 12.5, big: '9007199254740993' });
  assert.equal(topicReader.last().get('items/2')!.row, undefined);
  assert.equal(await daemon.stop(), 0);
  await topicReader.stop();
});

test('a broker restart holds the batch (lens retrying) and delivers it once the broker is back', async () => {
  const { daemon, topicReader, sql } = await scenario('restart');
  await sql(`INSERT INTO items VALUES (1, 'a')`);
  await eventually(() => topicReader.last().has('items/1'), 'the first change');
  const restarted = kafka.restart();
  await sql(`INSERT INTO items VALUES (2, 'b')`);
  await restarted;
  await eventually(() => topicReader.last().has('items/2'), 'the change written while the broker restarted', 60_000);
  assert.equal(daemon.status().lenses[0].dlq, 0);
  assert.equal(await daemon.stop(), 0);
  await topicReader.stop();
});

test('errors are SinkErrors: a broker that refuses a record is rejected, one that is unreachable transient', async () => {
  const log = createLogger({ level: 'fatal' });
  const topic = 'sink-refusals';
  await kafka.createTopic(topic);
  const ctx = { name: 'bus', lenses: {}, openReader: () => Promise.reject(new Error('no rows here')), state: undefined as never, log };
  const sink = await createKafkaSink({ type: 'kafka', brokers: [kafka.broker], clientId: 'tributary', topic, timeoutMs: 5000 }, ctx);
  const huge = { id: '1', action: 'upsert' as const, row: { text: 'x'.repeat(2 << 20) } }; // over the 1 MB message.max.bytes
  const rejected = await sink.write('items', [huge]).then(() => undefined, (err: unknown) => err);
  assert.ok(rejected instanceof SinkError && rejected.kind === 'rejected', `got ${String(rejected)}`);
  await sink.write('items', [{ id: '2', action: 'upsert' }]);
  await sink.close();
  const down = await createKafkaSink({ type: 'kafka', brokers: ['127.0.0.1:9'], clientId: 'tributary', topic, timeoutMs: 1000 }, ctx);
  const transient = await down.write('items', [{ id: '1', action: 'upsert' }]).then(() => undefined, (err: unknown) => err);
  assert.ok(transient instanceof SinkError && transient.kind === 'transient', `got ${String(transient)}`);
  await down.close();
});
