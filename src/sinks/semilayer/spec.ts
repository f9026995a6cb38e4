/** The `semilayer` sink: SemiLayer's hosted ingest API, records mode (ids only). */
import { httpUrl, maxRequestsPerSecond, timeoutMs } from '../../config/fragments.js';
import type { PluginSchema, SinkSpec } from '../../plugins.js';
import { createSemilayerSink } from './index.js';

export interface SemilayerSinkConfig {
  type: 'semilayer';
  /** Base URL, e.g. https://api.semilayer.com (no trailing /v1). */
  url: string;
  /** Ingest key (ik_...). Never logged. */
  key: string;
  /** Per-request timeout, ms (default 30000). */
  timeoutMs: number;
  /** At most this many requests a second, across the sink's lenses (default: no limit). */
  maxRequestsPerSecond?: number;
}

const schema = {
  type: 'object',
  description: "SemiLayer's hosted ingest API (records mode).",
  additionalProperties: false,
  required: ['type', 'url', 'key'],
  properties: {
    type: { const: 'semilayer', description: 'Sink type.' },
    url: httpUrl('https://api.semilayer.com', 'Base URL of the API, without /v1 (a trailing slash is removed).'),
    key: { type: 'string', minLength: 1, description: 'Ingest key (ik_...). Use ${VAR}; never logged.' },
    timeoutMs,
    maxRequestsPerSecond,
  },
} satisfies PluginSchema;

export const semilayerSpec: SinkSpec<SemilayerSinkConfig> = {
  type: 'semilayer',
  schema,
  capabilities: { takes: 'ids', readsTable: 'never' },
  resolve: (raw) => ({ ...raw, url: String(raw.url).replace(/\/+$/, '') }) as SemilayerSinkConfig,
  create: (config) => createSemilayerSink(config),
};
