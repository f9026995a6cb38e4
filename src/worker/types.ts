/**
 * The bundled ingest worker's internal interfaces. The worker turns records-mode jobs into a
 * searchable index: it re-reads rows by id from the lens's source (`RowReader`), builds text
 * and metadata, embeds the text (`Embedder`), and stores the result (`VectorIndex`), which
 * also serves semantic and keyword search.
 */

/** A row as the worker indexes it. */
export interface IndexRecord {
  /** The source row id, encoded as docs/architecture.md says (`42`, `[7,"eu"]`). */
  id: string;
  /** The text that was embedded. */
  content: string;
  metadata: Record<string, unknown>;
  /** Unit-length embedding of `content`. */
  vector: Float32Array;
  /** Hash of `content` and the embedder's identity: equal hash, no new embedding needed. */
  contentHash: string;
}

export interface SearchHit {
  id: string;
  content: string;
  metadata: Record<string, unknown>;
  /** Semantic: cosine similarity in [0, 1] (negative similarities are clamped to 0). Keyword: BM25 normalised to [0, 1] by the best hit. */
  score: number;
}

/**
 * Where the vectors and texts of every lens live. Implementations: `embedded` (a directory
 * under the data path, survives restart) and, later, `pgvector`.
 */
export interface VectorIndex {
  /** Upserts records of a lens (all of one embedder's dimensions). Durable when it resolves. */
  upsert(lens: string, records: IndexRecord[]): Promise<void>;
  /** Deletes ids of a lens; returns how many existed. Durable when it resolves. */
  delete(lens: string, ids: string[]): Promise<number>;
  /**
   * Replaces the metadata of ids that exist, keeping their content and vector (the text was
   * unchanged: its hash matched). Ids that do not exist are ignored. Durable when it resolves.
   */
  updateMetadata(lens: string, records: Array<{ id: string; metadata: Record<string, unknown> }>): Promise<void>;
  /** Content hashes of the ids that exist, for skipping unchanged text. */
  hashes(lens: string, ids: string[]): Promise<Map<string, string>>;
  /** The stored record of one id (for `similar`), or undefined. */
  get(lens: string, id: string): Promise<IndexRecord | undefined>;
  /**
   * Nearest records by cosine similarity, best first, score ≥ minScore; `excludeId` left out.
   * Approximate (HNSW) unless `exact`, or the implementation finds a scan cheaper (a small
   * lens, a very wide search); scores are exact cosines either way.
   */
  searchVector(lens: string, vector: Float32Array, options: { limit: number; minScore: number; excludeId?: string; exact?: boolean }): Promise<SearchHit[]>;
  /** Best records by a real text ranking (BM25), best first. */
  searchKeyword(lens: string, query: string, options: { limit: number; minScore: number }): Promise<SearchHit[]>;
  count(lens: string): Promise<number>;
  /** Ids of a lens in ascending order (string order) after `after`, at most `limit`: for sweeps. */
  idsAfter(lens: string, after: string | undefined, limit: number): Promise<string[]>;
  /** Records written but not yet in an approximate index's graph (searched exactly meanwhile); absent when writes are indexed at once. */
  graphBacklog?(lens: string): number;
  close(): Promise<void>;
}

/**
 * Turns texts into unit-length vectors. `id` names the model and its settings (for content
 * hashes): two embedders with the same id produce the same vectors.
 */
export interface Embedder {
  readonly id: string;
  readonly dimensions: number;
  /**
   * Embeds texts, in order. Throws EmbedError: `input` when the provider rejected the inputs
   * themselves (4xx such as context length: split the batch to find the bad one),
   * `transient` after its own retries of 429/5xx/network failures ran out.
   */
  embed(texts: string[], signal?: AbortSignal): Promise<Float32Array[]>;
  /** Tokens the provider reported (or estimated) so far, for metrics. */
  readonly tokensUsed: number;
}


import type { DeadLetter } from '../types.js';
import type { QueryAnswer, QueryRequest } from './query.js';

export type IngestMode = 'records' | 'full' | 'incremental';
export type SearchMode = 'semantic' | 'keyword' | 'hybrid';

/** A job as `GET /v1/jobs/:jobId` shows it. */
export interface JobView {
  jobId: string;
  lens: string;
  mode: IngestMode;
  status: 'queued' | 'running' | 'done' | 'failed';
  changesBuffered: number;
  /** Rows indexed, deleted and dead-lettered so far. */
  indexed: number;
  deleted: number;
  deadLettered: number;
  createdAt: string;
  startedAt?: string;
  finishedAt?: string;
  error?: string;
}

/** One lens as `GET /v1/status[/:lens]` shows it. */
export interface LensWorkerStatus {
  lens: string;
  state: 'idle' | 'indexing' | 'paused' | 'error';
  pending: number;
  rate: number;
  cursor?: string;
  indexed: number;
  dlq: number;
  /** Records written but not yet in the embedded index's HNSW graph (searched exactly meanwhile); 0 for pgvector. */
  graphBacklog: number;
  lastError?: string;
}

/** The worker's engine, as its HTTP API and the in-process `worker` sink see it. */
export interface WorkerEngine {
  /** Lens names the worker serves. */
  lenses(): string[];
  /**
   * Queues an ingest request, durably. While a job of the lens is still queued the request is
   * merged into it (last action per id wins) and answered `deduplicated`.
   * Throws QueueFullError when the lens's queue is over its bound (→ 429 with Retry-After).
   */
  submit(
    lens: string,
    request: { mode: IngestMode; changes?: Array<{ id: string; action: 'upsert' | 'delete' }> },
    /** The oldest source commit time of the changes (ms since the epoch), for freshness metrics. */
    committedAt?: number,
  ): Promise<{ jobId: string; status: 'queued' | 'deduplicated'; lens: string; mode: IngestMode; changesBuffered: number; /** Its journal entry, for `indexed`. */ seq: number }>;
  /**
   * Resolves true once the request queued as journal entry `seq` (`submit`'s answer) was
   * processed: indexed, deleted or dead-lettered; false if the worker stopped first.
   */
  indexed(lens: string, seq: number): Promise<boolean>;
  job(jobId: string): JobView | undefined;
  status(lens?: string): LensWorkerStatus[];
  /** `exact`: semantic search scans every vector instead of asking the HNSW graph (slower, the true top k). */
  search(lens: string, request: { query: string; limit: number; minScore: number; mode: SearchMode; exact?: boolean }): Promise<SearchHit[]>;
  /**
   * The output fields a Query of the lens may name (its key, fields, metadata and template
   * columns); undefined when the lens does not serve queries (no `rules: { query: true }`).
   */
  queryFields(lens: string): string[] | undefined;
  /**
   * One page of rows read live from the lens's table (./query.ts). Throws RecordRejectedError
   * when a value does not fit its column.
   */
  query(lens: string, request: QueryRequest): Promise<QueryAnswer>;
  /** Records similar to a stored one, by its stored vector; undefined when `id` is not indexed. */
  similar(lens: string, request: { id: string; limit: number; minScore: number }): Promise<SearchHit[] | undefined>;
  /** The dead letters of a lens, oldest first. */
  deadLetters(lens: string): Promise<DeadLetter[]>;
  /** Queues dead letters again (all, or those ids) and removes them; returns the changes queued. */
  replayDeadLetters(lens: string, ids?: string[]): Promise<number>;
  /** Removes dead letters (all, or those ids) without retrying them; returns how many. */
  dropDeadLetters(lens: string, ids?: string[]): Promise<number>;
}
