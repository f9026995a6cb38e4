/**
 * The validated configuration, as the rest of Tributary sees it. `loadConfig` (./load.ts)
 * turns a YAML file into this shape, with every default filled in, or throws a ConfigError.
 * The JSON Schema users point their editor at (config/tributary.schema.json) describes the
 * same shape; ./schema.ts is its source. Sources and sinks are the plugins' own types.
 */
import type { sourceSpecs } from '../../connectors/index.js';
import type { ConfigOf } from '../plugins.js';
import type { sinkSpecs } from '../sinks/index.js';

export interface Config {
  sources: Record<string, SourceConfig>;
  lenses: Record<string, LensConfig>;
  sinks: Record<string, SinkConfig>;
  state: StateConfig;
  metrics: { listen: string } | null;
  pipeline: PipelineConfig;
  log: { level: 'debug' | 'info' | 'warn' | 'error' };
  /** The bundled ingest worker; null when no sink has type: worker. */
  worker: WorkerConfig | null;
}

export interface WorkerConfig {
  /** host:port of the HTTP API; undefined: no HTTP API. */
  listen?: string;
  embedder: EmbedderConfig;
  index: IndexConfig;
  keys: Array<{ key: string; scope: 'ingest' | 'search' | 'admin' }>;
  maxQueuedChanges: number;
  /**
   * When the worker sink accepts a batch: once queued (journaled on local disk), or once
   * indexed (worker replicas on a kafka bus: the bus offsets are then their durable queue).
   */
  acknowledge?: 'queued' | 'indexed'; // default queued (the schema fills it in)
  readBatch: number;
}

/**
 * Where the worker keeps vectors and texts. `path` is also where its durable queue lives, on
 * local disk, for both types.
 */
export type IndexConfig =
  | {
      type: 'embedded';
      path: string;
      /** How the HNSW graph holds vectors in memory (scores are recomputed from the f32 vectors on disk). */
      quantization?: 'f32' | 'f16' | 'i8';
      connectivity?: number;
      expansionAdd?: number;
      expansionSearch?: number;
      /** Lenses of at most this many records are searched exactly. */
      exactBelow?: number;
    }
  | { type: 'pgvector'; url: string; schema: string; path: string; m?: number; efConstruction?: number; efSearch?: number };

export type EmbedderConfig = { type: 'hash'; dimensions: number } | ({ type: 'openai' } & OpenAIEmbedderConfig);

/** Any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, Azure, Ollama, vLLM, TEI). */
export interface OpenAIEmbedderConfig {
  /** Base URL, e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1`: requests go to `{url}/embeddings`. */
  url: string;
  /** Sent as `Authorization: Bearer KEY` when set (local servers often need none). */
  key?: string;
  /** Model name, e.g. `text-embedding-3-small`. */
  model: string;
  /** Length of the vectors; sent to the server as `dimensions` only if `sendDimensions`. */
  dimensions: number;
  /** Ask the model for `dimensions` (text-embedding-3 models can shorten their vectors). */
  sendDimensions: boolean;
  /** Inputs per request (default 256; OpenAI accepts up to 2048). */
  maxInputs: number;
  /** Estimated tokens per request (default 250000; OpenAI's limit is 300000). */
  maxTokensPerRequest: number;
  /** Estimated tokens per input (default 8191, OpenAI's context length). */
  maxInputTokens: number;
  /** What to do with an input over `maxInputTokens`: cut it, or fail the batch as `input`. */
  overLong: 'truncate' | 'reject';
  /** Requests in flight at once (default 2). */
  concurrency: number;
  /** Per-request timeout in ms; a timed-out request is retried. */
  timeoutMs: number;
  /** Retries of a request after 429/5xx/network failures (default 6). */
  maxRetries: number;
}

/** Every source type's config, from the source specs (connectors/index.ts). */
export type SourceConfig = ConfigOf<(typeof sourceSpecs)[number]>;

export interface LensConfig {
  source: string;
  /** `schema.table`; `table` alone means `public.table`. Normalised to `schema.table`. */
  table: string;
  /** Key columns in order; default: the table's primary key, read at start. */
  primaryKey?: string[];
  fields: string[];
  /** Instead of fields: the embedded text with {{column}} placeholders. */
  template?: string;
  metadata: string[];
  /**
   * Payload sinks (seyn, psykhe): the columns sent, as a list, or a map `{ outField: column }`;
   * undefined: every column of the table.
   */
  payload?: string[] | Record<string, string>;
  /** seyn: each record's `entityType` (default: the lens name). */
  entityType?: string;
  changeTrackingColumn?: string;
  /** Polling (`capture: poll`): how often, as a duration (`5m`). */
  syncInterval?: string;
  /** Polling: how far (a duration) behind the saved cursor each poll starts, for late commits (default `30s`). */
  syncOverlap?: string;
  /** A sweep with tombstones this often (any capture mode). */
  smartSyncInterval?: string;
  sink: string;
  /** What to do on the lens's first start: ask the sink for a full sync (default) or nothing. */
  initialSync: 'full' | 'none';
  /** Flush a batch at this many distinct ids (default and ceiling 10,000). */
  maxBatch: number;
  /** Flush a batch this long after its first change, ms (default 200). */
  maxWaitMs: number;
  /** What the worker's API may do with the lens: `query` opens `POST /v1/query/:lens` (seed 002's Bridge). */
  rules?: { query?: boolean };
}

/** Every sink type's config, from the sink specs (src/sinks/index.ts). */
export type SinkConfig = ConfigOf<(typeof sinkSpecs)[number]>;

export type StateConfig =
  | { type: 'embedded'; path: string }
  | { type: 'postgres'; url: string; schema: string };

export interface PipelineConfig {
  /** Pause a source when its lenses buffer this many changes not yet in flight (default 20,000). */
  maxPendingChanges: number;
  /** …or this many bytes of ids (default 64 MiB). */
  maxPendingBytes: number;
  /** On SIGTERM, how long to wait for pending batches before exiting anyway, ms (default 30000). */
  drainTimeoutMs: number;
  /** While a lens is in `error` (401/403/404), how often its batch is tried again, ms (default 60000). */
  errorRetryMs: number;
}
