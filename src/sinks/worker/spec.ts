/**
 * The `worker` sink: the bundled ingest worker in this process (configured under `worker`),
 * which re-reads rows by id, embeds and indexes them, and serves search.
 */
import type { PluginSchema, SinkSpec } from '../../plugins.js';
import { createWorkerSink } from './index.js';

export interface WorkerSinkConfig {
  type: 'worker';
}

const schema = {
  type: 'object',
  description: 'The bundled ingest worker, in this process (configure it under `worker`).',
  additionalProperties: false,
  required: ['type'],
  properties: { type: { const: 'worker', description: 'Sink type.' } },
} satisfies PluginSchema;

export const workerSpec: SinkSpec<WorkerSinkConfig> = {
  type: 'worker',
  schema,
  capabilities: { takes: 'ids', readsTable: 'always' },
  create: (_config, ctx) => createWorkerSink(ctx),
};
