/**
 * The seyn sink end to end: a daemon (in-process, or a child process that is killed) captures
 * a throwaway Postgres and delivers to a loopback Seyn ingest API that checks every field.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../src/config/load.js';
import type { Config, LensConfig } from '../src/config/types.js';
import { ConfigError, type SinkError } from '../src/errors.js';
import { eventually, killChildren, runCli, spawnCli, startError, startTestDaemon, stopDaemon, testConfig } from './helpers/daemon.js';
import { databaseName, startPostgres, type TestPostgres } from './helpers/postgres.js';
import { SEYN_SOURCE_ID, error, startSeynServer, type SeynServer } from './helpers/seyn-server.js';

let cluster: TestPostgres;
let seyn: SeynServer;

before(async () => {
  [cluster, seyn] = await Promise.all([startPostgres(), startSeynServer()]);
});
after(async () => {
  killChildren();
  await seyn?.close();
  await cluster?.stop();
});

const DEALS = `CREATE TABLE deals (id int PRIMARY KEY, name text, amount numeric(12,2), big bigint, score float8, meta jsonb,
  blob bytea, closed boolean, updated_at timestamptz NOT NULL DEFAULT now(), local_at timestamp, due date)`;

/** A database with `deals`, and a daemon config whose lenses go to a seyn sink. */
async function scenario(title: string, lenses: Record<string, Partial<LensConfig>>, sink: Partial<Config['sinks'][string]> = {}) {
  const name = databaseName(`seyn ${title}`);
  const db = await cluster.createDatabase(name);
  const sql = (text: string) => cluster.query(db, text);
  await sql(DEALS);
  const config = testConfig({ dbUrl: db, sinkUrl: seyn.url, slot: name, lenses: Object.fromEntries(Object.entries(lenses).map(([l, c]) => [`${name}_${l}`, { table: 'deals', ...c }])) });
  config.sinks.hosted = { type: 'seyn', url: seyn.url, key: 'sk_live_test', sourceId: SEYN_SOURCE_ID, onDelete: 'skip', timeoutMs: 5000, ...sink } as Config['sinks'][string];
  return { name, db, sql, config, lens: (l: string) => `${name}_${l}` };
}

test('existing rows arrive on first start with their values typed, then live changes; deletes are skipped and counted', async () => {
  const { sql, config, lens } = await scenario('first start', {
    all: { entityType: 'deal', changeTrackingColumn: 'updated_at' },
    mapped: { payload: { title: 'name', value: 'amount' } },
  });
  await sql(`INSERT INTO deals VALUES
    (1, 'Acme renewal', 42000.50, 9007199254740993, 0.25, '{"owner":"jane","tags":[1,2]}', '\\xdeadbeef', true, '2026-06-10 14:03:00+00', '2026-06-10 14:03:00.5', '2026-07-01'),
    (2, 'Northwind', 12500, 42, null, null, null, false, '2026-06-10 15:21:00+00', null, null)`);
  const daemon = await startTestDaemon(config);
  await eventually(() => seyn.latest('deal').size === 2 && seyn.latest(lens('mapped')).size === 2, 'both rows of both lenses');
  const acme = seyn.latest('deal').get('1')!;
  assert.equal(acme.sourceUpdatedAt, '2026-06-10T14:03:00.000Z', 'the changeTrackingColumn');
  assert.deepEqual(acme.payload, {
    id: 1,
    name: 'Acme renewal',
    amount: 42000.5,
    big: '9007199254740993',
    score: 0.25,
    meta: { owner: 'jane', tags: [1, 2] },
    blob: '3q2+7w==',
    closed: true,
    updated_at: '2026-06-10T14:03:00.000Z',
    local_at: '2026-06-10T14:03:00.500Z',
    due: '2026-07-01',
  });
  assert.equal(seyn.latest('deal').get('2')!.payload.big, 42);
  assert.deepEqual(seyn.latest(lens('mapped')).get('1')!.payload, { title: 'Acme renewal', value: 42000.5 });
  const status = () => daemon.status().lenses.find((l) => l.lens === lens('all'))!;
  await eventually(() => status().sink?.fullSync?.state === 'done', 'the full sync shows done in status');
  assert.equal(status().sink?.fullSync?.rows, 2);

  await sql(`INSERT INTO deals (id, name, amount) VALUES (3, 'Globex', 7)`);
  await sql(`UPDATE deals SET name = 'Acme renewal 2' WHERE id = 1`);
  await sql(`DELETE FROM deals WHERE id = 2`);
  await eventually(() => seyn.latest('deal').get('3')?.payload.name === 'Globex' && seyn.latest('deal').get('1')?.payload.name === 'Acme renewal 2', 'live changes');
  await eventually(() => status().sink?.skippedDeletes === 1, 'the delete counted as skipped');
  assert.equal(seyn.latest('deal').get('2')!.payload.name, 'Northwind', 'nothing sent for a skipped delete');
  for (const req of seyn.requests.filter((r) => r.records[0]?.entityType === 'deal')) {
    assert.match(String(req.headers['idempotency-key']), /^[0-9a-f-]{36}$/);
    assert.equal(req.status, 202);
  }
  assert.equal(await daemon.stop(), 0);
});

test('deletes as tombstones', async () => {
  const { sql, config, lens } = await scenario('tombstones', { t: {} }, { onDelete: 'tombstone' });
  await sql(`INSERT INTO deals (id, name) VALUES (1, 'a'), (2, 'b')`);
  const daemon = await startTestDaemon(config);
  await eventually(() => seyn.latest(lens('t')).size === 2, 'the rows');
  await sql(`DELETE FROM deals WHERE id = 1`);
  await eventually(() => seyn.latest(lens('t')).get('1')?.payload._deleted === true, 'a tombstone');
  assert.deepEqual(seyn.latest(lens('t')).get('1')!.payload, { _deleted: true });
  assert.equal(seyn.latest(lens('t')).get('2')!.payload.name, 'b');
  assert.equal(await daemon.stop(), 0);
});

test('a 503 is retried with the same Idempotency-Key; each batch has its own', async () => {
  const { sql, config, lens } = await scenario('retry', { r: {} });
  const daemon = await startTestDaemon(config);
  let failures = 1;
  seyn.respondWith((req) => (req.records[0]?.entityType === lens('r') && failures-- > 0 ? { status: 503, body: { success: false, error: { code: 'UNAVAILABLE', message: 'try later' } } } : undefined));
  await sql(`INSERT INTO deals (id, name) VALUES (1, 'a')`);
  await eventually(() => seyn.latest(lens('r')).has('1'), 'delivered after the 503');
  await sql(`INSERT INTO deals (id, name) VALUES (2, 'b')`);
  await eventually(() => seyn.latest(lens('r')).has('2'), 'the next batch');
  seyn.respondWith(undefined);
  const [failed, retried, next] = seyn.requests.filter((r) => r.records[0]?.entityType === lens('r'));
  assert.deepEqual([failed.status, retried.status, next.status], [503, 202, 202]);
  assert.equal(retried.headers['idempotency-key'], failed.headers['idempotency-key']);
  assert.notEqual(next.headers['idempotency-key'], failed.headers['idempotency-key']);

  // A skipped delete in a retried batch counts once.
  failures = 1;
  seyn.respondWith((req) => (req.records[0]?.entityType === lens('r') && failures-- > 0 ? { status: 503, body: { success: false, error: { code: 'UNAVAILABLE', message: 'try later' } } } : undefined));
  await sql(`BEGIN; DELETE FROM deals WHERE id = 1; INSERT INTO deals (id, name) VALUES (3, 'c'); COMMIT`);
  await eventually(() => seyn.latest(lens('r')).has('3'), 'delivered after another 503');
  seyn.respondWith(undefined);
  // Counted once the accepted answer is read, which follows the server's record of the request.
  const skipped = () => daemon.status().lenses.find((l) => l.lens === lens('r'))!.sink?.skippedDeletes ?? 0;
  await eventually(() => skipped() > 0, 'the skipped delete counted');
  assert.equal(skipped(), 1);
  assert.equal(await daemon.stop(), 0);
});

test("a batch's requests go at once; a 503 on one resends only that one, under its Idempotency-Key", async () => {
  // maxWaitMs: the 2,000 rows of one transaction make one batch of 4 requests.
  const { sql, config, lens } = await scenario('concurrent', { c: { initialSync: 'none', payload: ['name'], maxWaitMs: 1000 } });
  const daemon = await startTestDaemon(config);
  const mine = () => seyn.requests.filter((r) => r.records[0]?.entityType === lens('c'));
  seyn.setDelay(300);
  let failures = 1;
  seyn.respondWith((req) => (req.records[0]?.entityType === lens('c') && req.records.some((r) => r.recordId === '700') && failures-- > 0 ? error(503, 'UNAVAILABLE', 'try later') : undefined));
  try {
    await sql(`INSERT INTO deals (id, name) SELECT g, 'n' || g FROM generate_series(1, 2000) g`);
    await eventually(() => seyn.latest(lens('c')).size === 2000, 'every row', 30_000);
  } finally {
    seyn.respondWith(undefined);
    seyn.setDelay(0);
  }
  const first = mine().slice(0, 4).map((r) => r.receivedAt);
  assert.ok(Math.max(...first) - Math.min(...first) < 300, `the first 4 requests (of ${mine().map((r) => r.records.length)} records) arrived within ${Math.max(...first) - Math.min(...first)} ms, not one answer (300 ms) apart`);
  const failed = mine().filter((r) => r.status === 503);
  assert.equal(failed.length, 1);
  const retried = mine().filter((r) => r.headers['idempotency-key'] === failed[0].headers['idempotency-key'] && r.status === 202);
  assert.deepEqual(retried.map((r) => r.records.map((x) => x.recordId)), [failed[0].records.map((x) => x.recordId)], 'the same records, under the same key');
  const accepted = mine().filter((r) => r.status === 202);
  assert.equal(accepted.reduce((n, r) => n + r.records.length, 0), 2000, 'no record sent twice');
  assert.equal(await daemon.stop(), 0);
});

test('requests are split at 500 records and at 10 MB', async () => {
  const { sql, config, lens } = await scenario('split', { s: { payload: ['name'] }, big: { payload: ['name', 'meta'] } });
  await sql(`INSERT INTO deals (id, name) SELECT g, 'n' || g FROM generate_series(1, 1200) g`);
  await sql(`UPDATE deals SET meta = jsonb_build_object('text', repeat('x', 400000)) WHERE id <= 30`);
  const daemon = await startTestDaemon(config);
  await eventually(() => seyn.latest(lens('s')).size === 1200 && seyn.latest(lens('big')).size === 1200, 'every row of both lenses', 30_000);
  const sizes = (l: string) => seyn.requests.filter((r) => r.records[0]?.entityType === lens(l)).map((r) => ({ n: r.records.length, bytes: r.bytes }));
  // Pages of the full sync: 100 rows (width unknown yet), then 1,000; requests of at most 500.
  assert.deepEqual(sizes('s').map((s) => s.n), [100, 500, 500, 100]);
  assert.ok(sizes('big').length > 3, 'the 12 MB of the first page took more than one request');
  assert.ok(sizes('big').every((s) => s.n <= 500 && s.bytes <= 10 * 1024 * 1024), JSON.stringify(sizes('big')));
  assert.equal(await daemon.stop(), 0);
});

test('401 and 403 INSUFFICIENT_SCOPE hold the lens in error, saying what to do, without the key; it recovers once they pass', async () => {
  const answers = [
    [error(403, 'INSUFFICIENT_SCOPE', 'This API key does not have the ingest scope'), /403 \(INSUFFICIENT_SCOPE: .*\): the API key lacks the ingest scope/],
    [error(401, 'UNAUTHORIZED', 'Missing or invalid API key sk_live_test'), /401 \(UNAUTHORIZED: Missing or invalid API key \[redacted\]\): .*check the sink's `key`/],
  ] as const;
  for (const [i, [answer, expected]] of answers.entries()) {
    const { sql, config, lens } = await scenario(`auth ${i}`, { a: { initialSync: 'none' } });
    const daemon = await startTestDaemon(config);
    let failing = true;
    seyn.respondWith((req) => (failing && req.records[0]?.entityType === lens('a') ? answer : undefined));
    await sql(`INSERT INTO deals (id, name) VALUES (1, 'a')`);
    const status = () => daemon.status().lenses.find((l) => l.lens === lens('a'))!;
    await eventually(() => status().state === 'error', 'the lens in error');
    assert.match(status().lastError ?? '', expected);
    assert.doesNotMatch(status().lastError ?? '', /sk_live_test/);
    assert.equal(status().dlq, 0);
    failing = false;
    await eventually(() => seyn.latest(lens('a')).has('1'), 'delivered once the key passes');
    seyn.respondWith(undefined);
    assert.equal(await daemon.stop(), 0);
  }
});

test('the server refuses a read-only key with 403 INSUFFICIENT_SCOPE, and the sink calls it fatal', async () => {
  const { createSeynSink } = await import('../src/sinks/seyn/index.js');
  const sink = await createSeynSink(
    { type: 'seyn', url: seyn.url, key: 'sk_live_readonly', sourceId: SEYN_SOURCE_ID, onDelete: 'tombstone', timeoutMs: 5000 },
    { name: 's', lenses: { x: {} }, openReader: async () => ({ close: async () => undefined }), state: undefined, deadLetters: undefined, metrics: undefined, log: undefined } as never,
  );
  const err = await sink.write('x', [{ id: '1', action: 'delete', committedAt: 0 }]).then(() => undefined, (e: SinkError) => e);
  assert.equal(err?.kind, 'fatal');
  assert.match(err?.message ?? '', /seyn sink "s", lens "x": HTTP 403 \(INSUFFICIENT_SCOPE: This API key does not have the ingest scope\)/);
  await sink.close();
});

test('a 429 holds every lens of the sink for its Retry-After', async () => {
  const { sql, config, lens } = await scenario('hold', { a: { initialSync: 'none' } });
  await sql(`CREATE TABLE others (id int PRIMARY KEY, name text)`);
  config.lenses[lens('b')] = { ...config.lenses[lens('a')], table: 'public.others' };
  const daemon = await startTestDaemon(config);
  let refused = 0;
  seyn.respondWith((req) => (req.records[0]?.entityType === lens('a') && refused++ === 0 ? { status: 429, headers: { 'retry-after': '2' }, body: { success: false, error: { code: 'RATE_LIMITED', message: 'slow down' } } } : undefined));
  await sql(`INSERT INTO deals (id, name) VALUES (1, 'a')`);
  await eventually(() => refused === 1, 'the 429');
  const limitedAt = Date.now();
  await sql(`INSERT INTO others (id, name) VALUES (1, 'b')`);
  await eventually(() => seyn.latest(lens('b')).has('1') && seyn.latest(lens('a')).has('1'), 'both delivered after the hold');
  const firstOfB = seyn.requests.find((r) => r.records[0]?.entityType === lens('b'))!;
  assert.ok(firstOfB.receivedAt - limitedAt >= 1700, `the other lens waited ${firstOfB.receivedAt - limitedAt} ms`);
  seyn.respondWith(undefined);
  assert.equal(await daemon.stop(), 0);
});

test('bad configs: a payload column that does not exist names lens and column; bad keys of the sink', async () => {
  const { config, lens } = await scenario('bad column', { p: { payload: ['name', 'nope'] } });
  const message = await startError(config).catch((err: Error) => err.message);
  assert.match(message, new RegExp(`lens "${lens('p')}": column\\(s\\) nope not in table public.deals`));

  const yaml = (sink: string, lensExtra = '') => `
sources: { app: { type: postgres, url: "postgres://x" } }
lenses:
  deals: { source: app, table: deals, sink: s${lensExtra} }
sinks:
  s: ${sink}
`;
  const problems = (text: string) => {
    try {
      parseConfig(text, 'tributary.yaml', {});
    } catch (err) {
      return (err as ConfigError).problems.map((p) => `${p.path}: ${p.message}`).join('\n');
    }
    return '';
  };
  assert.match(problems(yaml('{ type: seyn, url: "https://api.seynlabs.com", key: k }')), /sinks\.s\.sourceId: missing required key "sourceId"/);
  assert.match(problems(yaml('{ type: seyn, url: "https://api.seynlabs.com", key: k, sourceId: nope }')), /sinks\.s\.sourceId: .*uuid/);
  assert.match(problems(yaml(`{ type: seyn, url: "https://api.seynlabs.com", key: k, sourceId: ${SEYN_SOURCE_ID}, onDelete: purge }`)), /sinks\.s\.onDelete: .*skip.*tombstone/);
  assert.match(problems(yaml(`{ type: seyn, url: "https://api.seynlabs.com", key: k, sourceId: ${SEYN_SOURCE_ID} }`, ', payload: []')), /lenses\.deals\.payload/);
  assert.equal(problems(yaml(`{ type: seyn, url: "https://api.seynlabs.com", key: k, sourceId: ${SEYN_SOURCE_ID}, maxRequestsPerSecond: 5 }`, ', payload: { title: name }, entityType: deal')), '');
});

test('a rejected record is dead-lettered with its code and message, the others delivered; dlq replay sends it again', async () => {
  const name = databaseName('seyn dlq');
  const db = await cluster.createDatabase(name);
  await cluster.query(db, `CREATE TABLE deals (id int PRIMARY KEY, name text)`);
  const file = writeYaml(name, db, 'initialSync: none');
  seyn.rejectRecord((r) => (r.entityType === name && r.recordId === '7' ? { code: 'INVALID_PAYLOAD', message: 'name must not be bad' } : undefined));
  const daemon = spawnCli(['run', '--config', file]);
  try {
    await eventually(async () => (await runCli(['status', '--config', file])).code === 0, 'the daemon runs', 30_000);
    await cluster.query(db, `INSERT INTO deals VALUES (6, 'good'), (7, 'bad'), (8, 'good')`);
    await eventually(() => seyn.latest(name).has('6') && seyn.latest(name).has('8'), 'the others delivered');
    const cli = (args: string[]) => runCli([...args, '--config', file], { TRIBUTARY_CONTROL_WAIT_MS: '20000' });
    await eventually(async () => /ids=7 .*INVALID_PAYLOAD: name must not be bad/.test((await cli(['dlq', 'list', '--lens', name])).output), 'the letter with code and message');
    assert.equal(seyn.latest(name).has('7'), false);
    seyn.rejectRecord(undefined);
    const replayed = await cli(['dlq', 'replay', '--lens', name]);
    assert.equal(replayed.code, 0, replayed.output);
    await eventually(() => seyn.latest(name).get('7')?.payload.name === 'bad', 'the replayed record');
    await eventually(async () => /dlq=0/.test((await cli(['status', '--lens', name])).output), 'no letter left');
  } finally {
    await stopDaemon(daemon);
  }
});

test('kill -9 in the middle of a full sync: a restart resumes after the last page accepted, nothing lost', async () => {
  const name = databaseName('seyn kill');
  const db = await cluster.createDatabase(name);
  await cluster.query(db, `CREATE TABLE deals (id int PRIMARY KEY, name text); INSERT INTO deals SELECT g, 'n' || g FROM generate_series(1, 20000) g`);
  const file = writeYaml(name, db, 'initialSync: full');
  seyn.setDelay(40);
  let daemon = spawnCli(['run', '--config', file]);
  await eventually(() => seyn.latest(name).size >= 5000, 'part of the full sync', 30_000);
  daemon.child.kill('SIGKILL');
  await daemon.exited;
  const before = seyn.latest(name).size;
  const sentBefore = countSent(name);
  seyn.setDelay(0);
  daemon = spawnCli(['run', '--config', file]);
  try {
    await eventually(() => seyn.latest(name).size === 20000, 'every row after the restart', 30_000);
    const resent = countSent(name) - sentBefore - (20000 - before);
    assert.ok(resent <= 1500, `the restart resumed (${resent} records sent again)`);
  } finally {
    await stopDaemon(daemon);
  }
});

function countSent(entityType: string): number {
  return seyn.requests.filter((r) => r.status === 202 && r.records[0]?.entityType === entityType).reduce((n, r) => n + r.records.length, 0);
}

/** A config file: one lens `name` on `deals` to the loopback Seyn, state in a temp dir. */
function writeYaml(name: string, db: string, lensExtra: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-seyn-'));
  const file = join(dir, 'tributary.yaml');
  writeFileSync(
    file,
    `sources:
  app: { type: postgres, url: "${db}", capture: logical, slot: ${name}, publication: ${name} }
lenses:
  ${name}: { source: app, table: deals, sink: s, maxWaitMs: 20, ${lensExtra} }
sinks:
  s: { type: seyn, url: "${seyn.url}", key: sk_live_test, sourceId: ${SEYN_SOURCE_ID}, onDelete: tombstone }
state: { type: embedded, path: "${join(dir, 'state')}" }
metrics: false
log: { level: warn }
pipeline: { drainTimeoutMs: 2000 }
`,
  );
  return file;
}

test('the loopback Seyn server checks each field as Seyn documents it; without keepRecords it counts distinct records', async () => {
  const server = await startSeynServer({ keepHistory: false, keepRecords: false });
  const record = { recordId: '1', entityType: 'deal', sourceUpdatedAt: '2026-06-10T14:03:00.000Z', payload: { name: 'Acme' } };
  const post = async (body: unknown, headers: Record<string, string> = {}) => {
    const res = await fetch(`${server.url}/v1/ingest`, {
      method: 'POST',
      headers: { authorization: 'Bearer sk_live_test', 'content-type': 'application/json', ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    const answer = (await res.json()) as { error?: { code: string; message: string } };
    return `${res.status} ${answer.error ? `${answer.error.code}: ${answer.error.message}` : 'accepted'}`;
  };
  try {
    const ingest = (records: unknown[]) => post({ sourceId: SEYN_SOURCE_ID, records });
    assert.equal(await ingest([{ ...record, extra: 1 }]), '400 VALIDATION_ERROR: records[0]: unknown field extra');
    assert.equal(await ingest([record, { ...record, sourceUpdatedAt: '2026-06-10 14:03:00' }]), '400 VALIDATION_ERROR: records[1].sourceUpdatedAt must be an ISO 8601 UTC date-time');
    assert.equal(await ingest([{ ...record, payload: [1] }]), '400 VALIDATION_ERROR: records[0].payload must be an object');
    assert.equal(await ingest([{ ...record, recordId: 1 }]), '400 VALIDATION_ERROR: records[0].recordId must be a non-empty string');
    assert.equal(await ingest(Array.from({ length: 501 }, () => record)), '400 VALIDATION_ERROR: records must be an array of 1 to 500 elements');
    assert.equal(await post({ sourceId: SEYN_SOURCE_ID, records: [record], batch: 1 }), '400 VALIDATION_ERROR: Unknown field: batch');
    assert.equal(await post('{"sourceId":'), '400 VALIDATION_ERROR: Request body must be valid JSON');
    assert.equal(await post({ sourceId: SEYN_SOURCE_ID, records: [record] }, { 'idempotency-key': 'batch-1' }), '400 VALIDATION_ERROR: Idempotency-Key must be a uuid');
    assert.equal(await post({ sourceId: SEYN_SOURCE_ID, records: [record] }, { 'content-type': 'text/plain' }), '415 UNSUPPORTED_MEDIA_TYPE: Content-Type must be application/json');
    assert.equal(await post({ sourceId: SEYN_SOURCE_ID, records: [record] }, { authorization: 'Bearer sk_live_readonly' }), '403 INSUFFICIENT_SCOPE: This API key does not have the ingest scope');
    assert.equal(await post({ sourceId: '00000000-0000-4000-8000-000000000000', records: [record] }), '404 SOURCE_NOT_FOUND: Source not found: 00000000-0000-4000-8000-000000000000');
    assert.equal(server.stored('deal'), 0, 'nothing of a refused request is stored');
    assert.equal(await ingest([record, { ...record, recordId: '2' }]), '202 accepted');
    assert.equal(await ingest([{ ...record, payload: { name: 'Acme 2' } }]), '202 accepted');
    assert.equal(server.stored('deal'), 2, 'two distinct records');
    assert.equal(server.latest('deal').size, 0, 'no versions kept');
  } finally {
    await server.close();
  }
});
