/**
 * The `kinesis` source: change records that another system (AWS DMS, Debezium Server) writes
 * to an Amazon Kinesis data stream. Tributary cannot reach the database: it reads the stream
 * (./index.ts), and each change carries its row.
 */
import type { CheckContext, PluginProblem, PluginSchema, SourceSpec } from '../../src/plugins.js';
import { qualifyTableName } from '../../src/table-name.js';
import { createKinesisConnector } from './index.js';

/** A Kinesis data stream of AWS DMS or Debezium change records. */
export interface KinesisSourceConfig {
  type: 'kinesis';
  /** The stream's name. */
  stream: string;
  /** The AWS region, e.g. `eu-west-1`. */
  region: string;
  /** Another endpoint than AWS's (kinesalite, LocalStack), e.g. `http://127.0.0.1:4567`. */
  endpoint?: string;
  /** Who wrote the records: `dms` (AWS DMS's Kinesis target, JSON) or `debezium` (Debezium Server's Kinesis sink, JSON). */
  format: 'dms' | 'debezium';
  /** Where a stream with no saved position starts: its oldest record, or records written from now on. */
  startAt: 'trim_horizon' | 'latest';
  /** The DMS task's BeforeImageSettings FieldName (the old values of an update). */
  beforeImageField: string;
  /** An idle shard (no records, at the tip) is read again after this, ms. */
  pollIntervalMs: number;
  /** Records asked for per GetRecords call (at most 10000). */
  recordsPerRead: number;
  /** The shard list is read again this often to find new shards (after a split or merge), ms. */
  shardRefreshMs: number;
}

const schema = {
  type: 'object',
  description:
    'An Amazon Kinesis data stream of change records written by AWS DMS (Kinesis target) or Debezium Server ' +
    '(Kinesis sink). Lenses need `primaryKey`; each change carries its row. Credentials come from the AWS default ' +
    'chain (environment, shared config and profiles, web identity, container or instance role) and are never logged.',
  additionalProperties: false,
  required: ['type', 'stream', 'region'],
  properties: {
    type: { const: 'kinesis', description: 'Source type.' },
    stream: { type: 'string', minLength: 1, maxLength: 128, description: 'The Kinesis data stream name.', examples: ['dms-app'] },
    region: { type: 'string', minLength: 1, description: 'The AWS region of the stream.', examples: ['eu-west-1'] },
    endpoint: {
      type: 'string',
      pattern: '^https?://',
      'x-expected': 'a URL like http://127.0.0.1:4567',
      description: 'Another endpoint than AWS (kinesalite, LocalStack). Default: the region\'s Kinesis endpoint.',
      examples: ['http://localstack:4566'],
    },
    format: {
      type: 'string',
      enum: ['dms', 'debezium'],
      default: 'dms',
      description:
        'Who wrote the records. `dms`: AWS DMS (message format JSON or JSON_UNFORMATTED); tables are matched by ' +
        'metadata schema-name.table-name. `debezium`: Debezium change events (envelope, with or without schema, or ' +
        'rows flattened by ExtractNewRecordState with add.fields=schema,table); tables by source.schema (or db).table.',
    },
    startAt: {
      type: 'string',
      enum: ['trim_horizon', 'latest'],
      default: 'trim_horizon',
      description:
        'Where a stream with no saved position starts: `trim_horizon`, its oldest record (a DMS full load still in ' +
        'the stream is read); `latest`, records written from the first start on. Later starts resume after the last ' +
        'delivered record of every shard.',
    },
    beforeImageField: {
      type: 'string',
      minLength: 1,
      default: 'before-image',
      description: "The DMS task's BeforeImageSettings FieldName: an update whose before image has another key is a delete of the old id and an upsert of the new one.",
    },
    pollIntervalMs: {
      type: 'integer',
      minimum: 200,
      maximum: 60000,
      default: 1000,
      description: 'An idle shard (no new records) is read again after this many milliseconds. Busy shards are read every 200 ms at most (the 5 reads a second a shard allows).',
    },
    recordsPerRead: {
      type: 'integer',
      minimum: 1,
      maximum: 10000,
      default: 10000,
      description: 'Records asked for per GetRecords call.',
    },
    shardRefreshMs: {
      type: 'integer',
      minimum: 1000,
      maximum: 3600000,
      default: 30000,
      description: 'The shard list is read again this often (milliseconds) to find shards added by a split or merge; a shard that ends triggers a read at once.',
    },
  },
} satisfies PluginSchema;

export const kinesisSpec: SourceSpec<KinesisSourceConfig> = {
  type: 'kinesis',
  schema,
  capabilities: { readsTables: false, requiresPrimaryKey: true, carriesRows: true },
  // A bare table is matched as `public.table` (DMS and Debezium name a table by schema and table;
  // a MySQL source's schema is its database: write `database.table`).
  problems: tableReadingProblems,
  qualifyTable: (table) => qualifyTableName(table, 'public', '"') ?? table,
  create: (config, ctx) => createKinesisConnector(config, ctx),
};

/** Settings that read the table (polling, sweeps) mean nothing on a stream. */
const TABLE_READING = ['changeTrackingColumn', 'syncInterval', 'smartSyncInterval'];

function tableReadingProblems({ name, lenses }: CheckContext): PluginProblem[] {
  return lenses.flatMap(([lens, raw]) =>
    TABLE_READING.filter((key) => raw[key] !== undefined).map((key) => ({
      path: ['lenses', lens, key],
      message: `source "${name}" is a Kinesis stream and reads no tables: remove ${key} (changes come from the stream only)`,
    })),
  );
}
