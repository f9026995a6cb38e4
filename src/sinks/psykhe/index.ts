/**
 * The Psykhe sink: a lens's rows go to Psykhe's ingestion API (its public "Create new
 * ingestion" reference, `POST {url}/v1/ingestion/`) as a JSONL product feed, one line a row:
 *
 *     X-PSYKHE-API-KEY: KEY
 *     X-PSYKHE-PROCESSING-MODE: insert | soft_replace
 *     Content-Type: application/x-ndjson      (Content-Encoding: gzip unless `gzip: false`)
 *     {"operation":"insert","product_data":{...payload...}}
 *
 * - Changes go as `insert` requests of at most `maxRequestBytes` (default 1 MiB) of JSONL, up
 *   to CONCURRENT_REQUESTS of a batch at once; the batch is delivered once all were accepted. A
 *   `payload_too_large` answer splits a request in halves (down to one line, then the batch is
 *   rejected and dead-lettered).
 * - A full sync (first start, truncate, `tributary ingest --mode full|incremental`) is ONE
 *   `soft_replace` request streaming the whole table, read a page at a time through gzip, so
 *   memory does not grow with the catalog. It is not resumable mid-request: a failure sends it
 *   again from the start. A catalog Psykhe finds too large is `fatal`: the lens shows `error`
 *   saying so. An empty table sends nothing (Psykhe refuses an empty feed).
 * - Psykhe has no delete: a delete (or a row gone when read) schedules a `soft_replace` full
 *   sync `resyncAfter` later, kept in the state store (`resync/<sink>/<lens>`) before the batch
 *   is accepted, so a restart still runs it; deletes meanwhile share it. A scheduled sync that
 *   fails is tried again after `RESYNC_RETRY_MS` (or the 429's Retry-After).
 * - A lens's batches and soft_replaces never overlap (one lock per lens): a scheduled sync waits for the batch
 *   in flight, and the next batch waits for it.
 * - Each 2xx's `data.ingestion_id` is the lens's `lastIngestionId` in `tributary status`.
 * - Errors (`{ errors: [{ code, message }] }`) are classified by src/hosted.ts: 401, 403 and
 *   404 hold the lens in `error`; 429 and 5xx retry; any other 4xx dead-letters the batch.
 */
import { Readable, pipeline } from 'node:stream';
import pLimit from 'p-limit';
import { promisify } from 'node:util';
import { createGzip, gzip as gzipCallback } from 'node:zlib';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseDuration } from '../../config/fragments.js';
import { SinkError, describeError } from '../../errors.js';
import { CONCURRENT_REQUESTS, InFlight, codeAndMessage, hostedClient, parseJson } from '../../hosted.js';
import { PayloadStage, type PayloadRecord } from '../../payload.js';
import type { SinkContext } from '../../plugins.js';
import type { Sink } from '../../types.js';
import type { PsykheSinkConfig } from './spec.js';

const gzip = promisify(gzipCallback);

/**
 * gzip level of insert requests: the fastest. Inserts are the live path, where the daemon's CPU
 * bounds throughput; a full sync's one long stream keeps zlib's default (smaller on the wire).
 */
const INSERT_GZIP_LEVEL = 1;

/** A scheduled soft_replace that failed is tried again this much later (unless a 429 says when). */
const RESYNC_RETRY_MS = 30_000;

const FATAL_HINTS: Record<number, string> = {
  401: "the API key is missing or invalid — check the sink's `key` (a private sk_ key)",
  403: "the API key may not ingest — use a private (sk_) key in the sink's `key`",
  404: "not found — check the sink's `url` (the API's base URL, without /v1)",
};

type Mode = 'insert' | 'soft_replace';

interface LensState {
  lastIngestionId?: number | string;
  /** When the scheduled soft_replace runs (ISO 8601). */
  resyncAt?: string;
  resyncError?: string;
  timer?: NodeJS.Timeout;
  /** The tail of the lens's lock: requests of a lens run one after another. */
  lock: Promise<unknown>;
}

export async function createPsykheSink(config: PsykheSinkConfig, ctx: SinkContext): Promise<Sink> {
  const stage = new PayloadStage(ctx);
  await stage.open();
  const client = hostedClient(`psykhe sink "${ctx.name}"`, config, {
    fatal: FATAL_HINTS,
    errorText: (body) => codeAndMessage((parseJson(body) as { errors?: Array<{ code?: unknown; message?: unknown }> } | null)?.errors?.[0]),
  });
  /** Every insert of the sink goes through it: its lenses share its connections. */
  const requests = pLimit(CONCURRENT_REQUESTS);
  const lenses = new Map<string, LensState>(Object.keys(ctx.lenses).map((lens) => [lens, { lock: Promise.resolve() }]));
  const resyncAfterMs = parseDuration(config.resyncAfter);
  const resyncKey = (lens: string) => `resync/${ctx.name}/${lens}`;
  let closed = false;

  /** Runs `fn` once the lens's earlier requests are done. */
  function locked<T>(lens: string, fn: () => Promise<T>): Promise<T> {
    const state = lenses.get(lens)!;
    const run = state.lock.then(fn, fn);
    state.lock = run.catch(() => undefined);
    return run;
  }

  async function post(lens: string, mode: Mode, body: Uint8Array | string | AsyncIterable<Uint8Array>): Promise<void> {
    const headers: Record<string, string> = {
      'x-psykhe-api-key': config.key,
      'x-psykhe-processing-mode': mode,
      'content-type': 'application/x-ndjson',
      accept: 'application/json',
      'user-agent': 'tributary',
      ...(config.gzip ? { 'content-encoding': 'gzip' } : {}),
    };
    const res = await client.post({ where: `lens "${lens}"`, path: '/v1/ingestion/', headers, body });
    const id = (parseJson(res.text) as { data?: { ingestion_id?: number | string } } | undefined)?.data?.ingestion_id;
    if (id !== undefined) lenses.get(lens)!.lastIngestionId = id;
  }

  /** One insert request; `payload_too_large` splits it in halves. */
  async function insert(lens: string, lines: string[]): Promise<void> {
    const text = lines.join('');
    try {
      // Compressed on libuv's thread pool: the main thread reads and encodes the next request meanwhile.
      await post(lens, 'insert', config.gzip ? await gzip(text, { level: INSERT_GZIP_LEVEL }) : text);
    } catch (err) {
      if (!tooLarge(err)) throw err;
      if (lines.length === 1) {
        throw new SinkError(`${(err as Error).message}; one product alone is too large for Psykhe — shorten its payload (the lens's \`payload\`)`, 'rejected', (err as SinkError).details);
      }
      const half = Math.ceil(lines.length / 2);
      await insert(lens, lines.slice(0, half));
      await insert(lens, lines.slice(half));
    }
  }

  /**
   * Sends the batch's rows as inserts of at most `maxRequestBytes`, up to CONCURRENT_REQUESTS at
   * once, so Psykhe takes one while the next is read; resolves once every one was accepted. Its
   * deletes schedule a soft_replace.
   */
  async function write(lens: string, records: AsyncIterable<PayloadRecord[]>): Promise<void> {
    const flight = new InFlight(requests);
    let lines: string[] = [];
    let bytes = 0;
    let deletes = 0;
    try {
      for await (const slice of records) {
        for (const rec of slice) {
          if (rec.json === undefined) {
            deletes++;
            continue;
          }
          const line = productLine(rec.json);
          const size = Buffer.byteLength(line);
          if (bytes + size > config.maxRequestBytes && lines.length > 0) {
            await flight.add(insert.bind(undefined, lens, lines));
            lines = [];
            bytes = 0;
          }
          lines.push(line);
          bytes += size;
        }
      }
      if (lines.length > 0) await flight.add(insert.bind(undefined, lens, lines));
    } finally {
      await flight.settled();
    }
    flight.check();
    if (deletes > 0) await schedule(lens);
  }

  /** The whole table as one soft_replace request, streamed. */
  async function fullSync(lens: string): Promise<void> {
    const pages = stage.scan(lens)[Symbol.asyncIterator]();
    const first = await pages.next();
    if (first.done) {
      ctx.log.warn({ lens }, 'full sync: the table is empty; Psykhe refuses an empty feed, so nothing was sent');
      return;
    }
    stage.start(lens);
    async function* lines(): AsyncGenerator<Buffer> {
      for (let page = first; !page.done; page = await pages.next()) {
        stage.count(lens, page.value.length);
        yield Buffer.from(page.value.map((rec) => productLine(rec.json!)).join(''));
      }
    }
    const body = config.gzip ? pipeline(Readable.from(lines()), createGzip(), () => undefined) : lines();
    try {
      await post(lens, 'soft_replace', body);
    } catch (err) {
      if (!tooLarge(err)) throw err;
      const rows = stage.fullSyncStatus(lens)?.rows;
      throw new SinkError(
        `${(err as Error).message}; the whole catalog (${rows} rows sent when Psykhe refused it) is too large for one soft_replace request — ` +
          "narrow the lens's `payload` or ask Psykhe to raise the limit; the lens stays in error and the full sync is tried again",
        'fatal',
        (err as SinkError).details,
      );
    }
    stage.finish(lens);
    await unschedule(lens);
  }

  /** Schedules a soft_replace `resyncAfter` from now, unless one is scheduled already. */
  async function schedule(lens: string): Promise<void> {
    const state = lenses.get(lens)!;
    if (state.resyncAt) return;
    const at = Date.now() + resyncAfterMs;
    await ctx.state.put(resyncKey(lens), { at });
    arm(lens, at);
    ctx.log.info({ lens, at: state.resyncAt }, 'deletes: a soft_replace full sync is scheduled');
  }

  function arm(lens: string, at: number): void {
    const state = lenses.get(lens)!;
    clearTimeout(state.timer);
    state.resyncAt = new Date(at).toISOString();
    state.timer = setTimeout(() => void runScheduled(lens), Math.max(0, at - Date.now()));
    state.timer.unref();
  }

  async function unschedule(lens: string): Promise<void> {
    const state = lenses.get(lens)!;
    clearTimeout(state.timer);
    state.timer = undefined;
    state.resyncAt = undefined;
    state.resyncError = undefined;
    await ctx.state.delete(resyncKey(lens));
  }

  /** The scheduled soft_replace; a failure is logged, shown in status and tried again later. */
  async function runScheduled(lens: string): Promise<void> {
    if (closed) return;
    try {
      await locked(lens, () => fullSync(lens));
    } catch (err) {
      if (closed) return;
      const state = lenses.get(lens)!;
      state.resyncError = describeError(err);
      ctx.log.warn({ lens, err: state.resyncError }, 'the scheduled soft_replace failed; trying again later');
      const retryAfterMs = err instanceof SinkError ? err.details.retryAfterMs : undefined;
      arm(lens, Date.now() + (retryAfterMs ?? RESYNC_RETRY_MS));
    }
  }

  // Scheduled syncs a stop (or crash) left behind.
  for (const lens of lenses.keys()) {
    const saved = await ctx.state.get<{ at: number }>(resyncKey(lens));
    if (saved) arm(lens, saved.at);
  }

  return {
    write(lens, changes) {
      return locked(lens, () => write(lens, stage.records(lens, changes)));
    },
    prepare: (lens, changes) => stage.prepare(lens, changes),
    requestFullSync(lens) {
      return locked(lens, () => fullSync(lens));
    },
    requestIncrementalSync(lens) {
      // Psykhe upserts by product: the catalog streamed again is the simplest correct answer.
      return locked(lens, () => fullSync(lens));
    },
    lensStatus(lens) {
      const { lastIngestionId, resyncAt, resyncError } = lenses.get(lens) ?? {};
      return { fullSync: stage.fullSyncStatus(lens), lastIngestionId, resyncAt, resyncError };
    },
    async close() {
      closed = true;
      for (const state of lenses.values()) clearTimeout(state.timer);
      client.close();
      await Promise.race([Promise.all([...lenses.values()].map((s) => s.lock)), sleep(1000)]);
      await stage.close();
    },
  };
}

/** One JSONL line of the feed. */
function productLine(payloadJson: string): string {
  return `{"operation":"insert","product_data":${payloadJson}}\n`;
}

/** Psykhe's `payload_too_large` (413). */
function tooLarge(err: unknown): boolean {
  return err instanceof SinkError && (err.details.status === 413 || /payload_too_large/.test(err.details.body ?? ''));
}
