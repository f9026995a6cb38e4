/** The `kafka` sink: coalesced changes published to one Kafka topic in the bus format (src/bus.ts). */
import type { PluginSchema, SinkSpec } from '../../plugins.js';
import { kafkaConnectionProperties, type KafkaConnection } from '../../kafka.js';
import { createKafkaSink } from './index.js';

export interface KafkaSinkConfig extends KafkaConnection {
  type: 'kafka';
  /** The topic every lens's changes go to. */
  topic: string;
  /** How long the brokers may take to acknowledge a batch, ms (default 30000). */
  timeoutMs: number;
}

const schema = {
  type: 'object',
  description: 'A Kafka topic: the change bus other Tributary processes (worker replicas) read with a kafka source, format: tributary.',
  additionalProperties: false,
  required: ['type', 'brokers', 'topic'],
  properties: {
    type: { const: 'kafka', description: 'Sink type.' },
    ...kafkaConnectionProperties,
    topic: {
      type: 'string',
      pattern: '^[A-Za-z0-9._-]{1,249}$',
      'x-expected': 'a Kafka topic name (letters, digits, . _ -)',
      description: 'The topic changes are published to: key <lens>/<id>, value { lens, id, action, committedAt, row? } (row: for lenses with payload).',
      examples: ['tributary.changes'],
    },
    timeoutMs: { type: 'integer', minimum: 1, default: 30000, description: 'How long the brokers may take to acknowledge a batch (acks: all), in milliseconds.' },
  },
} satisfies PluginSchema;

export const kafkaSinkSpec: SinkSpec<KafkaSinkConfig> = {
  type: 'kafka',
  schema,
  // A lens with payload sends rows: read by id (with a payload reader) when a change carries none.
  capabilities: {
    takes: (lens) => (lens.payload === undefined ? 'ids' : 'rows'),
    readsTable: (lens) => (lens.payload === undefined ? 'never' : 'for changes without rows'),
  },
  create: (config, ctx) => createKafkaSink(config, ctx),
};
