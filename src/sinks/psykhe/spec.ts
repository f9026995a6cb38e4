/** The `psykhe` sink: Psykhe's ingestion API (`POST /v1/ingestion/`), a JSONL product feed. */
import { duration, httpUrl, maxRequestsPerSecond, timeoutMs } from '../../config/fragments.js';
import type { PluginSchema, SinkSpec } from '../../plugins.js';
import { createPsykheSink } from './index.js';

export interface PsykheSinkConfig {
  type: 'psykhe';
  /** Base URL, e.g. https://api.psykhe.dev (no trailing /v1). */
  url: string;
  /** Private API key (sk_...), sent as X-PSYKHE-API-KEY. Never logged. */
  key: string;
  /** After a delete, a `soft_replace` full sync runs this much later (a duration; deletes meanwhile share it). */
  resyncAfter: string;
  /** Send bodies gzip-compressed (Content-Encoding: gzip). */
  gzip: boolean;
  /** An insert request holds at most this many bytes of JSONL (before gzip). */
  maxRequestBytes: number;
  /** Per-request timeout, ms (default 30000); a streamed full sync: after its body was sent. */
  timeoutMs: number;
  /** At most this many requests a second, across the sink's lenses (default: no limit). */
  maxRequestsPerSecond?: number;
}

const schema = {
  type: 'object',
  description: "Psykhe's ingestion API: changes as `insert`, full syncs as one `soft_replace` of the whole catalog.",
  additionalProperties: false,
  required: ['type', 'url', 'key'],
  properties: {
    type: { const: 'psykhe', description: 'Sink type.' },
    url: httpUrl('https://api.psykhe.dev', 'Base URL of the API, without /v1 (a trailing slash is removed).'),
    key: { type: 'string', minLength: 1, description: 'Private API key (sk_...), sent as X-PSYKHE-API-KEY. Use ${VAR}; never logged.' },
    resyncAfter: {
      ...duration('Psykhe has no delete: a delete schedules a `soft_replace` full sync this much later; deletes meanwhile share it.'),
      default: '5m',
    },
    gzip: { type: 'boolean', default: true, description: 'Send bodies gzip-compressed (Content-Encoding: gzip).' },
    maxRequestBytes: {
      type: 'integer',
      minimum: 1024,
      default: 1024 * 1024,
      description: 'An insert request carries at most this many bytes of JSONL (before gzip): a larger batch goes as several, up to 4 at once; a payload_too_large answer splits one further.',
    },
    timeoutMs,
    maxRequestsPerSecond,
  },
} satisfies PluginSchema;

export const psykheSpec: SinkSpec<PsykheSinkConfig> = {
  type: 'psykhe',
  schema,
  capabilities: { takes: 'rows', readsTable: 'always' },
  problems: ({ name, lenses }) =>
    lenses.length > 1
      ? [
          {
            path: ['sinks', name],
            message:
              `a psykhe sink feeds one catalog, but lenses ${lenses.map(([l]) => l).join(', ')} use sink "${name}": ` +
              "one lens's soft_replace would deactivate the other's products — give each lens its own psykhe sink (and key)",
          },
        ]
      : [],
  resolve: (raw) => ({ ...raw, url: String(raw.url).replace(/\/+$/, '') }) as PsykheSinkConfig,
  create: (config, ctx) => createPsykheSink(config, ctx),
};
