/**
 * The kafka source's and sink's SASL and TLS settings against a real Kafka 3.9 broker with a
 * SASL_PLAINTEXT listener (PLAIN and SCRAM-SHA-256) and an SSL listener whose certificate a
 * throwaway CA signed (test/helpers/kafka.ts, `secured`): the right credentials and CA connect;
 * wrong ones fail without retrying, saying what to check, and no password reaches the logs.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createConnector } from '../connectors/index.js';
import type { SourceConfig } from '../src/config/types.js';
import { SinkError } from '../src/errors.js';
import type { KafkaConnection } from '../src/kafka.js';
import { createLogger } from '../src/log.js';
import { createKafkaSink } from '../src/sinks/kafka/index.js';
import type { Sink } from '../src/types.js';
import { Recorder, lensConfig } from './helpers/connector-contract.js';
import { eventually, spawnDaemon, stopDaemon } from './helpers/daemon.js';
import { startKafka, type SecuredListeners, type TestKafka } from './helpers/kafka.js';
import { databaseName, freePort, startPostgres, type TestPostgres } from './helpers/postgres.js';
import { startSemilayerServer } from './helpers/semilayer-server.js';

let kafka: TestKafka;
let secured: SecuredListeners;
let pg: TestPostgres;
before(async () => {
  [kafka, pg] = await Promise.all([startKafka({ secured: true }), startPostgres()]);
  secured = kafka.secured!;
});
after(async () => {
  await Promise.all([kafka?.stop(), pg?.stop()]);
});

const log = createLogger({ level: process.env.TRIBUTARY_TEST_LOG ?? 'fatal' });
const lens = { name: 'items', table: 'public.items', config: lensConfig('app', 'public.items') };

function sink(topic: string, connection: Partial<KafkaConnection>): Promise<Sink> {
  const ctx = { name: 'bus', lenses: {}, openReader: () => undefined, state: undefined as never, log };
  return createKafkaSink({ type: 'kafka', brokers: [], clientId: 'tributary', topic, timeoutMs: 5000, ...connection }, ctx);
}

function source(topic: string, group: string, connection: Partial<KafkaConnection>): SourceConfig {
  return { type: 'kafka', brokers: [], clientId: 'tributary', topics: [topic], groupId: group, format: 'tributary', fromBeginning: true, sessionTimeoutMs: 6000, ...connection } as SourceConfig;
}

/** Publishes ids 1..n with the sink, then reads them back with the source; both on `connection`'s listener. */
async function roundTrip(topic: string, write: Partial<KafkaConnection>, read: Partial<KafkaConnection>, n = 3): Promise<string[]> {
  await kafka.createTopic(topic, 1);
  const bus = await sink(topic, write);
  await bus.write('items', Array.from({ length: n }, (_, i) => ({ id: String(i + 1), action: 'upsert' as const, committedAt: Date.now() })));
  await bus.close();
  const rec = new Recorder();
  const connector = await createConnector(source(topic, `g-${topic}`, read), { sourceName: 'app', lenses: [lens], log, report: rec });
  await connector.start(rec);
  try {
    await eventually(() => rec.events.filter((e) => 'change' in e).length >= n, `${n} changes read back`, 30_000);
    return rec.events.flatMap((e) => ('change' in e ? [e.change.id] : []));
  } finally {
    await connector.stop();
  }
}

test('SASL: the sink publishes with PLAIN and the source reads with SCRAM-SHA-256', async () => {
  const ids = await roundTrip(
    'secured-sasl',
    { brokers: [secured.sasl], sasl: { mechanism: 'plain', ...secured.plain } },
    { brokers: [secured.sasl], sasl: { mechanism: 'scram-sha-256', ...secured.scram } },
  );
  assert.deepEqual(ids, ['1', '2', '3']);
});

test('TLS: with caFile the sink and the source connect; without it they fail at once, saying to set tls.caFile', async () => {
  const tls = { brokers: [secured.ssl], tls: { caFile: secured.caFile, rejectUnauthorized: true } };
  assert.deepEqual(await roundTrip('secured-tls', tls, tls), ['1', '2', '3']);

  const untrusted = { brokers: [secured.ssl], tls: { rejectUnauthorized: true } };
  const bus = await sink('secured-tls', untrusted);
  const err = await bus.write('items', [{ id: '9', action: 'upsert' }]).then(() => undefined, (e: unknown) => e);
  await bus.close();
  assert.ok(err instanceof SinkError, `got ${String(err)}`);
  assert.equal(err.kind, 'fatal', 'a certificate that does not verify is not retried as a network error');
  assert.match(err.message, /kafka sink, lens "items", topic secured-tls: .*certificate.*; the brokers' certificate does not lead to a trusted CA: set tls\.caFile/);

  const rec = new Recorder();
  const connector = await createConnector(source('secured-tls', 'g-untrusted', untrusted), { sourceName: 'app', lenses: [lens], log, report: rec });
  const failed = await connector.start(rec).then(() => undefined, (e: unknown) => e);
  await connector.stop();
  assert.ok(failed instanceof Error, 'the source fails at start instead of retrying');
  assert.match(failed.message, /source "app": .*certificate.*; the brokers' certificate does not lead to a trusted CA: set tls\.caFile to the CA that signed it/);
});

/** The output of a `tributary run` child with `yaml`, its passwords given through the environment. */
function run(yaml: string, env: Record<string, string>) {
  return spawnDaemon(`${yaml}\nlog: { level: debug }\n`, env);
}

test('a wrong SASL password on the source: the daemon does not start, says what to check, and logs no password', async () => {
  const wrong = 'wrong-scram-Xk27';
  const semilayer = await startSemilayerServer();
  const daemon = run(`
sources:
  bus: { type: kafka, brokers: ["${secured.sasl}"], topics: [secured-wrong], groupId: wrong, format: tributary, sasl: { mechanism: scram-sha-256, username: ${secured.scram.username}, password: "\${SCRAM_PASSWORD}" } }
lenses:
  items: { source: bus, table: public.items, sink: hosted, initialSync: none }
sinks:
  hosted: { type: semilayer, url: "${semilayer.url}", key: ik_test }`, { SCRAM_PASSWORD: wrong });
  const code = await daemon.exited;
  await semilayer.close();
  const output = daemon.output();
  assert.notEqual(code, 0, output);
  assert.match(output, /source \\?"bus\\?": SASL SCRAM SHA256 authentication failed.*; check sasl\.username and sasl\.password/);
  assert.ok(!output.includes(wrong), `no password in the output:\n${output}`);
});

test('a wrong SASL password on the sink: its lens is held in error saying what to check, and no password reaches the logs or /readyz', async () => {
  const wrong = 'wrong-plain-Zq81';
  const name = databaseName('kafka sink wrong password');
  const db = await pg.createDatabase(name);
  await pg.query(db, 'CREATE TABLE items (id int PRIMARY KEY, note text)');
  await kafka.createTopic('secured-wrong', 1);
  const metrics = await freePort();
  const daemon = run(`
sources:
  app: { type: postgres, url: "${db}", capture: logical, slot: ${name} }
lenses:
  captured: { source: app, table: public.items, sink: bus, initialSync: none }
sinks:
  bus: { type: kafka, brokers: ["${secured.sasl}"], topic: secured-wrong, sasl: { mechanism: plain, username: ${secured.plain.username}, password: "\${PLAIN_PASSWORD}" } }
metrics: { listen: "127.0.0.1:${metrics}" }
pipeline: { errorRetryMs: 500 }`, { PLAIN_PASSWORD: wrong });
  let reasons = '';
  try {
    await eventually(async () => {
      reasons = (await fetch(`http://127.0.0.1:${metrics}/readyz`).then((r) => r.text()).catch(() => '')) ?? '';
      return reasons.includes('"status"') && !reasons.includes('starting');
    }, 'the daemon started', 30_000);
    await pg.query(db, `INSERT INTO items VALUES (1, 'x')`);
    await eventually(async () => /captured: error/.test((reasons = await (await fetch(`http://127.0.0.1:${metrics}/readyz`)).text())), 'the lens in error', 60_000).catch((err: Error) =>
      Promise.reject(new Error(`${err.message}\n${reasons}\n${daemon.output()}`)),
    );
    assert.match(reasons, /captured: error \(kafka sink, lens \\"captured\\", topic secured-wrong: SASL PLAIN authentication failed.*; check sasl\.username and sasl\.password/);
    assert.ok(!reasons.includes(wrong), 'no password in /readyz');
  } finally {
    await stopDaemon(daemon).catch(() => daemon.child.kill('SIGKILL'));
  }
  const output = daemon.output();
  assert.match(output, /check sasl\.username and sasl\.password/, 'the logs say what to check');
  assert.ok(!output.includes(wrong), `no password in the logs:\n${output}`);
});
