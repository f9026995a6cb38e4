/**
 * The Kinesis source against kinesalite in-process: the DMS and Debezium decoders, a full load
 * then live changes over two shards (key changes with before-images, composite keys, control
 * records, other tables, malformed records), a split and a merge mid-stream, and a daemon
 * killed with -9 while records keep coming. The final action of every id is checked.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createConnector } from '../connectors/index.js';
import { debeziumDecoder } from '../connectors/json-records/debezium.js';
import { dmsDecoder } from '../connectors/kinesis/dms.js';
import { jsonRowId } from '../connectors/json-records/json-ids.js';
import type { KinesisSourceConfig } from '../connectors/kinesis/spec.js';
import { createLogger } from '../src/log.js';
import type { Action, ConnectorContext, SourceConnector } from '../src/types.js';
import { Recorder, lensConfig } from './helpers/connector-contract.js';
import { eventually, runCli, spawnCli, startTestDaemon, stopDaemon } from './helpers/daemon.js';
import { SEYN_SOURCE_ID, startSeynServer } from './helpers/seyn-server.js';
import { parseConfig } from '../src/config/load.js';
import { AWS_TEST_ENV, debeziumRecord, dmsControl, dmsRecord, startKinesis, type TestKinesis, type TestRecord } from './helpers/kinesis.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';

const log = createLogger({ level: process.env.TRIBUTARY_TEST_LOG ?? 'fatal' });
let kinesis: TestKinesis;
let sink: SemilayerServer;
const open: SourceConnector[] = [];

before(async () => {
  [kinesis, sink] = await Promise.all([startKinesis(), startSemilayerServer()]);
});
after(async () => {
  await Promise.all(open.map((c) => c.stop()));
  await Promise.all([kinesis?.stop(), sink?.close()]);
});

/** Lenses by name: table and key. */
type Lenses = Record<string, { table: string; primaryKey: string[] }>;

async function startConnector(config: KinesisSourceConfig, lenses: Lenses, saved?: string) {
  const rec = new Recorder();
  const ctx: ConnectorContext = {
    sourceName: 'app',
    lenses: Object.entries(lenses).map(([name, l]) => ({ name, ...l, config: lensConfig('app', l.table, { primaryKey: l.primaryKey }) })),
    log,
    report: rec,
  };
  const connector = await createConnector(config, ctx);
  open.push(connector);
  await connector.start(rec, saved);
  return { rec, connector };
}

/** Every action the recorder saw for each id of `lens`, in order. */
function actions(rec: Recorder, lens: string): Map<string, Action[]> {
  const out = new Map<string, Action[]>();
  for (const e of rec.events) if ('change' in e && e.change.lens === lens) out.set(e.change.id, [...(out.get(e.change.id) ?? []), e.change.action]);
  return out;
}

const last = (rec: Recorder, lens: string) => new Map([...actions(rec, lens)].map(([id, a]) => [id, a[a.length - 1]]));
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

test('decoders: DMS and Debezium records, and ids from JSON values', () => {
  const dms = dmsDecoder();
  const rec = (r: TestRecord) => JSON.stringify(r.data);
  const noTime = (d: object) => ({ ...d, committedAt: undefined });
  assert.deepEqual(noTime(dms(rec(dmsRecord('public.items', 'update', { id: 8, name: 'b' }, { before: { id: 7 } })))), {
    kind: 'change', table: 'public.items', action: 'upsert', row: { id: 8, name: 'b' }, keyRow: { id: 8, name: 'b' }, before: { id: 7 }, committedAt: undefined,
  });
  assert.equal(dms(rec(dmsRecord('public.items', 'delete', { id: 3, name: null }))).kind, 'change');
  assert.deepEqual(dms(rec(dmsControl('public.items'))), { kind: 'skip', why: 'control record' });
  assert.equal(dms('{oops').kind, 'invalid');
  assert.equal(dms('{"data":{}}').kind, 'invalid');
  assert.ok(Math.abs(((dms(rec(dmsRecord('s.t', 'insert', { id: 1 }))) as { committedAt: number }).committedAt) - Date.now()) < 5000, 'DMS timestamps with microseconds parse');

  const dbz = debeziumDecoder;
  assert.deepEqual(noTime(dbz(rec(debeziumRecord('public.items', 'd', { before: { id: 4 } }, true)))), { kind: 'change', table: 'public.items', action: 'delete', row: null, keyRow: { id: 4 }, committedAt: undefined });
  assert.equal(dbz(rec(debeziumRecord('public.items', 't', {}))).kind, 'truncate');
  assert.deepEqual(dbz('null'), { kind: 'skip', why: 'tombstone' });
  assert.deepEqual(dbz('{"schema":{},"payload":null}'), { kind: 'skip', why: 'tombstone' });
  const flat = dbz(JSON.stringify({ id: 5, name: null, __deleted: 'true', __schema: 'public', __table: 'items' }));
  assert.deepEqual(flat, { kind: 'change', table: 'public.items', action: 'delete', row: null, keyRow: { id: 5, name: null }, committedAt: undefined });
  assert.equal(dbz('{"id":1}').kind, 'invalid');

  assert.equal(jsonRowId({ id: 42 }, ['id']), '42');
  assert.equal(jsonRowId({ sku: 'p_7', region: 'eu', n: 7, ok: true }, ['n', 'region', 'ok']), '[7,"eu",true]');
  assert.equal(jsonRowId({ id: null }, ['id']), undefined);
});

test('DMS: a full load then live changes over two shards; key changes, composite keys, control records, other tables, malformed records', async () => {
  await kinesis.createStream('dms-main', 2);
  const lenses: Lenses = { items: { table: 'public.items', primaryKey: ['id'] }, lines: { table: 'public.lines', primaryKey: ['order_id', 'line_no'] } };
  const { rec, connector } = await startConnector(kinesis.sourceConfig('dms-main'), lenses);
  const line = (order_id: number, line_no: number, qty = 1) => ({ order_id, line_no, qty });
  const lineKey = (l: { order_id: number; line_no: number }) => `${l.order_id}-${l.line_no}`;

  // Full load: every row once, then a control record and rows of a table no lens reads.
  await kinesis.put('dms-main', [
    dmsControl('public.items'),
    ...range(1, 50).map((id) => dmsRecord('public.items', 'load', { id, name: `n${id}` })),
    ...[line(1, 1), line(1, 2), line(2, 1)].map((l) => dmsRecord('public.lines', 'load', l, { key: lineKey(l) })),
    ...range(1, 3).map((id) => dmsRecord('public.other', 'load', { id })),
  ]);
  await eventually(() => actions(rec, 'items').size === 50 && actions(rec, 'lines').size === 3, 'the full load');

  // Live changes, and three records nobody can read.
  await kinesis.put('dms-main', [
    ...range(51, 60).map((id) => dmsRecord('public.items', 'insert', { id, name: `n${id}` })),
    dmsRecord('public.items', 'update', { id: 5, name: 'five' }, { before: { id: 5 } }),
    dmsRecord('public.items', 'update', { id: 700, name: 'seven' }, { before: { id: 7 } }),
    dmsRecord('public.items', 'delete', { id: 10, name: null }),
    dmsRecord('public.lines', 'update', line(1, 3, 2), { before: { order_id: 1, line_no: 2 }, key: '1-3' }),
    dmsRecord('public.lines', 'delete', { order_id: 2, line_no: 1, qty: null }, { key: '2-1' }),
    { key: 'x', data: 'not json {' },
    { key: 'y', data: { data: { id: 1 } } },
    dmsRecord('public.items', 'insert', { name: 'no key' }, { key: 'z' }),
  ]);
  await eventually(() => rec.rejected.length === 3 && last(rec, 'items').get('10') === 'delete' && last(rec, 'lines').get('[2,1]') === 'delete', 'the live changes');

  const items = last(rec, 'items');
  for (const id of range(1, 60)) assert.equal(items.get(String(id)), id === 7 || id === 10 ? 'delete' : 'upsert', `items ${id}`);
  assert.equal(items.get('700'), 'upsert');
  assert.deepEqual(Object.fromEntries(last(rec, 'lines')), { '[1,1]': 'upsert', '[1,2]': 'delete', '[1,3]': 'upsert', '[2,1]': 'delete' });
  const five = rec.events.flatMap((e) => ('change' in e && e.change.id === '5' ? [e.change] : []));
  assert.deepEqual(five.map((c) => c.row), [{ id: 5, name: 'n5' }, { id: 5, name: 'five' }], 'the row travels with the change');
  assert.equal(rec.events.flatMap((e) => ('change' in e && e.change.id === '10' && e.change.action === 'delete' ? [e.change.row] : []))[0], null);

  // Records of different keys are in different shards: no order between them.
  const rejected = new Map(rec.rejected.map((r) => [r.raw, r]));
  assert.deepEqual(rejected.get('not json {') && [rejected.get('not json {')!.lens, rejected.get('not json {')!.reason], [undefined, 'the record is not JSON']);
  assert.equal(rejected.get('{"data":{"id":1}}')?.lens, undefined);
  assert.equal(rec.rejected.find((r) => r.raw.includes('no key'))?.lens, 'items');
  for (const r of rec.rejected) assert.match(r.where, /^shardId-\d+@\d+$/);
  assert.equal((await connector.lag!()).skippedRecords, 3, 'records of other tables are counted');
  assert.deepEqual(Object.keys(connector.partLag!()).sort(), ['shardId-000000000000', 'shardId-000000000001']);
  await connector.stop();
});

test('a split and a merge mid-stream: parents are read to their end before their children, so each key keeps its order', async () => {
  await kinesis.createStream('dms-reshard', 2);
  const ids = range(1, 60);
  // A backlog across a split: the parent holds the inserts, its children the updates. Read
  // at once, the children's updates would come before the parent's inserts.
  await kinesis.put('dms-reshard', ids.map((id) => dmsRecord('public.items', 'insert', { id })));
  await kinesis.split('dms-reshard', 'shardId-000000000000'); // children 2 and 3
  await kinesis.put('dms-reshard', ids.map((id) => dmsRecord('public.items', 'update', { id, v: 2 })));
  const { rec, connector } = await startConnector(kinesis.sourceConfig('dms-reshard', { recordsPerRead: 10 }), { items: { table: 'public.items', primaryKey: ['id'] } });
  // A merge while it reads.
  await kinesis.merge('dms-reshard', 'shardId-000000000002', 'shardId-000000000003'); // child 4
  await kinesis.put('dms-reshard', ids.filter((id) => id % 2 === 0).map((id) => dmsRecord('public.items', 'delete', { id })));
  await eventually(() => ids.every((id) => actions(rec, 'items').get(String(id))?.length === (id % 2 === 0 ? 3 : 2)), 'every change', 20_000);
  // Inserts and updates are both upserts: their rows tell them apart.
  const versions = new Map<string, Array<number | null>>();
  for (const e of rec.events) if ('change' in e) versions.set(e.change.id, [...(versions.get(e.change.id) ?? []), e.change.row ? ((e.change.row.v as number) ?? 1) : null]);
  for (const id of ids) assert.deepEqual(versions.get(String(id)), id % 2 === 0 ? [1, 2, null] : [1, 2], `id ${id}: insert, update${id % 2 === 0 ? ', delete' : ''} in order`);
  const position = JSON.parse(rec.covering() ?? rec.events.flatMap((e) => ('checkpoint' in e ? [e.checkpoint] : [])).pop()!);
  assert.deepEqual(position.done.sort(), ['shardId-000000000000', 'shardId-000000000002', 'shardId-000000000003']);
  await connector.stop();
});

test('Debezium: envelopes with and without schema, flattened rows, key changes, deletes, tombstones and truncates', async () => {
  await kinesis.createStream('dbz', 2);
  const { rec, connector } = await startConnector(kinesis.sourceConfig('dbz', { format: 'debezium' }), { items: { table: 'public.items', primaryKey: ['id'] } });
  await kinesis.put('dbz', [
    debeziumRecord('public.items', 'r', { after: { id: 1, name: 'a' } }),
    debeziumRecord('public.items', 'c', { after: { id: 2, name: 'b' } }, true),
    { ...debeziumRecord('public.items', 'u', { before: { id: 1 }, after: { id: 11, name: 'a' } }), key: '1' }, // the old key's shard: after id 1's create
    debeziumRecord('public.items', 'd', { before: { id: 2 } }, true),
    { key: '2', data: 'null' },
    { key: '3', data: { id: 3, name: 'c', __deleted: 'false', __schema: 'public', __table: 'items' } },
    { key: '4', data: { id: 4, name: 'd', __schema: 'public', __table: 'items' } },
    { key: '4', data: { id: 4, name: null, __deleted: 'true', __schema: 'public', __table: 'items' } },
    debeziumRecord('public.other', 'c', { after: { id: 9 } }),
    debeziumRecord('public.items', 't', {}),
  ]);
  await eventually(() => rec.resyncs.length === 1 && last(rec, 'items').get('4') === 'delete' && last(rec, 'items').get('2') === 'delete', 'every change');
  assert.deepEqual(Object.fromEntries(last(rec, 'items')), { '1': 'delete', '2': 'delete', '3': 'upsert', '4': 'delete', '11': 'upsert' });
  assert.deepEqual(rec.resyncs.map((r) => r.lens), ['items']);
  assert.equal(rec.rejected.length, 0);
  await connector.stop();
});

test('startAt latest: a first start skips what is already in the stream, and its restart resumes from that start', async () => {
  await kinesis.createStream('dms-latest', 2);
  await kinesis.put('dms-latest', range(1, 20).map((id) => dmsRecord('public.items', 'insert', { id })));
  await new Promise((resolve) => setTimeout(resolve, 1100)); // AT_TIMESTAMP has a resolution of a second or so
  const lenses: Lenses = { items: { table: 'public.items', primaryKey: ['id'] } };
  let { rec, connector } = await startConnector(kinesis.sourceConfig('dms-latest', { startAt: 'latest' }), lenses);
  const first = rec.covering()!;
  await connector.stop();
  await kinesis.put('dms-latest', range(21, 30).map((id) => dmsRecord('public.items', 'insert', { id })));
  ({ rec, connector } = await startConnector(kinesis.sourceConfig('dms-latest', { startAt: 'latest' }), lenses, first));
  await eventually(() => last(rec, 'items').size === 10, 'the records written after the first start');
  assert.deepEqual([...last(rec, 'items').keys()].map(Number).sort((a, b) => a - b), range(21, 30));
  await connector.stop();
});

test('a daemon killed with -9 resumes after its last delivered records; records written while it was down arrive; a malformed record is dead-lettered', async () => {
  await kinesis.createStream('dms-crash', 2);
  const dir = mkdtempSync(join(tmpdir(), 'tributary-kinesis-'));
  const file = join(dir, 'tributary.yaml');
  const yaml = [
    'sources:',
    `  app: { type: kinesis, stream: dms-crash, region: us-east-1, endpoint: "${kinesis.endpoint}", pollIntervalMs: 200, shardRefreshMs: 1000 }`,
    'lenses:',
    '  items: { source: app, table: items, primaryKey: [id], sink: hosted, initialSync: none, maxWaitMs: 20 }',
    'sinks:',
    `  hosted: { type: semilayer, url: "${sink.url}", key: ik_test }`,
    `state: { type: embedded, path: "${join(dir, 'data')}" }`,
    'metrics: false',
    'log: { level: warn }',
  ].join('\n');
  writeFileSync(file, yaml);
  const run = () => spawnCli(['run', '--config', file], AWS_TEST_ENV);
  const expected = new Map<string, Action>();
  const write = async (records: TestRecord[]) => {
    await kinesis.put('dms-crash', records);
    for (const r of records) {
      const d = r.data as { data?: { id: number }; metadata?: { operation: string } };
      if (d.data && d.metadata) expected.set(String(d.data.id), d.metadata.operation === 'delete' ? 'delete' : 'upsert');
    }
  };
  const delivered = () => [...expected].every(([id, action]) => sink.lastAction('items').get(id) === action);

  let daemon = run();
  await write(range(1, 300).map((id) => dmsRecord('public.items', 'insert', { id })));
  await eventually(delivered, 'the first 300 inserts', 20_000);
  await new Promise((resolve) => setTimeout(resolve, 1500)); // the acknowledged position is saved every second
  daemon.child.kill('SIGKILL');
  await daemon.exited;

  await write([...range(1, 300).filter((id) => id % 3 === 0).map((id) => dmsRecord('public.items', 'delete', { id })), ...range(301, 400).map((id) => dmsRecord('public.items', 'insert', { id }))]);
  await write([{ key: 'bad', data: '\u0000garbage' }]);
  const before = sink.counts('items');
  daemon = run();
  await eventually(delivered, 'the changes written while the daemon was down', 20_000);
  assert.ok(sink.counts('items') - before < 300, `resumed after the saved position, not from the start (${sink.counts('items') - before} changes again)`);
  const status = await runCli(['status', '--config', file]);
  assert.match(status.output, /lag=shardId-000000000000:\d+ms,shardId-000000000001:\d+ms/, status.output);
  await stopDaemon(daemon);

  const dlq = await runCli(['dlq', 'list', '--config', file, '--json']);
  const letters = JSON.parse(dlq.output) as Array<{ lens: string; reason: string; provenance: { record: string; position: string } }>;
  assert.equal(letters.length, 1, dlq.output);
  assert.equal(letters[0].lens, 'app', 'a record no lens can be told goes under the source name');
  assert.equal(letters[0].provenance.record, '\u0000garbage');
  assert.match(letters[0].provenance.position, /^shardId-\d+@\d+$/);
});

test('rows travel with the changes: DMS records reach a payload sink (seyn) with no database anywhere, the last row per id wins', async () => {
  const seyn = await startSeynServer();
  try {
    await kinesis.createStream('dms-rows', 2);
    const config = parseConfig(
      [
        'sources:',
        `  app: { type: kinesis, stream: dms-rows, region: us-east-1, endpoint: "${kinesis.endpoint}", pollIntervalMs: 200 }`,
        'lenses:',
        '  items: { source: app, table: items, primaryKey: [id], payload: [id, name], entityType: item, sink: seyn, initialSync: none, maxWaitMs: 20 }',
        'sinks:',
        `  seyn: { type: seyn, url: "${seyn.url}", key: sk_live_test, sourceId: ${SEYN_SOURCE_ID}, onDelete: tombstone }`,
        `state: { type: embedded, path: "${mkdtempSync(join(tmpdir(), 'tributary-kinesis-rows-'))}" }`,
        'metrics: false',
      ].join('\n'),
      'rows.yaml',
      {},
    );
    const daemon = await startTestDaemon(config);
    await kinesis.put('dms-rows', [
      ...range(1, 20).map((id) => dmsRecord('public.items', 'insert', { id, name: `first ${id}`, secret: 'not in the payload' })),
      ...range(1, 10).map((id) => dmsRecord('public.items', 'update', { id, name: `second ${id}` })),
      dmsRecord('public.items', 'delete', { id: 20, name: null }),
    ]);
    await eventually(() => seyn.latest('item').size === 20 && seyn.latest('item').get('20')?.payload._deleted === true, 'every id at its last row', 20_000);
    for (const id of range(1, 19)) {
      assert.deepEqual(seyn.latest('item').get(String(id))?.payload, { id, name: `${id <= 10 ? 'second' : 'first'} ${id}` }, `id ${id}`);
    }
    assert.equal(await daemon.stop(), 0);
  } finally {
    await seyn.close();
  }
});
