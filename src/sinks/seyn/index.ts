/**
 * The Seyn sink: each change goes to Seyn's ingest API (its public "Ingest records" reference,
 * `POST {url}/v1/ingest`) as a record with its row's payload, superseding the prior version
 * of the same `recordId` (the lens's id):
 *
 *     Authorization: Bearer KEY
 *     Idempotency-Key: <uuid>            one per request, the same on every retry of it
 *     { "sourceId": ..., "records": [{ "recordId", "entityType", "sourceUpdatedAt", "payload" }] }
 *
 * - Rows come from the rows-for-ids stage (src/payload.ts); a request carries 1–500 records
 *   and at most 10 MB. A batch's requests go up to CONCURRENT_REQUESTS at once (across the
 *   sink's lenses); the batch counts as delivered once every one was accepted.
 * - `sourceUpdatedAt` is the row's changeTrackingColumn when the lens has one, else the commit
 *   time (else now), ISO 8601 UTC. `entityType` is the lens's `entityType`, else its name.
 * - Seyn has no delete: `onDelete: skip` counts it (status `skippedDeletes`), `tombstone` sends
 *   the record with `payload: { "_deleted": true }`. A row gone when read is a delete.
 * - 202 `{ data: { rejected: [{ recordId, code, message }] } }`: each rejected record becomes a
 *   dead letter with its code and message (`tributary dlq replay` sends it again); the rest
 *   count as delivered.
 * - A retried batch (the pipeline passes the same array again) skips the requests already
 *   accepted and resends the others with the same records and Idempotency-Key.
 * - A full sync is Tributary's own: the table in key order, resumable (src/payload.ts); an
 *   incremental sync (`tributary ingest --mode incremental`) is a full one.
 * - Errors (`{ success: false, error: { code, message } }`) are classified by src/hosted.ts:
 *   401, 403 (INSUFFICIENT_SCOPE) and 404 hold the lens in `error`; 429 and 5xx retry; any
 *   other 4xx dead-letters the batch.
 */
import { randomUUID } from 'node:crypto';
import pLimit from 'p-limit';
import { BodyBuffer, CONCURRENT_REQUESTS, InFlight, codeAndMessage, hostedClient, oneLine, parseJson } from '../../hosted.js';
import { encodeValue, PayloadStage, type PayloadRecord } from '../../payload.js';
import type { SinkContext } from '../../plugins.js';
import type { RecordChange, Sink } from '../../types.js';
import type { SeynSinkConfig } from './spec.js';

/** A deleted record's payload (`onDelete: tombstone`). */
const TOMBSTONE = '{"_deleted":true}';

/** Seyn's limits per request. */
export const MAX_RECORDS = 500;
export const MAX_BYTES = 10 * 1024 * 1024;

const FATAL_HINTS: Record<number, string> = {
  401: "the API key is missing or invalid — check the sink's `key` (app.seynlabs.com → Settings → API Keys)",
  403: "the API key lacks the ingest scope (INSUFFICIENT_SCOPE) — use a key with the ingest scope in the sink's `key`",
  404: "not found — check the sink's `url` and `sourceId` (create the source with POST /v1/sources)",
};

/** Where a batch stands across retries: changes before `done` were accepted. */
interface Plan {
  done: number;
  /** Requests past `done` of earlier attempts, by the index they start at. */
  sent: Map<number, Sent>;
}

/** One request of a batch: changes `start` to `end`, sent under `key` (reused on its retries). */
interface Sent {
  end: number;
  key: string;
  accepted: boolean;
}

/** One request being filled: its body ends with its last record but that record's closing brace (no `}]}` yet). */
interface Chunk {
  start: number;
  body: BodyBuffer;
  changes: RecordChange[];
  /** Deletes left out (`onDelete: skip`), counted once the request is accepted. */
  skippedDeletes: number;
}

interface SeynAnswer {
  data?: { batchId?: string; rejected?: Array<{ recordId?: string; code?: string; message?: string }> };
}

export async function createSeynSink(config: SeynSinkConfig, ctx: SinkContext): Promise<Sink> {
  const stage = new PayloadStage(ctx);
  await stage.open();
  const client = hostedClient(`seyn sink "${ctx.name}"`, config, {
    fatal: FATAL_HINTS,
    errorText: (body) => codeAndMessage((parseJson(body) as { error?: { code?: unknown; message?: unknown } } | null)?.error),
  });
  const plans = new WeakMap<RecordChange[], Plan>();
  /** Every request of the sink goes through it: its lenses share its connections. */
  const requests = pLimit(CONCURRENT_REQUESTS);
  const skipped = new Map<string, number>();
  const batchIds = new Map<string, string>();
  const envelope = `{"sourceId":${JSON.stringify(config.sourceId)},"records":[`;

  /** Each lens's part of a record between its recordId and its time: `,"entityType":…,"sourceUpdatedAt":"`. */
  const lensHeads = new Map(Object.entries(ctx.lenses).map(([lens, c]) => [lens, `,"entityType":${JSON.stringify(c.entityType ?? lens)},"sourceUpdatedAt":"`]));

  /**
   * Writes the record's JSON but its closing brace (the next record's head, or the body's end,
   * closes it): the head with the brace and comma before it as one short string, then the
   * payload as it is. Two writes, and no copy of the payload into a joined string.
   */
  function writeRecord(body: BodyBuffer, lens: string, rec: PayloadRecord, first: boolean): void {
    const time = updatedAt(rec, ctx.lenses[lens].changeTrackingColumn);
    body.write(`${first ? '' : '},'}{"recordId":${JSON.stringify(rec.change.id)}${lensHeads.get(lens)}${time}","payload":`);
    body.write(rec.json ?? TOMBSTONE);
  }

  /**
   * Adds the record to the chunk, unless it would take the body past MAX_BYTES (then nothing is
   * added and false is returned). A skipped delete adds nothing.
   */
  function add(chunk: Chunk, lens: string, rec: PayloadRecord): boolean {
    if (rec.json === undefined && config.onDelete === 'skip') {
      chunk.skippedDeletes++;
      return true;
    }
    const before = chunk.body.length;
    writeRecord(chunk.body, lens, rec, chunk.changes.length === 0);
    if (chunk.body.length + 3 > MAX_BYTES && chunk.changes.length > 0) { // 3: the `}]}` that closes the body
      chunk.body.truncate(before);
      return false;
    }
    chunk.changes.push(rec.change);
    return true;
  }

  /**
   * Sends the records in requests of ≤ MAX_RECORDS and ≤ MAX_BYTES, up to CONCURRENT_REQUESTS
   * at once, and resolves once every one was accepted. A request of an earlier attempt keeps
   * its boundaries and its Idempotency-Key; one already accepted is not sent again.
   */
  async function deliver(lens: string, slices: AsyncIterable<PayloadRecord[]>, plan: Plan): Promise<void> {
    const boundaries = new Set([...plan.sent].flatMap(([start, sent]) => [start, sent.end]));
    const flight = new InFlight(requests);
    let chunk = emptyChunk(plan.done);
    let index = plan.done;
    try {
      for await (const slice of slices) {
        for (const rec of slice) {
          const full = chunk.changes.length === MAX_RECORDS || (boundaries.has(index) && index > chunk.start);
          if (full || !add(chunk, lens, rec)) {
            await flight.add(send.bind(undefined, lens, chunk, index, plan));
            chunk = emptyChunk(index, chunk.body.length);
            add(chunk, lens, rec);
          }
          index++;
        }
      }
      if (index > chunk.start) await flight.add(send.bind(undefined, lens, chunk, index, plan));
    } finally {
      await flight.settled();
      advance(plan);
    }
    flight.check();
  }

  /** A chunk from `start`, its body sized for about `bytes`. */
  function emptyChunk(start: number, bytes = 64 * 1024): Chunk {
    const body = new BodyBuffer(bytes + 4096);
    body.write(envelope);
    return { start, body, changes: [], skippedDeletes: 0 };
  }

  /** Posts one request (if it has records and was not accepted before) and records that Seyn accepted it; once per chunk. */
  async function send(lens: string, chunk: Chunk, end: number, plan: Plan): Promise<void> {
    const earlier = plan.sent.get(chunk.start);
    if (earlier?.end === end && earlier.accepted) return;
    const sent: Sent = { end, key: earlier?.end === end ? earlier.key : randomUUID(), accepted: false };
    plan.sent.set(chunk.start, sent);
    if (chunk.changes.length > 0) {
      const headers = {
        authorization: `Bearer ${config.key}`,
        'idempotency-key': sent.key,
        'content-type': 'application/json',
        accept: 'application/json',
        'user-agent': 'tributary',
      };
      chunk.body.write('}]}');
      const res = await client.post({ where: `lens "${lens}"`, path: '/v1/ingest', headers, body: chunk.body.bytes() });
      await rejected(lens, chunk.changes, res.text);
    }
    sent.accepted = true;
    if (chunk.skippedDeletes) skipped.set(lens, (skipped.get(lens) ?? 0) + chunk.skippedDeletes);
  }

  /** Dead-letters the records a 202 lists in `rejected`, each with its code and message. */
  async function rejected(lens: string, changes: RecordChange[], text: string): Promise<void> {
    const answer = parseJson(text) as SeynAnswer | undefined;
    if (answer?.data?.batchId) batchIds.set(lens, answer.data.batchId);
    const list = answer?.data?.rejected ?? [];
    if (list.length === 0) return;
    const byId = new Map(changes.map((c) => [c.id, c]));
    for (const entry of list) {
      const change = byId.get(String(entry.recordId));
      if (!change) continue;
      const code = oneLine(entry.code) ?? 'REJECTED';
      await ctx.deadLetters.add({
        lens,
        reason: `seyn rejected the record (${code})`,
        error: `${code}: ${oneLine(entry.message) ?? 'no message'}`,
        attempts: 1,
        provenance: { changes: [{ id: change.id, action: change.action }], response: JSON.stringify(entry) },
      });
    }
    ctx.metrics.deadLetters.inc({ lens }, list.length);
    ctx.log.error({ lens, rejected: list.length }, 'seyn rejected records; they are in the dead-letter store');
  }

  const fullSync = (lens: string) => stage.fullSync(lens, (records) => deliver(lens, once(records), { done: 0, sent: new Map() }));

  return {
    async write(lens, changes) {
      const plan = plans.get(changes) ?? { done: 0, sent: new Map() };
      plans.set(changes, plan);
      await deliver(lens, stage.records(lens, plan.done === 0 ? changes : changes.slice(plan.done)), plan);
      plans.delete(changes);
    },
    prepare: (lens, changes) => stage.prepare(lens, changes),
    requestFullSync: fullSync,
    // Tributary keeps no cursor of what Seyn holds: an incremental sync is a full one (records are superseded by recordId).
    requestIncrementalSync: fullSync,
    lensStatus(lens) {
      return { fullSync: stage.fullSyncStatus(lens), skippedDeletes: skipped.get(lens) ?? 0, lastBatchId: batchIds.get(lens) };
    },
    async close() {
      client.close();
      await stage.close();
    },
  };
}

/** `sourceUpdatedAt`: the row's changeTrackingColumn when it is a time, else the commit time, else now. */
function updatedAt(rec: PayloadRecord, column: string | undefined): string {
  const value = column && rec.row ? encodeValue(rec.row[column]) : undefined;
  if (typeof value === 'string' && !Number.isNaN(Date.parse(value))) return new Date(value).toISOString();
  return isoTime(rec.change.committedAt ?? Date.now());
}

/** The last time printed: a transaction's changes share their commit time. */
let lastTime = { ms: NaN, iso: '' };

function isoTime(ms: number): string {
  if (ms !== lastTime.ms) lastTime = { ms, iso: new Date(ms).toISOString() };
  return lastTime.iso;
}

/** Moves `plan.done` past the requests accepted in a row from it. */
function advance(plan: Plan): void {
  for (let sent = plan.sent.get(plan.done); sent?.accepted; sent = plan.sent.get(plan.done)) {
    plan.sent.delete(plan.done);
    plan.done = sent.end;
  }
}

async function* once<T>(value: T): AsyncGenerator<T> {
  yield value;
}
