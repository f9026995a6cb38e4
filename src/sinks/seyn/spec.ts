/** The `seyn` sink: Seyn's ingest API (`POST /v1/ingest`), records with their payloads. */
import { httpUrl, maxRequestsPerSecond, timeoutMs } from '../../config/fragments.js';
import type { PluginSchema, SinkSpec } from '../../plugins.js';
import { createSeynSink } from './index.js';

export interface SeynSinkConfig {
  type: 'seyn';
  /** Base URL, e.g. https://api.seynlabs.com (no trailing /v1). */
  url: string;
  /** API key with the ingest scope (sk_live_...). Never logged. */
  key: string;
  /** The custom source records are ingested into (a uuid, from `POST /v1/sources`). */
  sourceId: string;
  /** Seyn has no delete: count deletes and send nothing, or send `payload: { "_deleted": true }`. */
  onDelete: 'skip' | 'tombstone';
  /** Per-request timeout, ms (default 30000). */
  timeoutMs: number;
  /** At most this many requests a second, across the sink's lenses (default: no limit). */
  maxRequestsPerSecond?: number;
}

const UUID = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';

const schema = {
  type: 'object',
  description: "Seyn's ingest API: each record's payload, superseded by recordId (the lens's id).",
  additionalProperties: false,
  required: ['type', 'url', 'key', 'sourceId'],
  properties: {
    type: { const: 'seyn', description: 'Sink type.' },
    url: httpUrl('https://api.seynlabs.com', 'Base URL of the API, without /v1 (a trailing slash is removed).'),
    key: { type: 'string', minLength: 1, description: 'API key with the ingest scope (sk_live_...). Use ${VAR}; never logged.' },
    sourceId: {
      type: 'string',
      pattern: UUID,
      'x-expected': 'a uuid like b6f1c0de-1f2a-4c3b-9d4e-5a6b7c8d9e0f (create the source with POST /v1/sources)',
      description: 'The Seyn source records are ingested into (a uuid).',
      examples: ['b6f1c0de-1f2a-4c3b-9d4e-5a6b7c8d9e0f'],
    },
    onDelete: {
      type: 'string',
      enum: ['skip', 'tombstone'],
      default: 'skip',
      description: 'Seyn has no delete: `skip` counts deletes and sends nothing; `tombstone` sends the record with `payload: { "_deleted": true }`.',
    },
    timeoutMs,
    maxRequestsPerSecond,
  },
} satisfies PluginSchema;

export const seynSpec: SinkSpec<SeynSinkConfig> = {
  type: 'seyn',
  schema,
  capabilities: { takes: 'rows', readsTable: 'for full syncs' },
  resolve: (raw) => ({ ...raw, url: String(raw.url).replace(/\/+$/, '') }) as SeynSinkConfig,
  create: (config, ctx) => createSeynSink(config, ctx),
};
