/**
 * The worker's engine: runs each lens's queued jobs one at a time. A records job re-reads the
 * rows by id (a row that is gone is deleted from the index), builds text and metadata, skips
 * the embedding when the text's hash is unchanged, embeds the rest and writes the index. A
 * full job sweeps the table in key order and then deletes index entries whose rows are gone;
 * an incremental job reads rows whose changeTrackingColumn moved past the saved cursor.
 * Items that cannot be indexed go to the dead-letter store; the rest keep flowing.
 */
import { createHash } from 'node:crypto';
import type { LensConfig } from '../config/types.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { EmbedError, QueueFullError, TributaryError, describeError, isRecordRejection } from '../errors.js';
import { retry } from '../retry.js';
import type { DeadLetters } from '../dead-letters.js';
import { READ_BATCH, type Action, type DeadLetter, type Logger, type RowReader, type StateStore } from '../types.js';
import { LensQueue, type Work } from './queue.js';
import { lensColumns } from '../rows.js';
import { runQuery, type QueryAnswer, type QueryRequest } from './query.js';
import { estimateTokens } from './embedders/openai.js';
import type { Embedder, IndexRecord, JobView, LensWorkerStatus, SearchHit, VectorIndex, WorkerEngine } from './types.js';

export interface EngineOptions {
  lenses: Record<string, LensConfig>;
  /** Opens the row reader of a lens (lazily, on its first job). */
  openReader: (lens: string) => Promise<RowReader>;
  embedder: Embedder;
  index: VectorIndex;
  state: StateStore;
  /** The one dead-letter queue (counts loaded by the daemon). */
  deadLetters: DeadLetters;
  /** Directory of the durable queues. */
  queueDir: string;
  /** Per lens: beyond this many queued changes, submit answers QueueFullError (429). */
  maxQueuedChanges: number;
  /** Rows read, embedded and written per step (default READ_BATCH). */
  readBatch?: number;
  log: Logger;
  /** Timings for histograms (the engine never imports the metrics library). */
  observe?: {
    embedSeconds(lens: string, seconds: number): void;
    /** From the oldest source commit (or API acceptance) of a job's changes to searchable. */
    freshnessSeconds(lens: string, seconds: number): void;
  };
}

interface Job extends JobView {
  work?: Work;
  lastSeq: number;
  /** Oldest commit (or acceptance) time of its changes, ms since the epoch. */
  oldestAt: number;
}

interface LensRuntime {
  name: string;
  config: LensConfig;
  queue: LensQueue;
  reader?: RowReader;
  running?: Job;
  state: LensWorkerStatus['state'];
  lastError?: string;
  cursor?: string;
  indexedTotal: number;
  /** Callers of `indexed` waiting for the journal entry `seq` to be processed. */
  waiting: Array<{ seq: number; resolve: () => void }>;
  /** The index was written since `indexedTotal` was counted (at `countedAt`). */
  indexChanged?: boolean;
  countedAt?: number;
  /** Counting the index keeps failing: the last message, how often in a row, when it was logged. */
  countFailure?: { message: string; times: number; loggedAt: number };
  rate: { count: number; at: number; value: number };
  wake?: () => void;
}

/** Rows ready to be written: records to upsert, and rows whose text is unchanged (metadata only). */
interface PreparedRows {
  records: IndexRecord[];
  unchangedText: Array<{ id: string; metadata: Record<string, unknown> }>;
}

/** Per-lens counters the daemon reads into Prometheus. */
export interface WorkerCounters {
  embedCalls: number;
  embeddedTexts: number;
  skippedByHash: number;
  /** Records written to the index (new or changed rows, and metadata-only updates). */
  writtenRecords: number;
  /** Tokens the embedding provider reported (or the embedder estimated). */
  tokensUsed: number;
  /** Estimated tokens not spent thanks to unchanged-text skips. */
  tokensSaved: number;
}

const MAX_JOBS_KEPT = 1000;
const TRANSIENT_ATTEMPTS = 4;
/** The longest wait between two tries of a failing job. */
const MAX_JOB_RETRY_MS = 60_000;
/** How long `stop()` waits for the running jobs by default. */
const DEFAULT_STOP_TIMEOUT_MS = 10_000;
/** How often a lens being written is counted again (a count on pgvector is a scan). */
const COUNT_INTERVAL_MS = 5000;
/** A full sweep saves its cursor at most this often. */
const CURSOR_SAVE_MS = 1000;
/** A failing count shows in the lens's status after this many failures in a row (refreshes). */
const COUNT_FAILURES_SHOWN = 3;
/** The same failure is logged again at most this often. */
const FAILURE_LOG_INTERVAL_MS = 60_000;

export function contentHash(embedderId: string, content: string): string {
  return createHash('sha256').update(embedderId).update('\0').update(content).digest('base64url').slice(0, 22);
}

/** The text of a row: `template` with `{{column}}` placeholders, or the fields' values, one a line. */
export function buildContent(config: Pick<LensConfig, 'fields' | 'template'>, row: Record<string, unknown>): string {
  const text = (v: unknown) => (v === null || v === undefined ? '' : v instanceof Date ? v.toISOString() : typeof v === 'object' ? JSON.stringify(v) : String(v));
  if (config.template) return config.template.replace(/\{\{\s*([\w.-]+)\s*\}\}/g, (_, name: string) => text(row[name]));
  return config.fields.map((f) => text(row[f])).filter((t) => t !== '').join('\n');
}

/** Dead-letter reason of an embedding error about the inputs themselves; undefined for any other error. */
function embedInputReason(err: unknown): string | undefined {
  if (!(err instanceof EmbedError && err.kind === 'input')) return undefined;
  return /context|too long|maximum.*tokens|token limit/i.test(err.message) ? 'context-length' : 'embedding-input';
}

/** Dead-letter reason of an index write refused for its values; undefined for any other error. */
function indexDataReason(err: unknown): string | undefined {
  return isRecordRejection(err) ? 'index-rejected' : undefined;
}

function buildMetadata(config: LensConfig, row: Record<string, unknown>): Record<string, unknown> {
  const metadata: Record<string, unknown> = {};
  for (const m of config.metadata) {
    const v = row[m];
    metadata[m] = v instanceof Date ? v.toISOString() : typeof v === 'bigint' ? String(v) : (v ?? null);
  }
  return metadata;
}

export class Engine implements WorkerEngine {
  private readonly lensMap = new Map<string, LensRuntime>();
  private readonly jobs = new Map<string, Job>();
  private jobCounter = 0;
  private readonly stopController = new AbortController();
  private readonly loops: Promise<void>[] = [];
  private readonly lensCounters = new Map<string, WorkerCounters>();

  constructor(private readonly options: EngineOptions) {
    for (const [name, config] of Object.entries(options.lenses)) {
      const queue = new LensQueue(options.queueDir, name);
      const lens: LensRuntime = { name, config, queue, state: 'idle', indexedTotal: 0, waiting: [], rate: { count: 0, at: Date.now(), value: 0 } };
      this.lensMap.set(name, lens);
      if (queue.queued) this.register(lens, queue.queued.jobId, queue.queued.work.sweep ?? 'records', queue.pendingChanges, queue.queued.lastSeq);
    }
  }

  /** Starts the lens loops. */
  async start(): Promise<void> {
    for (const lens of this.lensMap.values()) this.loops.push(this.loop(lens));
  }

  /** The dead letters of a lens, oldest first. */
  async deadLetters(lens: string): Promise<DeadLetter[]> {
    const letters: DeadLetter[] = [];
    for await (const page of this.options.deadLetters.pages(lens)) letters.push(...page);
    return letters;
  }

  async dropDeadLetters(lensName: string, ids?: string[]): Promise<number> {
    this.lensOf(lensName);
    return this.options.deadLetters.drop(lensName, ids);
  }

  /** Queues dead letters again (all, or those ids), page by page, and removes them once queued; returns the changes queued. */
  async replayDeadLetters(lensName: string, ids?: string[]): Promise<number> {
    this.lensOf(lensName);
    let queued = 0;
    await this.options.deadLetters.replay(lensName, ids, async (changes) => {
      if (changes.length) await this.submit(lensName, { mode: 'records', changes });
      queued += changes.length;
      return true;
    });
    return queued;
  }

  private lensOf(name: string): LensRuntime {
    const lens = this.lensMap.get(name);
    if (!lens) throw new TributaryError(`lens not found: ${name}`);
    return lens;
  }

  private get stopping(): boolean {
    return this.stopController.signal.aborted;
  }

  lenses(): string[] {
    return [...this.lensMap.keys()];
  }

  counters(lens: string): WorkerCounters {
    let c = this.lensCounters.get(lens);
    if (!c) this.lensCounters.set(lens, (c = { embedCalls: 0, embeddedTexts: 0, skippedByHash: 0, writtenRecords: 0, tokensUsed: 0, tokensSaved: 0 }));
    return c;
  }

  /** Embeds texts for a lens (aborted when the engine stops), counting calls, tokens and time. */
  private async embed(lens: string, texts: string[]): Promise<Float32Array[]> {
    const { embedder } = this.options;
    const started = performance.now();
    const tokensBefore = embedder.tokensUsed;
    const vectors = await embedder.embed(texts, this.stopSignal);
    const c = this.counters(lens);
    c.embedCalls++;
    c.embeddedTexts += texts.length;
    c.tokensUsed += embedder.tokensUsed - tokensBefore;
    this.options.observe?.embedSeconds(lens, (performance.now() - started) / 1000);
    return vectors;
  }

  private newJobId(): string {
    return `j_${Date.now().toString(36)}${(++this.jobCounter).toString(36).padStart(4, '0')}`;
  }

  private register(lens: LensRuntime, jobId: string, mode: Job['mode'], changes: number, lastSeq: number): Job {
    let job = this.jobs.get(jobId);
    if (!job) {
      job = {
        jobId, lens: lens.name, mode, status: 'queued', changesBuffered: changes,
        indexed: 0, deleted: 0, deadLettered: 0, createdAt: new Date().toISOString(), lastSeq, oldestAt: Date.now(),
      };
      this.jobs.set(jobId, job);
      if (this.jobs.size > MAX_JOBS_KEPT) this.jobs.delete(this.jobs.keys().next().value!);
    }
    return job;
  }

  async submit(lensName: string, request: { mode: Job['mode']; changes?: Array<{ id: string; action: Action }> }, committedAt?: number) {
    const lens = this.lensMap.get(lensName);
    if (!lens) throw new TributaryError(`lens not found: ${lensName}`);
    if (lens.queue.pendingChanges + (request.changes?.length ?? 0) > this.options.maxQueuedChanges) {
      throw new QueueFullError(`the queue of lens "${lensName}" is full (${lens.queue.pendingChanges} changes waiting); retry later`, 2);
    }
    const { jobId, deduplicated } = lens.queue.add(this.newJobId(), request.mode, request.changes);
    const job = this.register(lens, jobId, request.mode, 0, 0);
    const work = lens.queue.queued!;
    job.changesBuffered = work.work.changes.size;
    job.lastSeq = work.lastSeq;
    if (committedAt !== undefined) job.oldestAt = Math.min(job.oldestAt, committedAt);
    if (work.work.sweep && job.mode === 'records') job.mode = work.work.sweep;
    lens.wake?.();
    return { jobId, status: deduplicated ? ('deduplicated' as const) : ('queued' as const), lens: lensName, mode: request.mode, changesBuffered: job.changesBuffered, seq: work.lastSeq };
  }

  /**
   * Resolves once the request `submit` queued as journal entry `seq` was processed (indexed,
   * deleted or dead-lettered); false if the engine stopped first.
   */
  indexed(lensName: string, seq: number): Promise<boolean> {
    const lens = this.lensOf(lensName);
    if (this.stopping) return Promise.resolve(false);
    return new Promise((resolve) => lens.waiting.push({ seq, resolve: () => resolve(!this.stopping) }));
  }

  private settle(lens: LensRuntime, doneSeq: number): void {
    const ready = lens.waiting.filter((w) => w.seq <= doneSeq);
    lens.waiting = lens.waiting.filter((w) => w.seq > doneSeq);
    for (const w of ready) w.resolve();
  }

  job(jobId: string): JobView | undefined {
    const job = this.jobs.get(jobId);
    if (!job) return undefined;
    const { work: _work, lastSeq: _lastSeq, oldestAt: _oldestAt, ...view } = job;
    return view;
  }

  status(lensName?: string): LensWorkerStatus[] {
    return [...this.lensMap.values()]
      .filter((l) => !lensName || l.name === lensName)
      .map((l) => ({
        lens: l.name,
        state: l.state,
        pending: l.queue.pendingChanges + (l.running?.work?.changes.size ?? 0),
        rate: Math.round(l.rate.value * 10) / 10,
        cursor: l.cursor,
        indexed: l.indexedTotal,
        dlq: this.options.deadLetters.count(l.name),
        graphBacklog: this.options.index.graphBacklog?.(l.name) ?? 0,
        lastError: this.lastError(l),
      }));
  }

  /**
   * Refreshes the rates (called by the daemon once a second) and the indexed counts: those only
   * after the lens's index changed, at most every COUNT_INTERVAL_MS (a count on pgvector scans).
   * Never rejects: a failed count is logged (on change, else once a minute), tried again on the
   * next refresh, and shown as the lens's lastError once it persists.
   */
  async refresh(): Promise<void> {
    for (const l of this.lensMap.values()) {
      const now = Date.now();
      if (l.countedAt === undefined || (l.indexChanged && now - l.countedAt >= COUNT_INTERVAL_MS)) {
        l.indexChanged = false;
        l.countedAt = now;
        try {
          l.indexedTotal = await this.options.index.count(l.name);
          this.countRecovered(l);
        } catch (err) {
          l.countedAt = undefined;
          l.indexChanged = true;
          this.countFailed(l, err);
        }
      }
      const instant = (l.rate.count * 1000) / Math.max(1, now - l.rate.at);
      l.rate = { count: 0, at: now, value: l.rate.value * 0.7 + instant * 0.3 };
    }
  }

  private countFailed(lens: LensRuntime, err: unknown): void {
    const message = describeError(err);
    const previous = lens.countFailure;
    const now = Date.now();
    const logNow = previous?.message !== message || now - previous.loggedAt >= FAILURE_LOG_INTERVAL_MS;
    lens.countFailure = { message, times: (previous?.times ?? 0) + 1, loggedAt: logNow ? now : previous!.loggedAt };
    if (logNow) this.options.log.warn({ lens: lens.name, err: message, failures: lens.countFailure.times }, 'cannot count the indexed records of a lens');
  }

  private countRecovered(lens: LensRuntime): void {
    if (!lens.countFailure) return;
    this.options.log.info({ lens: lens.name, failures: lens.countFailure.times }, 'counting the indexed records works again');
    lens.countFailure = undefined;
  }

  /** The lens's error for its status: the running job's, else a count that keeps failing. */
  private lastError(lens: LensRuntime): string | undefined {
    const failure = lens.countFailure;
    const persistent = failure && failure.times >= COUNT_FAILURES_SHOWN ? `cannot count the indexed records (status is stale): ${failure.message}` : undefined;
    return lens.lastError ?? persistent;
  }

  async search(lens: string, request: { query: string; limit: number; minScore: number; mode: 'semantic' | 'keyword' | 'hybrid'; exact?: boolean }): Promise<SearchHit[]> {
    const { index } = this.options;
    const semantic = async (limit: number) => {
      const [vector] = await this.embed(lens, [request.query]);
      return index.searchVector(lens, vector, { limit, minScore: 0, ...(request.exact ? { exact: true } : {}) });
    };
    if (request.mode === 'semantic') return (await semantic(request.limit)).filter((h) => h.score >= request.minScore);
    if (request.mode === 'keyword') return index.searchKeyword(lens, request.query, { limit: request.limit, minScore: request.minScore });
    // Hybrid: reciprocal rank fusion of both rankings, each contribution weighted by the hit's
    // own score (so a barely similar hit ranked by default scores near 0), scaled so a perfect
    // hit first in both rankings scores 1.
    const depth = Math.max(50, request.limit * 3);
    const [byMeaning, byWords] = await Promise.all([
      semantic(depth).then((hits) => hits.filter((h) => h.score > 0)), // similarity 0: unrelated, not a match
      index.searchKeyword(lens, request.query, { limit: depth, minScore: 0 }),
    ]);
    const fused = new Map<string, SearchHit>();
    for (const list of [byMeaning, byWords]) {
      list.forEach((hit, rank) => {
        const add = (hit.score * (61 / (61 + rank))) / 2;
        const seen = fused.get(hit.id);
        fused.set(hit.id, seen ? { ...seen, score: seen.score + add } : { ...hit, score: add });
      });
    }
    return [...fused.values()].filter((h) => h.score >= request.minScore).sort((a, b) => b.score - a.score).slice(0, request.limit);
  }

  async similar(lens: string, request: { id: string; limit: number; minScore: number }): Promise<SearchHit[] | undefined> {
    const record = await this.options.index.get(lens, request.id);
    if (!record) return undefined;
    return this.options.index.searchVector(lens, record.vector, { limit: request.limit, minScore: request.minScore, excludeId: request.id });
  }

  queryFields(lens: string): string[] | undefined {
    const config = this.lensMap.get(lens)?.config;
    if (!config?.rules?.query) return undefined;
    return [...new Set([...(config.primaryKey ?? []), ...lensColumns(config)])];
  }

  async query(lens: string, request: QueryRequest): Promise<QueryAnswer> {
    const runtime = this.lensMap.get(lens);
    if (!runtime || !this.queryFields(lens)) throw new TributaryError(`Lens ${lens} does not serve queries`);
    return runQuery(await this.reader(runtime), request);
  }

  // ---- processing ----------------------------------------------------------------------

  private get stopSignal(): AbortSignal {
    return this.stopController.signal;
  }

  private get readBatch(): number {
    return this.options.readBatch ?? READ_BATCH;
  }

  private async loop(lens: LensRuntime): Promise<void> {
    try {
      while (!this.stopping) {
        const next = lens.queue.take();
        if (!next) {
          await new Promise<void>((resolve) => (lens.wake = resolve));
          lens.wake = undefined;
          continue;
        }
        await this.runJob(lens, next);
      }
    } catch (err) {
      lens.state = 'error';
      lens.lastError = `the worker loop of this lens failed; restart the daemon: ${describeError(err)}`;
      this.options.log.error({ lens: lens.name, err: describeError(err) }, 'worker loop failed');
    } finally {
      lens.queue.close();
      await lens.reader?.close().catch(() => {});
    }
  }

  /**
   * Runs a job until it succeeds: a failed job is tried again with backoff (its work is in the
   * journal) until it succeeds or the engine stops; then its work stays queued for the next start.
   */
  private async runJob(lens: LensRuntime, next: { jobId: string; work: Work; lastSeq: number }): Promise<void> {
    const job = this.register(lens, next.jobId, next.work.sweep ?? 'records', next.work.changes.size, next.lastSeq);
    job.work = next.work;
    job.startedAt = new Date().toISOString();
    lens.running = job;
    try {
      await retry(
        async () => {
          job.status = 'running';
          lens.state = 'indexing';
          await this.run(lens, job, next.work);
        },
        { signal: this.stopSignal, retriable: () => true, initialMs: 1000, maxMs: MAX_JOB_RETRY_MS, onRetry: (err, _, delayMs) => this.jobFailed(lens, job, err, delayMs) },
      );
      job.status = 'done';
      job.finishedAt = new Date().toISOString();
      this.options.observe?.freshnessSeconds(lens.name, (Date.now() - job.oldestAt) / 1000);
      lens.state = 'idle';
      lens.lastError = undefined;
      lens.queue.done(next.lastSeq);
      this.settle(lens, next.lastSeq);
    } catch (err) {
      if (!this.stopping) throw err;
      job.status = 'queued'; // stopped: it runs again on the next start
    } finally {
      job.work = undefined;
      lens.running = undefined;
    }
  }

  private jobFailed(lens: LensRuntime, job: Job, err: unknown, delayMs: number): void {
    job.status = 'failed';
    job.error = describeError(err);
    lens.state = 'error';
    lens.lastError = job.error;
    this.options.log.error({ lens: lens.name, jobId: job.jobId, err: job.error, retryInMs: Math.round(delayMs) }, 'ingest job failed; retrying');
  }

  private async reader(lens: LensRuntime): Promise<RowReader> {
    lens.reader ??= await retry(() => this.options.openReader(lens.name), { maxAttempts: TRANSIENT_ATTEMPTS, signal: this.stopSignal });
    return lens.reader;
  }

  private async run(lens: LensRuntime, job: Job, work: Work): Promise<void> {
    await this.applyChanges(lens, job, work.changes);
    if (work.sweep === 'full') await this.oneSweepAtATime(lens, () => this.fullSweep(lens, job));
    if (work.sweep === 'incremental') await this.incrementalSweep(lens, job);
  }

  /**
   * A records job: an upsert re-reads its row (a row that is gone leaves the index); a delete
   * removes the id even when its row still exists (a soft delete is still a delete).
   */
  private async applyChanges(lens: LensRuntime, job: Job, changes: Map<string, Action>): Promise<void> {
    const ids = [...changes.keys()];
    for (let i = 0; i < ids.length; i += this.readBatch) {
      this.stopSignal.throwIfAborted();
      const chunk = ids.slice(i, i + this.readBatch);
      const upserts = chunk.filter((id) => changes.get(id) === 'upsert');
      const rows = await this.readRows(lens, job, upserts);
      await this.indexRows(lens, job, upserts.flatMap((id) => (rows.get(id) ? [{ id, row: rows.get(id)! }] : [])));
      const removed = chunk.filter((id) => changes.get(id) === 'delete' || rows.get(id) === null);
      if (removed.length) job.deleted += await this.options.index.delete(lens.name, removed);
      lens.indexChanged ||= removed.length > 0;
    }
  }

  /**
   * The current rows of ids, null for a row that is gone. A read the source refuses for an id's
   * value (a malformed id, a key of the wrong type) is isolated to that id, which is
   * dead-lettered and left out; any other failure (the source is down, a column was dropped)
   * fails the job, which holds the lens in error and is tried again later.
   */
  private async readRows(lens: LensRuntime, job: Job, ids: string[]): Promise<Map<string, Record<string, unknown> | null>> {
    const result = new Map<string, Record<string, unknown> | null>();
    if (ids.length === 0) return result;
    const reader = await this.reader(lens);
    const read = async (items: Array<{ id: string }>) => {
      const found = await this.readWithRetry(() => reader.readByIds(items.map((i) => i.id)));
      return items.map((i) => found.get(i.id) ?? null);
    };
    const rows = await this.isolating(lens, job, ids.map((id) => ({ id })), read, (err) => (isRecordRejection(err) ? 'source-read' : undefined));
    ids.forEach((id, i) => rows[i] !== undefined && result.set(id, rows[i]!));
    return result;
  }

  /**
   * Runs a full sweep holding the lease `worker/<lens>/full`: worker replicas sharing a state
   * store (a kafka bus) keep one cursor per lens, so a second replica's sweep of the lens waits,
   * then resumes from the cursor (a replica that died mid-sweep) or starts again (one that
   * finished). With one process (embedded state) the lease is held at once.
   */
  private async oneSweepAtATime(lens: LensRuntime, sweep: () => Promise<void>): Promise<void> {
    const waiting = () => {
      lens.cursor = 'full:waiting for another replica';
      this.options.log.info({ lens: lens.name }, "another replica is running this lens's full sync; this one runs once it is done");
    };
    const lease = await this.options.state.lease(`worker/${lens.name}/full`, { signal: this.stopSignal, waiting });
    try {
      await sweep();
    } finally {
      await lease.release();
    }
  }

  /** Every row in key order, then index entries whose rows are gone; resumable, page by page. */
  private async fullSweep(lens: LensRuntime, job: Job): Promise<void> {
    const key = `worker/${lens.name}/full`;
    let cursor = (await this.options.state.get<{ phase: 'rows' | 'ghosts'; after?: string }>(key)) ?? { phase: 'rows' as const };
    const reader = await this.reader(lens);
    if (cursor.phase === 'rows') {
      await this.sweepRows(lens, job, reader, key, cursor.after);
      cursor = { phase: 'ghosts' };
    }
    for (;;) {
      this.stopSignal.throwIfAborted();
      const ids = await this.options.index.idsAfter(lens.name, cursor.after, 1000);
      if (ids.length === 0) break;
      const rows = await this.readWithRetry(() => reader.readByIds(ids));
      const ghosts = ids.filter((id) => !rows.has(id));
      if (ghosts.length) job.deleted += await this.options.index.delete(lens.name, ghosts);
      lens.indexChanged ||= ghosts.length > 0;
      cursor = { phase: 'ghosts', after: ids[ids.length - 1] };
      await this.options.state.put(key, cursor);
    }
    await this.options.state.put(key, { phase: 'rows' });
    lens.cursor = undefined;
  }

  /**
   * The rows of a full sweep after `after`, page by page: the next page is read while this one
   * is embedded, and embedded while the last is written. The cursor (`key`) is saved at most
   * once a second: after a crash, at most that long's pages are written again (the same records).
   */
  private async sweepRows(lens: LensRuntime, job: Job, reader: RowReader, key: string, after: string | undefined): Promise<void> {
    const batch = this.readBatch;
    const read = (from: string | undefined) => this.startNow(() => this.readWithRetry(() => reader.page({ after: from, limit: batch })));
    let next = read(after);
    let stored: Promise<void> = Promise.resolve();
    let savedAt = performance.now();
    try {
      for (let more = true; more; ) {
        this.stopSignal.throwIfAborted();
        const page = await next;
        more = page.length === batch;
        if (more) next = read(page[page.length - 1].id);
        const prepared = await this.prepareRows(lens, job, page);
        await stored;
        const reached = more ? { phase: 'rows', after: page[page.length - 1].id } : { phase: 'ghosts' };
        stored = this.startNow(async () => {
          await this.storeRows(lens, job, prepared);
          lens.cursor = `full:${reached.after ?? 'ghosts'}`;
          if (!more || performance.now() - savedAt >= CURSOR_SAVE_MS) {
            savedAt = performance.now();
            await this.options.state.put(key, reached);
          }
        });
      }
    } finally {
      await stored.catch(() => undefined);
    }
    await stored;
  }

  /**
   * Rows whose changeTrackingColumn moved past the saved cursor, keyset on (column, key); the
   * first sync starts from the first row (no typed sentinel: the column may be of any type).
   */
  private async incrementalSweep(lens: LensRuntime, job: Job): Promise<void> {
    const key = `worker/${lens.name}/incremental`;
    const batch = this.readBatch;
    const reader = await this.reader(lens);
    let since = (await this.options.state.get<{ value?: string; id?: string }>(key)) ?? {};
    for (;;) {
      this.stopSignal.throwIfAborted();
      const page = await this.readWithRetry(() => reader.page({ limit: batch, changedSince: since }));
      if (page.length === 0) break;
      await this.indexRows(lens, job, page);
      const last = page[page.length - 1];
      since = { value: last.cursor!, id: last.id };
      lens.cursor = since.value;
      await this.options.state.put(key, since);
      if (page.length < batch) break;
    }
  }

  /** Builds, embeds (unless the hash is unchanged) and writes rows; bad items are dead-lettered. */
  private async indexRows(lens: LensRuntime, job: Job, rows: Array<{ id: string; row: Record<string, unknown> }>): Promise<void> {
    await this.storeRows(lens, job, await this.prepareRows(lens, job, rows));
  }

  /** Builds rows' records and embeds those whose text changed (the rest only update metadata). */
  private async prepareRows(lens: LensRuntime, job: Job, rows: Array<{ id: string; row: Record<string, unknown> }>): Promise<PreparedRows> {
    if (rows.length === 0) return { records: [], unchangedText: [] };
    const { index, embedder } = this.options;
    const built = rows.map(({ id, row }) => {
      const content = buildContent(lens.config, row);
      return { id, content, metadata: buildMetadata(lens.config, row), contentHash: contentHash(embedder.id, content) };
    });
    const known = await index.hashes(lens.name, built.map((b) => b.id));
    const records: IndexRecord[] = [];
    const unchangedText: typeof built = [];
    const toEmbed: typeof built = [];
    for (const b of built) {
      if (known.get(b.id) === b.contentHash) {
        unchangedText.push(b);
      } else if (b.content === '') {
        records.push({ ...b, vector: new Float32Array(embedder.dimensions) }); // nothing to embed; matches no query
      } else {
        toEmbed.push(b);
      }
    }
    const counters = this.counters(lens.name);
    for (const b of unchangedText) {
      counters.skippedByHash++;
      counters.tokensSaved += estimateTokens(b.content);
    }
    const vectors = await this.isolating(lens, job, toEmbed, (items) => this.embedTransient(lens.name, items), embedInputReason);
    toEmbed.forEach((b, i) => vectors[i] && records.push({ ...b, vector: vectors[i]! }));
    return { records, unchangedText };
  }

  /** Writes prepared rows to the index; records it refuses are dead-lettered. */
  private async storeRows(lens: LensRuntime, job: Job, { records, unchangedText }: PreparedRows): Promise<void> {
    const { index } = this.options;
    const written = (ok: unknown[]) => ok.filter((x) => x !== undefined).length;
    const updated = await this.isolating(lens, job, unchangedText, async (items) => (await index.updateMetadata(lens.name, items), items), indexDataReason);
    const upserted = await this.isolating(lens, job, records, async (items) => (await index.upsert(lens.name, items), items), indexDataReason);
    const done = written(updated) + written(upserted);
    job.indexed += done;
    this.counters(lens.name).writtenRecords += done;
    lens.rate.count += done;
    lens.indexChanged ||= done > 0;
  }

  /** Embeds texts, retrying transient failures a few times. */
  private embedTransient(lens: string, items: Array<{ content: string }>): Promise<Float32Array[]> {
    return retry(() => this.embed(lens, items.map((i) => i.content)), {
      maxAttempts: TRANSIENT_ATTEMPTS,
      signal: this.stopSignal,
      retriable: (err) => err instanceof EmbedError && err.kind === 'transient',
    });
  }

  /**
   * Runs `step` on items (one result per item). When it fails with an error `blame` pins on the
   * items themselves (it returns a dead-letter reason), halves them until each refused item is
   * alone and dead-letters it (its result is undefined). Any other error propagates: the job
   * fails and is retried, nothing is dead-lettered.
   */
  private async isolating<T extends { id: string }, R>(
    lens: LensRuntime,
    job: Job,
    items: T[],
    step: (items: T[]) => Promise<R[]>,
    blame: (err: unknown) => string | undefined,
  ): Promise<(R | undefined)[]> {
    if (items.length === 0) return [];
    try {
      return await step(items);
    } catch (err) {
      const reason = blame(err);
      if (reason === undefined) throw err;
      if (items.length === 1) {
        await this.deadLetter(lens, job, [items[0].id], reason, err, 1);
        return [undefined];
      }
      const half = Math.ceil(items.length / 2);
      const first = await this.isolating(lens, job, items.slice(0, half), step, blame);
      return [...first, ...(await this.isolating(lens, job, items.slice(half), step, blame))];
    }
  }

  /** Starts `work` now; a failure is thrown where the result is awaited, or dropped if it never is (the job stopped first). */
  private startNow<T>(work: () => Promise<T>): Promise<T> {
    const started = work();
    started.catch(() => undefined);
    return started;
  }

  /** A source read, retried a few times when its error is worth retrying. */
  private readWithRetry<T>(fn: () => Promise<T>): Promise<T> {
    return retry(fn, { maxAttempts: TRANSIENT_ATTEMPTS, signal: this.stopSignal });
  }

  private async deadLetter(lens: LensRuntime, job: Job, ids: string[], reason: string, err: unknown, attempts: number): Promise<void> {
    const actions = job.work?.changes;
    for (const id of ids) {
      const provenance = { changes: [{ id, action: actions?.get(id) ?? ('upsert' as const) }], response: `job ${job.jobId}` };
      await this.options.deadLetters.add({ lens: lens.name, reason, error: describeError(err), attempts, provenance });
    }
    job.deadLettered += ids.length;
    this.options.log.warn({ lens: lens.name, ids: ids.slice(0, 10), count: ids.length, reason, err: describeError(err) }, 'items sent to the dead-letter queue');
  }

  /**
   * Stops the loops: in-flight embedding requests are aborted and long jobs stop between pages;
   * their work stays queued (the journal, the sweep cursors) and resumes on the next start.
   * Resolves once the loops ended, or after `timeoutMs` even if a step hangs (a source query).
   */
  async stop(timeoutMs = DEFAULT_STOP_TIMEOUT_MS): Promise<void> {
    this.stopController.abort(new TributaryError('the worker is stopping; the job resumes on the next start'));
    for (const lens of this.lensMap.values()) {
      lens.wake?.();
      this.settle(lens, Infinity); // `indexed` callers learn the worker stopped
    }
    const ended = await Promise.race([Promise.all(this.loops).then(() => true), sleep(timeoutMs, false, { ref: false })]);
    if (!ended) this.options.log.warn({ timeoutMs }, 'worker stop timed out: a job step still hangs; its work resumes on the next start');
  }
}
