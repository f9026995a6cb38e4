/**
 * An in-process Kinesis (kinesalite, in memory) on a free loopback port, with what the tests
 * and benchmarks write to it: streams, DMS- and Debezium-shaped records, shard splits and
 * merges. AWS DMS and Debezium Server cannot run here; their records are written as they
 * would write them, with the primary key as the partition key.
 */
import { CreateStreamCommand, DescribeStreamSummaryCommand, KinesisClient, ListShardsCommand, MergeShardsCommand, PutRecordsCommand, SplitShardCommand, type Shard } from '@aws-sdk/client-kinesis';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import kinesalite from 'kinesalite';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { KinesisSourceConfig } from '../../connectors/kinesis/spec.js';

/** The connector reads credentials from the AWS default chain: dummy ones from the environment, no instance metadata. */
export const AWS_TEST_ENV = {
  AWS_ACCESS_KEY_ID: 'test',
  AWS_SECRET_ACCESS_KEY: 'test',
  AWS_REGION: 'us-east-1',
  AWS_EC2_METADATA_DISABLED: 'true',
  // The SDK warns once per process that its releases after early 2027 need Node 22; the pinned one runs on Node 20.
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
};
Object.assign(process.env, AWS_TEST_ENV);

/** One record to put: its partition key and its data (a string as is, anything else as JSON). */
export interface TestRecord {
  key: string;
  data: unknown;
}

export interface TestKinesis {
  endpoint: string;
  client: KinesisClient;
  /** Creates a stream of `shards` shards and waits until it is active. */
  createStream(stream: string, shards: number): Promise<void>;
  /** Puts records in order (PutRecords, 500 at a time; records of one key stay in order in their shard). */
  put(stream: string, records: TestRecord[]): Promise<void>;
  shards(stream: string): Promise<Shard[]>;
  /** Splits a shard at the middle of its hash range; waits until the stream is active again. */
  split(stream: string, shardId: string): Promise<void>;
  /** Merges two adjacent shards; waits until the stream is active again. */
  merge(stream: string, shardId: string, adjacentShardId: string): Promise<void>;
  /** A source config for `stream` (DMS records, from the oldest record, idle shards read every 200 ms). */
  sourceConfig(stream: string, extra?: Partial<KinesisSourceConfig>): KinesisSourceConfig;
  stop(): Promise<void>;
}

export async function startKinesis(): Promise<TestKinesis> {
  const server = kinesalite({ ssl: false, createStreamMs: 20, deleteStreamMs: 20, updateStreamMs: 20, shardLimit: 100 });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = new KinesisClient({ endpoint, region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' }, requestHandler: new NodeHttpHandler() });

  async function active(stream: string): Promise<void> {
    for (;;) {
      const out = await client.send(new DescribeStreamSummaryCommand({ StreamName: stream }));
      if (out.StreamDescriptionSummary?.StreamStatus === 'ACTIVE') return;
      await sleep(20);
    }
  }

  const shards = async (stream: string) => (await client.send(new ListShardsCommand({ StreamName: stream }))).Shards ?? [];

  return {
    endpoint,
    client,
    async createStream(stream, count) {
      await client.send(new CreateStreamCommand({ StreamName: stream, ShardCount: count }));
      await active(stream);
    },
    async put(stream, records) {
      for (let i = 0; i < records.length; i += 500) {
        const chunk = records.slice(i, i + 500).map((r) => ({ PartitionKey: r.key, Data: Buffer.from(typeof r.data === 'string' ? r.data : JSON.stringify(r.data)) }));
        const out = await client.send(new PutRecordsCommand({ StreamName: stream, Records: chunk }));
        if (out.FailedRecordCount) throw new Error(`kinesalite refused ${out.FailedRecordCount} record(s)`);
      }
    },
    shards,
    async split(stream, shardId) {
      const shard = (await shards(stream)).find((s) => s.ShardId === shardId)!;
      const mid = (BigInt(shard.HashKeyRange!.StartingHashKey!) + BigInt(shard.HashKeyRange!.EndingHashKey!)) / 2n;
      await client.send(new SplitShardCommand({ StreamName: stream, ShardToSplit: shardId, NewStartingHashKey: mid.toString() }));
      await active(stream);
    },
    async merge(stream, shardId, adjacentShardId) {
      await client.send(new MergeShardsCommand({ StreamName: stream, ShardToMerge: shardId, AdjacentShardToMerge: adjacentShardId }));
      await active(stream);
    },
    sourceConfig: (stream, extra = {}) => ({
      type: 'kinesis', stream, region: 'us-east-1', endpoint, format: 'dms', startAt: 'trim_horizon', beforeImageField: 'before-image',
      pollIntervalMs: 200, recordsPerRead: 10_000, shardRefreshMs: 1000, ...extra,
    }),
    async stop() {
      client.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** DMS's operations. */
export type DmsOperation = 'load' | 'insert' | 'update' | 'delete';

/** A DMS data record as its Kinesis target writes it (partition key: the primary key). */
export function dmsRecord(table: string, operation: DmsOperation, data: Record<string, unknown>, options: { before?: Record<string, unknown>; key?: string } = {}): TestRecord {
  const [schema, name] = table.split('.');
  return {
    key: options.key ?? String(data.id),
    data: {
      data,
      metadata: { timestamp: new Date().toISOString().replace('Z', '000Z'), 'record-type': 'data', operation, 'partition-key-type': 'primary-key', 'schema-name': schema, 'table-name': name, 'transaction-id': 1 },
      ...(options.before ? { 'before-image': options.before } : {}),
    },
  };
}

/** A DMS control record (a table's DDL), which carries no row change. */
export function dmsControl(table: string): TestRecord {
  const [schema, name] = table.split('.');
  return { key: table, data: { control: { 'table-def': { columns: {} } }, metadata: { timestamp: new Date().toISOString(), 'record-type': 'control', operation: 'create-table', 'schema-name': schema, 'table-name': name } } };
}

/** A Debezium envelope (with the JSON converter's schema wrapper when `wrapped`). */
export function debeziumRecord(table: string, op: 'c' | 'r' | 'u' | 'd' | 't', rows: { before?: Record<string, unknown> | null; after?: Record<string, unknown> | null }, wrapped = false): TestRecord {
  const [schema, name] = table.split('.');
  const payload = { before: rows.before ?? null, after: rows.after ?? null, source: { connector: 'postgresql', db: 'app', schema, table: name, ts_ms: Date.now() }, op, ts_ms: Date.now() };
  const key = String((rows.after ?? rows.before)?.id ?? table);
  return { key, data: wrapped ? { schema: { type: 'struct', optional: false }, payload } : payload };
}
