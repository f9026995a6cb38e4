/**
 * The Kinesis source on an in-process kinesalite: a backlog of BENCH_KINESIS_BACKLOG DMS insert
 * records (default 200,000) over 4 shards, read
 * - by the reference: bare GetRecords calls (10,000 records each, all shards at once, no
 *   decoding), from TRIM_HORIZON to the tip;
 * - by the daemon (child process, semilayer sink on loopback), from a first start at
 *   trim_horizon until the sink has counted every change; with its peak RSS (VmHWM).
 * kinesalite runs in the bench process and serves both, so both rates include its cost.
 */
import { GetRecordsCommand, GetShardIteratorCommand } from '@aws-sdk/client-kinesis';
import { dmsRecord, startKinesis, type TestKinesis } from '../test/helpers/kinesis.js';
import { freePort } from '../test/helpers/postgres.js';
import { startSemilayerServer } from '../test/helpers/semilayer-server.js';
import { MB, fmt, progress, tempDir, timeBacklog, type Row } from './lib.js';

const BACKLOG = Number(process.env.BENCH_KINESIS_BACKLOG ?? 200_000);
const SHARDS = 4;
const STREAM = 'bench';

export async function kinesisBacklog(rows: Row[]): Promise<void> {
  progress(`kinesis: backlog of ${fmt(BACKLOG)} DMS records over ${SHARDS} shards in kinesalite`);
  const [kinesis, sink] = await Promise.all([startKinesis(), startSemilayerServer({ recordChanges: false })]);
  try {
    await kinesis.createStream(STREAM, SHARDS);
    const at = performance.now();
    for (let from = 1; from <= BACKLOG; from += 5_000) {
      const ids = Array.from({ length: Math.min(5_000, BACKLOG - from + 1) }, (_, i) => from + i);
      await kinesis.put(STREAM, ids.map((id) => dmsRecord('public.items', 'load', { id, name: `item ${id}`, price: id % 1000, description: 'payload of sixty-five characters, more or less, for each record' })));
    }
    progress(`  backlog written in ${((performance.now() - at) / 1000).toFixed(1)} s`);

    const refSeconds = await bareRead(kinesis);
    const refRate = BACKLOG / refSeconds;
    progress(`  bare GetRecords read it in ${refSeconds.toFixed(2)} s (${fmt(refRate)} records/s)`);

    const stateDir = tempDir('kinesis-state-');
    const metricsPort = await freePort();
    const yaml = `
sources:
  app: { type: kinesis, stream: ${STREAM}, region: us-east-1, endpoint: "${kinesis.endpoint}" }
lenses:
  items: { source: app, table: items, primaryKey: [id], sink: loopback, initialSync: none, maxWaitMs: 200 }
sinks:
  loopback: { type: semilayer, url: ${sink.url}, key: ik_test, timeoutMs: 30000 }
state: { type: embedded, path: ${stateDir} }
metrics: { listen: 127.0.0.1:${metricsPort} }
log: { level: info }
`;
    const { rate, streamingRate, rss } = await timeBacklog(yaml, metricsPort, stateDir, (lens) => sink.counts(lens), 'items', BACKLOG);
    rows.push({
      metric: `Kinesis (DMS records, ${SHARDS} shards) → delivered batches, ${fmt(BACKLOG)}-record backlog (records/s from spawn; once streaming)`,
      tributary: `${fmt(rate)}; ${fmt(streamingRate)}`,
      reference: `bare GetRecords: ${fmt(refRate)} records/s`,
      goal: `≥ 0.5×: ${fmt(rate / refRate, 2)}×; ${fmt(streamingRate / refRate, 2)}×`,
      pass: rate / refRate >= 0.5 ? 'yes' : 'no',
    });
    rows.push({ metric: `Kinesis: peak RSS (VmHWM) catching up ${fmt(BACKLOG)} records (MB)`, tributary: fmt(rss / MB, 1), reference: '—', goal: 'bounded (pipeline.maxPendingChanges)', pass: 'info' });
  } finally {
    await sink.close();
    await kinesis.stop();
  }
}

/** Reads every shard from TRIM_HORIZON to the tip with bare GetRecords calls, all shards at once; returns seconds. */
async function bareRead(kinesis: TestKinesis): Promise<number> {
  const start = performance.now();
  let total = 0;
  await Promise.all(
    (await kinesis.shards(STREAM)).map(async (shard) => {
      let iterator = (await kinesis.client.send(new GetShardIteratorCommand({ StreamName: STREAM, ShardId: shard.ShardId, ShardIteratorType: 'TRIM_HORIZON' }))).ShardIterator;
      while (iterator) {
        const out = await kinesis.client.send(new GetRecordsCommand({ ShardIterator: iterator, Limit: 10_000 }));
        total += out.Records?.length ?? 0;
        if (!out.MillisBehindLatest && (out.Records?.length ?? 0) === 0) break;
        iterator = out.NextShardIterator;
      }
    }),
  );
  if (total !== BACKLOG) throw new Error(`bare GetRecords read ${total} records, not ${BACKLOG}`);
  return (performance.now() - start) / 1000;
}
