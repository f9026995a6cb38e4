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
 *   and at most 10 MB.
 * - `sourceUpdatedAt` is the row's changeTrackingColumn when the lens has one, else the commit
 *   time (else now), ISO 8601 UTC. `entityType` is the lens's `entityType`, else its name.
 * - Seyn has no delete: `onDelete: skip` counts it (status `skippedDeletes`), `tombstone` sends
 *   the record with `payload: { "_deleted": true }`. A row gone when read is a delete.
 * - 202 `{ data: { rejected: [{ recordId, code, message }] } }`: each rejected record becomes a
 *   dead letter with its code and message (`tributary dlq replay` sends it again); the rest
 *   count as delivered.
 * - A retried batch (the pipeline passes the same array again) resumes after the requests
 *   already accepted and resends the failed one under its Idempotency-Key.
 * - A full sync is Tributary's own: the table in key order, resumable (src/payload.ts); an
 *   incremental sync (`tributary ingest --mode incremental`) is a full one.
 * - Errors (`{ success: false, error: { code, message } }`) are classified by src/hosted.ts:
 *   401, 403 (INSUFFICIENT_SCOPE) and 404 hold the lens in `error`; 429 and 5xx retry; any
 *   other 4xx dead-letters the batch.
 */
import { randomUUID } from 'node:crypto';
import { HostedClient, codeAndMessage, oneLine, parseJson } from '../../hosted.js';
import { encodeValue, PayloadStage, type PayloadRecord } from '../../payload.js';
import type { SinkContext } from '../../plugins.js';
import type { RecordChange, Sink } from '../../types.js';
import type { SeynSinkConfig } from './spec.js';

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
  /** The request that failed last: the changes up to `end`, sent under `key`. */
  pending?: { end: number; key: string };
}

/** One request being filled. */
interface Chunk {
  start: number;
  records: string[];
  changes: RecordChange[];
  bytes: number;
}

interface SeynAnswer {
  data?: { batchId?: string; rejected?: Array<{ recordId?: string; code?: string; message?: string }> };
}

export async function createSeynSink(config: SeynSinkConfig, ctx: SinkContext): Promise<Sink> {
  const stage = new PayloadStage(ctx);
  await stage.open();
  const client = new HostedClient({
    label: `seyn sink "${ctx.name}"`,
    url: config.url,
    key: config.key,
    timeoutMs: config.timeoutMs,
    maxRequestsPerSecond: config.maxRequestsPerSecond,
    fatal: FATAL_HINTS,
    errorText: (body) => {
      return codeAndMessage((parseJson(body) as { error?: { code?: unknown; message?: unknown } } | null)?.error);
    },
  });
  const plans = new WeakMap<RecordChange[], Plan>();
  const skipped = new Map<string, number>();
  const batchIds = new Map<string, string>();
  const envelope = `{"sourceId":${JSON.stringify(config.sourceId)},"records":[`;

  /** The record's JSON, or undefined when nothing is sent (a skipped delete). */
  function recordJson(lens: string, rec: PayloadRecord): string | undefined {
    if (!rec.payload && config.onDelete === 'skip') {
      skipped.set(lens, (skipped.get(lens) ?? 0) + 1);
      return undefined;
    }
    const lensConfig = ctx.lenses[lens];
    return JSON.stringify({
      recordId: rec.change.id,
      entityType: lensConfig.entityType ?? lens,
      sourceUpdatedAt: updatedAt(rec, lensConfig.changeTrackingColumn),
      payload: rec.payload ?? { _deleted: true },
    });
  }

  /** Sends the records in requests of ≤ MAX_RECORDS and ≤ MAX_BYTES, advancing `plan`. */
  async function deliver(lens: string, slices: AsyncIterable<PayloadRecord[]>, plan: Plan): Promise<void> {
    let chunk: Chunk = { start: plan.done, records: [], changes: [], bytes: envelope.length + 2 };
    let index = plan.done;
    for await (const slice of slices) {
      for (const rec of slice) {
        const json = recordJson(lens, rec);
        const size = json ? Buffer.byteLength(json) + 1 : 0;
        const full = chunk.records.length === MAX_RECORDS || chunk.bytes + size > MAX_BYTES || plan.pending?.end === index;
        if (full && index > chunk.start) chunk = await flush(lens, chunk, index, plan);
        if (json) {
          chunk.records.push(json);
          chunk.changes.push(rec.change);
          chunk.bytes += size;
        }
        index++;
      }
    }
    if (index > chunk.start) await flush(lens, chunk, index, plan);
  }

  /** Posts one request (if it has records); returns the next, empty chunk. */
  async function flush(lens: string, chunk: Chunk, end: number, plan: Plan): Promise<Chunk> {
    if (chunk.records.length > 0) {
      const key = plan.pending?.end === end ? plan.pending.key : randomUUID();
      plan.pending = { end, key };
      const headers = {
        authorization: `Bearer ${config.key}`,
        'idempotency-key': key,
        'content-type': 'application/json',
        accept: 'application/json',
        'user-agent': 'tributary',
      };
      const res = await client.post({ where: `lens "${lens}"`, path: '/v1/ingest', headers, body: `${envelope}${chunk.records.join(',')}]}` });
      await rejected(lens, chunk.changes, res.text);
    }
    plan.done = end;
    plan.pending = undefined;
    return { start: end, records: [], changes: [], bytes: envelope.length + 2 };
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

  const fullSync = (lens: string) => stage.fullSync(lens, (records) => deliver(lens, once(records), { done: 0 }));

  return {
    async write(lens, changes) {
      const plan = plans.get(changes) ?? { done: 0 };
      plans.set(changes, plan);
      await deliver(lens, stage.records(lens, changes.slice(plan.done)), plan);
      plans.delete(changes);
    },
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
  return new Date(rec.change.committedAt ?? Date.now()).toISOString();
}

async function* once<T>(value: T): AsyncGenerator<T> {
  yield value;
}
