/**
 * The kafka source with `format: tributary` against a real Kafka 3.9 broker
 * (test/helpers/kafka.ts): the connector contract, a poison message, and the bus round trip:
 * Postgres → kafka sink → topic → kafka source → worker sink → a search hit.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Partitioners, type Producer } from 'kafkajs';
import { createConnector } from '../connectors/index.js';
import { encodeChange } from '../src/bus.js';
import type { Config, SourceConfig } from '../src/config/types.js';
import { createLogger } from '../src/log.js';
import { Recorder, connectorContract, lensConfig } from './helpers/connector-contract.js';
import { eventually, spawnDaemon, startTestDaemon, testConfig } from './helpers/daemon.js';
import { startSemilayerServer } from './helpers/semilayer-server.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { startKafka, type TestKafka } from './helpers/kafka.js';
import { databaseName, freePort, startPostgres, type TestPostgres } from './helpers/postgres.js';

let kafka: TestKafka;
let pg: TestPostgres;
let producer: Producer;
before(async () => {
  [kafka, pg] = await Promise.all([startKafka(), startPostgres()]);
  producer = kafka.client.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
});
after(async () => {
  await producer?.disconnect();
  await Promise.all([kafka?.stop(), pg?.stop()]);
});

const log = createLogger({ level: process.env.TRIBUTARY_TEST_LOG ?? 'fatal' });

function sourceConfig(topic: string, group: string, extra: Record<string, unknown> = {}): SourceConfig {
  return { type: 'kafka', brokers: [kafka.broker], clientId: 'tributary', topics: [topic], groupId: group, format: 'tributary', fromBeginning: true, sessionTimeoutMs: 6000, ...extra };
}

connectorContract({
  name: 'kafka tributary',
  resumesFromSaved: false,
  async source(testName) {
    const name = databaseName(`kafka source ${testName}`);
    const topic = `bus-${name}`;
    await kafka.createTopic(topic, 2);
    return {
      config: sourceConfig(topic, name),
      lens: { name: 'items', table: 'public.items', config: lensConfig('app', 'public.items') },
      async insert(ids) {
        await producer.send({ topic, acks: -1, messages: ids.map((id) => encodeChange('items', { id: String(id), action: 'upsert', committedAt: Date.now() })) });
      },
    };
  },
});

test('a poison message is dead-lettered with its topic, partition and offset, and the partition goes on', async () => {
  const topic = 'bus-poison';
  await kafka.createTopic(topic, 1);
  await producer.send({ topic, acks: -1, messages: [{ key: 'items/5', value: '{not json' }, encodeChange('items', { id: '6', action: 'delete', committedAt: 1 })] });
  const rec = new Recorder();
  const lens = { name: 'items', table: 'public.items', config: lensConfig('app', 'public.items') };
  const connector = await createConnector(sourceConfig(topic, 'poison'), { sourceName: 'app', lenses: [lens], log, report: rec });
  await connector.start(rec);
  await eventually(() => rec.events.some((e) => 'change' in e && e.change.id === '6'), 'the message after the poison');
  assert.equal(rec.rejected.length, 1);
  assert.equal(rec.rejected[0].lens, 'items');
  assert.equal(rec.rejected[0].where, `kafka topic ${topic} partition 0 offset 0`);
  assert.match(rec.rejected[0].reason, /not a Tributary bus message/);
  assert.match(rec.rejected[0].raw, /key: items\/5\nvalue: \{not json/);
  assert.ok(rec.events.some((e) => 'change' in e && e.change.action === 'delete' && e.change.committedAt === 1));
  await connector.stop();
});

test('lag: messages between the committed offsets and the ends of the owned partitions, per partition and in all', async () => {
  const topic = 'bus-lag';
  await kafka.createTopic(topic, 2);
  const send = (ids: number[]) => producer.send({ topic, acks: -1, messages: ids.map((id) => ({ ...encodeChange('items', { id: String(id), action: 'upsert', committedAt: 1 }), partition: id % 2 })) });
  await send([1, 2, 3, 4, 5]);
  const rec = new Recorder();
  const lens = { name: 'items', table: 'public.items', config: lensConfig('app', 'public.items') };
  const connector = await createConnector(sourceConfig(topic, 'lag'), { sourceName: 'app', lenses: [lens], log, report: rec });
  await connector.start(rec);
  try {
    await eventually(() => rec.events.filter((e) => 'change' in e).length === 5, 'the 5 messages read');
    // Read but not acknowledged: nothing committed, all 5 behind (3 in partition 1, 2 in partition 0).
    assert.deepEqual(await connector.lag!(), { lagMessages: 5 });
    assert.deepEqual(connector.partMessagesBehind!(), { [`${topic}:0`]: 2, [`${topic}:1`]: 3 });
    const last = rec.events.filter((e): e is { checkpoint: string } => 'checkpoint' in e).at(-1)!.checkpoint;
    connector.acknowledge(last);
    await eventually(async () => (await connector.lag!()).lagMessages === 0, 'no lag once the position is acknowledged (committed)');
    await send([6, 8]);
    await eventually(async () => (await connector.lag!()).lagMessages === 2, 'the new messages behind until acknowledged');
    assert.deepEqual(connector.partMessagesBehind!(), { [`${topic}:0`]: 2, [`${topic}:1`]: 0 });
  } finally {
    await connector.stop();
  }
});

test('the bus round trip: Postgres → kafka sink → kafka source → worker → a search hit', async (t) => {
  const name = databaseName(t.name);
  const db = await pg.createDatabase(name);
  await pg.query(db, `CREATE TABLE products (id int PRIMARY KEY, name text, description text)`);
  await pg.query(db, `INSERT INTO products VALUES (1, 'Cast Iron Skillet', 'Heavy pan for searing')`);
  const topic = `bus-${name}`;
  await kafka.createTopic(topic, 3);
  const capture = testConfig({ dbUrl: db, sinkUrl: 'http://127.0.0.1:9', slot: name, lenses: { products: { table: 'products', initialSync: 'none' } } });
  capture.sinks.hosted = { type: 'kafka', brokers: [kafka.broker], clientId: 'tributary', topic, timeoutMs: 5000 };
  const captureDaemon = await startTestDaemon(capture);

  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'tributary-bus-'));
  const worker: Config = testConfig({ dbUrl: db, sinkUrl: 'http://127.0.0.1:9', lenses: { products: { table: 'products', initialSync: 'none', fields: ['name', 'description'], metadata: ['id'] } }, dataDir: join(dir, 'state') });
  worker.sources.app = sourceConfig(topic, `workers-${name}`, { rowsFrom: db });
  worker.sinks = { local: { type: 'worker' } };
  worker.lenses.products.sink = 'local';
  worker.worker = { listen: `127.0.0.1:${port}`, embedder: { type: 'hash', dimensions: 128 }, index: { type: 'embedded', path: join(dir, 'index') }, keys: [{ key: 'sk_search', scope: 'search' }], maxQueuedChanges: 100_000, readBatch: 500 };
  const workerDaemon = await startTestDaemon(worker);
  const search = async (query: string) => {
    const res = await fetch(`http://127.0.0.1:${port}/v1/search/products`, { method: 'POST', headers: { authorization: 'Bearer sk_search', 'content-type': 'application/json' }, body: JSON.stringify({ query, limit: 3 }) });
    return ((await res.json()) as { results?: Array<{ sourceRowId: string }> }).results ?? [];
  };

  await pg.query(db, `INSERT INTO products VALUES (42, 'Espresso Grinder', 'Conical burr grinder for espresso')`);
  await eventually(async () => (await search('burr grinder espresso'))[0]?.sourceRowId === '42', 'the new row searchable through the bus', 30_000);
  await pg.query(db, `DELETE FROM products WHERE id = 42`);
  await eventually(async () => !(await search('burr grinder espresso')).some((r) => r.sourceRowId === '42'), 'the deleted row gone from search', 30_000);
  assert.equal(await captureDaemon.stop(), 0);
  assert.equal(await workerDaemon.stop(), 0);
});

/** `count` bus upserts of lens `items`, ids 1..count, in sends of 500. */
async function fillBus(topic: string, count: number): Promise<void> {
  for (let from = 1; from <= count; from += 500) {
    const ids = Array.from({ length: Math.min(500, count - from + 1) }, (_, i) => from + i);
    await producer.send({ topic, acks: -1, messages: ids.map((id) => encodeChange('items', { id: String(id), action: 'upsert', committedAt: Date.now() })) });
  }
}

test('a broker restart mid-stream: the consumer reconnects and every message arrives', async () => {
  const topic = 'bus-broker-restart';
  await kafka.createTopic(topic, 2);
  const rec = new Recorder();
  const lens = { name: 'items', table: 'public.items', config: lensConfig('app', 'public.items') };
  const connector = await createConnector(sourceConfig(topic, 'broker-restart'), { sourceName: 'app', lenses: [lens], log, report: rec });
  await connector.start(rec);
  await fillBus(topic, 50);
  await eventually(() => new Set(rec.ids()).size === 50, 'the first 50');
  connector.acknowledge(rec.covering()!);
  await kafka.restart();
  await producer.send({ topic, acks: -1, messages: [51, 52, 53].map((id) => encodeChange('items', { id: String(id), action: 'upsert', committedAt: Date.now() })) });
  await eventually(() => ['51', '52', '53'].every((id) => rec.ids().includes(id)), 'the messages sent after the restart', 60_000);
  await connector.stop();
});

test('kill -9 of the consumer mid-stream, then two consumers rebalancing while batches are in flight: every id arrives', async () => {
  const topic = 'bus-kill';
  const total = 3000;
  await kafka.createTopic(topic, 4);
  await fillBus(topic, total);
  const sink = await startSemilayerServer({ keys: ['ik_test'] });
  sink.respondWith(async () => (await sleep(30), undefined)); // batches stay in flight a while
  const lenses = { items: { table: 'items', initialSync: 'none' as const, maxBatch: 100 } };
  const yaml = `
sources:
  bus: { type: kafka, brokers: ["${kafka.broker}"], topics: [${topic}], groupId: killed, format: tributary, sessionTimeoutMs: 6000 }
lenses:
  items: { source: bus, table: public.items, sink: loopback, initialSync: none, maxBatch: 100 }
sinks:
  loopback: { type: semilayer, url: ${sink.url}, key: ik_test }
state: { type: embedded, path: ${mkdtempSync(join(tmpdir(), 'tributary-kill-'))} }
metrics: { listen: "127.0.0.1:${await freePort()}" }
`;
  const child = spawnDaemon(yaml);
  await eventually(() => sink.lastAction('items').size >= 300, 'some batches delivered', 60_000);
  child.child.kill('SIGKILL');
  await child.exited;
  assert.ok(sink.lastAction('items').size < total, 'killed mid-stream');

  const twin = () => {
    const config: Config = testConfig({ dbUrl: 'postgres://unused', sinkUrl: sink.url, lenses });
    config.sources.app = sourceConfig(topic, 'killed');
    return startTestDaemon(config);
  };
  const first = await twin();
  await eventually(() => sink.counts('items') > 0 && first.status().lenses[0].state === 'streaming', 'the first twin delivering');
  const second = await twin(); // joins while the first has batches in flight: a rebalance
  await eventually(() => sink.lastAction('items').size === total, `all ${total} ids delivered`, 120_000);
  for (const [id, action] of sink.lastAction('items')) assert.equal(action, 'upsert', `id ${id}`);
  assert.equal(await first.stop(), 0);
  assert.equal(await second.stop(), 0);
  await sink.close();
});
