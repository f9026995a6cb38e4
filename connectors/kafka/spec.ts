/**
 * The `kafka` source: change events read from Kafka topics by a consumer group: Debezium's
 * (`format: debezium`) or another Tributary's bus (`format: tributary`, src/bus.ts).
 */
import type { CheckContext, PluginProblem, PluginSchema, SourceSpec } from '../../src/plugins.js';
import { kafkaConnectionProperties, type KafkaConnection } from '../../src/kafka.js';
import { SourceSetupError } from '../../src/errors.js';
import { createMysqlReader } from '../mysql/reader.js';
import { createPostgresReader } from '../postgres/reader.js';
import { createKafkaConnector } from './index.js';
import { tributaryDecoder } from './tributary.js';
import { debeziumDecoder } from './debezium.js';

export interface KafkaSourceConfig extends KafkaConnection {
  type: 'kafka';
  /** The topics to read; or `topicPattern`. */
  topics?: string[];
  /** A regular expression over topic names (e.g. `^app\.public\.`); or `topics`. */
  topicPattern?: string;
  /** The consumer group: its committed offsets are the source's position; replicas share it. */
  groupId: string;
  /** `debezium`: Debezium change events; `tributary`: the bus another Tributary's kafka sink writes. */
  format: 'debezium' | 'tributary';
  /** A group with no committed offsets starts at the topics' beginning (default) or their end. */
  fromBeginning: boolean;
  /** The group drops a member silent this long and hands its partitions to the others, ms. */
  sessionTimeoutMs: number;
  /**
   * The database the lenses' rows are read from (`postgres://…` or `mysql://…`), for sinks that
   * re-read rows by id (the worker sink of worker replicas on the bus). Never logged with its password.
   */
  rowsFrom?: string;
}

const schema = {
  type: 'object',
  description: 'Kafka topics read by a consumer group: Debezium change events, or the change bus of another Tributary (format: tributary).',
  additionalProperties: false,
  required: ['type', 'brokers', 'groupId', 'format'],
  properties: {
    type: { const: 'kafka', description: 'Source type.' },
    ...kafkaConnectionProperties,
    topics: {
      type: 'array',
      minItems: 1,
      items: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,249}$', 'x-expected': 'a Kafka topic name (letters, digits, . _ -)' },
      description: 'The topics to read (or topicPattern). Debezium writes one per table: <topic.prefix>.<schema>.<table>.',
      examples: [['app.public.products']],
    },
    topicPattern: { type: 'string', minLength: 1, description: 'A regular expression over topic names to read (or topics).', examples: ['^app\\.public\\.'] },
    groupId: {
      type: 'string',
      minLength: 1,
      description: "The consumer group. Its committed offsets are the source's position; worker replicas share one group and split the partitions.",
    },
    format: {
      type: 'string',
      enum: ['debezium', 'tributary'],
      description:
        '`debezium`: Debezium change events (JSON, with or without schemas, or unwrapped by ExtractNewRecordState); lenses match by ' +
        'source.schema and source.table, ids come from the event key. `tributary`: the bus a kafka sink writes; lenses match by name.',
    },
    fromBeginning: { type: 'boolean', default: true, description: 'A group with no committed offsets starts at the beginning of the topics (false: at their end).' },
    sessionTimeoutMs: {
      type: 'integer',
      minimum: 6000,
      maximum: 300000,
      default: 30000,
      description: 'A member silent this long (a killed replica) is dropped and its partitions go to the others, in milliseconds.',
    },
    rowsFrom: {
      type: 'string',
      pattern: '^(postgres|postgresql|mysql)://',
      'x-expected': 'a database URL like postgres://tributary:${PGPASSWORD}@db:5432/app',
      description:
        "The database the lenses' tables are in, for sinks that re-read rows by id (the worker sink: worker replicas reading the bus). " +
        'A user with SELECT on the lens tables is enough. Never logged with its password.',
    },
  },
} satisfies PluginSchema;

/** Exactly one of `topics` and `topicPattern`, and a pattern that compiles. */
function topicProblems(name: string, raw: Record<string, unknown>): PluginProblem[] {
  const path = ['sources', name];
  if ((raw.topics === undefined) === (raw.topicPattern === undefined)) return [{ path, message: 'set exactly one of topics and topicPattern' }];
  if (typeof raw.topicPattern === 'string') {
    try {
      new RegExp(raw.topicPattern);
    } catch (err) {
      return [{ path: [...path, 'topicPattern'], message: `not a regular expression: ${(err as Error).message}` }];
    }
  }
  return [];
}

/**
 * Smart sync sweeps assume one reader of the source (their journal and snapshots are the
 * lens's), and every replica in the group reads a kafka source.
 */
function sweepProblems(name: string, lenses: CheckContext['lenses']): PluginProblem[] {
  return lenses
    .filter(([, raw]) => raw.smartSyncInterval !== undefined)
    .map(([lens]) => ({
      path: ['lenses', lens, 'smartSyncInterval'],
      message: `source "${name}" is read by every replica of its consumer group, and a sweep assumes one reader: remove smartSyncInterval (sweep on the capture side, whose changes reach the topic)`,
    }));
}

export const kafkaSourceSpec: SourceSpec<KafkaSourceConfig> = {
  type: 'kafka',
  schema,
  // Its consumer group gives each partition to one replica: every replica reads (no source lease).
  capabilities: {
    readsTables: (config) => typeof config.rowsFrom === 'string',
    requiresPrimaryKey: false,
    sharedReading: true,
    // Debezium events carry the row; a Tributary bus carries it only when its publisher's lens had payload.
    carriesRows: (config) => config.format === 'debezium',
  },
  problems: ({ name, raw, lenses }) => [...topicProblems(name, raw), ...sweepProblems(name, lenses)],
  qualifyTable: (table) => (table.includes('.') ? table : `public.${table}`),
  openReader: async (config, options) => {
    if (!config.rowsFrom) throw new SourceSetupError(`lens "${options.lens}": its kafka source reads no tables; set rowsFrom on the source to the database its rows are in`);
    return config.rowsFrom.startsWith('mysql:') ? createMysqlReader(config.rowsFrom, options) : createPostgresReader(config.rowsFrom, options);
  },
  create: (config, ctx) =>
    createKafkaConnector(config, ctx, config.format === 'tributary' ? tributaryDecoder(new Set(ctx.lenses.map((l) => l.name))) : debeziumDecoder(ctx.lenses)),
};
