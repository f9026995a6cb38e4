/**
 * The validated configuration, as the rest of Tributary sees it. `loadConfig` (./load.ts)
 * turns a YAML file into this shape, with every default filled in, or throws a ConfigError.
 * The JSON Schema users point their editor at (config/tributary.schema.json) describes the
 * same shape; ./schema.ts is its source.
 */

export interface Config {
  sources: Record<string, SourceConfig>;
  lenses: Record<string, LensConfig>;
  sinks: Record<string, SinkConfig>;
  state: StateConfig;
  metrics: { listen: string } | null;
  pipeline: PipelineConfig;
  log: { level: 'debug' | 'info' | 'warn' | 'error' };
  /** The bundled ingest worker; null when the file has no `worker` section and no worker sink. */
  worker: WorkerConfig | null;
}

export interface WorkerConfig {
  /** host:port of the HTTP API; undefined: no HTTP API. */
  listen?: string;
  embedder: EmbedderConfig;
  index: IndexConfig;
  keys: Array<{ key: string; scope: 'ingest' | 'search' | 'admin' }>;
  maxQueuedChanges: number;
  readBatch: number;
}

/**
 * Where the worker keeps vectors and texts. `path` is also where its durable queue lives, on
 * local disk, for both types.
 */
export type IndexConfig = { type: 'embedded'; path: string } | { type: 'pgvector'; url: string; schema: string; path: string };

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

export interface PostgresSourceConfig {
  type: 'postgres';
  /** libpq-style connection URL. Never logged with its password. */
  url: string;
  /**
   * `logical`: a replication slot (connectors/postgres-logical). `trigger`: row triggers and a
   * changelog table (connectors/postgres-trigger). `auto`: probes the server and delegates to
   * one of them, or to `poll` (connectors/postgres-auto). `poll`: each lens read every
   * `syncInterval` by its changeTrackingColumn (connectors/poll).
   */
  capture: 'logical' | 'trigger' | 'poll' | 'auto';
  /** Replication slot name; created if missing. Default `tributary_<source>`. */
  slot: string;
  /**
   * Publication name. Default `tributary_<source>`: created if missing and kept in step with
   * the lens tables. A publication that exists and was not created by Tributary is used as-is
   * (it must include every lens table).
   */
  publication: string;
  /** How often a standby status update is sent even without traffic, ms (default 10000). */
  statusIntervalMs: number;
  /** capture: trigger: install the changelog and triggers at start (default true); false only checks them. */
  installTriggers: boolean;
  /** capture: trigger: schema of the changelog table and trigger functions (default `tributary`). */
  triggerSchema: string;
}

/** A MySQL or MariaDB server, tailed through its row-based binary log. */
export interface MysqlSourceConfig {
  type: 'mysql';
  /** `mysql://user:password@host:3306/database`. Never logged with its password. */
  url: string;
  /** `binlog` (default) tails the binary log; `poll` reads lenses by changeTrackingColumn (connectors/poll). */
  capture: 'binlog' | 'poll';
  /**
   * The replica server_id Tributary connects with; unique among the server's replicas.
   * Default: derived from the source name (see `defaultServerId`), from 2,000,000,000 up.
   */
  serverId: number;
  /** The server sends a heartbeat this often on a quiet binlog, ms (default 10000). */
  heartbeatMs: number;
  /**
   * When the saved position is no longer on the server (binlogs purged): `error` streams on
   * from the server's current position with the source in `error` until the lenses are
   * re-read (`tributary ingest LENS --mode full`); `resync` does that full sync by itself.
   */
  onPurgedPosition: 'error' | 'resync';
  /** Resume by GTID when the server has GTIDs (default true); false: by binlog file and position. */
  gtid: boolean;
}

export type SourceConfig = PostgresSourceConfig | MysqlSourceConfig;

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
}

export interface SemilayerSinkConfig {
  type: 'semilayer';
  /** Base URL, e.g. https://api.semilayer.com (no trailing /v1). */
  url: string;
  /** Ingest key (ik_...). Never logged. */
  key: string;
  /** Per-request timeout, ms (default 30000). */
  timeoutMs: number;
}

export type SinkConfig = SemilayerSinkConfig | { type: 'worker' };

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
