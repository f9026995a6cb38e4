/**
 * A loopback Seyn ingest API for tests and benchmarks: `POST /v1/ingest` as Seyn's public
 * "Ingest records" reference describes it, checked as strictly as the vendor would.
 *
 * - any other route → 404 `NOT_FOUND`
 * - `Authorization: Bearer KEY`: missing or unknown → 401 `UNAUTHORIZED`; a read-only key
 *   (`readOnlyKeys`) → 403 `INSUFFICIENT_SCOPE`
 * - `Content-Type` other than application/json → 415 `UNSUPPORTED_MEDIA_TYPE`
 * - `Idempotency-Key` that is not a uuid → 400 `VALIDATION_ERROR`; a key seen before → the
 *   answer it got then, nothing applied again
 * - body over 10 MB → 413 `PAYLOAD_TOO_LARGE`
 * - bad JSON, unknown fields, `sourceId` not a uuid, 0 or more than 500 records, a record
 *   without a string `recordId` / `entityType`, an ISO 8601 UTC `sourceUpdatedAt` or an object
 *   `payload` → 400 `VALIDATION_ERROR` naming the field
 * - a `sourceId` other than the server's → 404 `SOURCE_NOT_FOUND`
 * - otherwise 202 `{ success, data: { batchId, sourceId, status, accepted, deduplicated,
 *   rejected, createdAt }, meta: { requestId } }`; a record whose content did not change since
 *   its last version is `deduplicated`; `rejectRecord` picks records to list in `rejected`.
 *
 * Errors are `{ success: false, error: { code, message } }`.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { send, serveLoopback, type Answer } from './loopback.js';

export const SEYN_SOURCE_ID = 'b6f1c0de-1f2a-4c3b-9d4e-5a6b7c8d9e0f';
const MAX_RECORDS = 500;
const MAX_BYTES = 10 * 1024 * 1024;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const RECORD_FIELDS = new Set(['recordId', 'entityType', 'sourceUpdatedAt', 'payload']);

export interface SeynRecord {
  recordId: string;
  entityType: string;
  sourceUpdatedAt: string;
  payload: Record<string, unknown>;
}

/** One request as it arrived. */
export interface SeynRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The records, when the body had an array of them. */
  records: SeynRecord[];
  bytes: number;
  receivedAt: number;
  status?: number;
}

export interface SeynServerOptions {
  keys?: string[];
  readOnlyKeys?: string[];
  sourceId?: string;
  /** Keep every request's records in `requests` (default true). */
  keepHistory?: boolean;
  /**
   * Keep each record's latest version (default true): `latest` returns them, and a record sent
   * again unchanged is deduplicated. false keeps only the ids (benchmarks): `stored` counts
   * distinct records, and nothing is deduplicated.
   */
  keepRecords?: boolean;
}

export interface SeynServer {
  url: string;
  requests: SeynRequest[];
  /** The latest version of each record of an entity type, by recordId. */
  latest(entityType: string): Map<string, SeynRecord>;
  /** Records stored (accepted, not deduplicated) of an entity type; distinct records without keepRecords. */
  stored(entityType: string): number;
  /** Answer requests with `fn` instead (undefined falls back to the default). */
  respondWith(fn: ((req: SeynRequest) => Answer | undefined) | undefined): void;
  /** List records for which `fn` returns a code and message in `rejected`. */
  rejectRecord(fn: ((record: SeynRecord) => { code: string; message: string } | undefined) | undefined): void;
  /** Answer every request this much later (a slow API). */
  setDelay(ms: number): void;
  close(): Promise<void>;
}

export async function startSeynServer(options: SeynServerOptions = {}): Promise<SeynServer> {
  const keys = new Set(options.keys ?? ['sk_live_test']);
  const readOnly = new Set(options.readOnlyKeys ?? ['sk_live_readonly']);
  const sourceId = options.sourceId ?? SEYN_SOURCE_ID;
  const requests: SeynRequest[] = [];
  const keepRecords = options.keepRecords !== false;
  /** Each entity type's latest version of each record (undefined without keepRecords). */
  const latest = new Map<string, Map<string, SeynRecord | undefined>>();
  const stored = new Map<string, number>();
  const byIdempotencyKey = new Map<string, Answer>();
  let responder: ((req: SeynRequest) => Answer | undefined) | undefined;
  let rejector: ((record: SeynRecord) => { code: string; message: string } | undefined) | undefined;
  let delayMs = 0;

  function validate(req: SeynRequest, raw: Buffer): Answer | SeynRecord[] {
    if (req.method !== 'POST' || req.path !== '/v1/ingest') return error(404, 'NOT_FOUND', `No route ${req.method} ${req.path}`);
    const auth = req.headers.authorization ?? '';
    const key = auth.startsWith('Bearer ') ? auth.slice(7) : '';
    if (readOnly.has(key)) return error(403, 'INSUFFICIENT_SCOPE', 'This API key does not have the ingest scope');
    if (!keys.has(key)) return error(401, 'UNAUTHORIZED', 'Missing or invalid API key');
    if (!/^application\/json(;|$)/.test(req.headers['content-type'] ?? '')) return error(415, 'UNSUPPORTED_MEDIA_TYPE', 'Content-Type must be application/json');
    const idem = req.headers['idempotency-key'];
    if (idem !== undefined && !UUID.test(String(idem))) return error(400, 'VALIDATION_ERROR', 'Idempotency-Key must be a uuid');
    if (raw.length > MAX_BYTES) return error(413, 'PAYLOAD_TOO_LARGE', 'Request body exceeds 10 MB');
    let body: unknown;
    try {
      body = JSON.parse(raw.toString('utf8'));
    } catch {
      return error(400, 'VALIDATION_ERROR', 'Request body must be valid JSON');
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) return error(400, 'VALIDATION_ERROR', 'Request body must be a JSON object');
    const extra = Object.keys(body).filter((k) => k !== 'sourceId' && k !== 'records');
    if (extra.length) return error(400, 'VALIDATION_ERROR', `Unknown field: ${extra[0]}`);
    const { sourceId: sid, records } = body as { sourceId?: unknown; records?: unknown };
    if (typeof sid !== 'string' || !UUID.test(sid)) return error(400, 'VALIDATION_ERROR', 'sourceId must be a uuid');
    if (!Array.isArray(records) || records.length < 1 || records.length > MAX_RECORDS) {
      return error(400, 'VALIDATION_ERROR', `records must be an array of 1 to ${MAX_RECORDS} elements`);
    }
    for (let i = 0; i < records.length; i++) {
      const problem = recordProblem(records[i]);
      if (problem) return error(400, 'VALIDATION_ERROR', `records[${i}]${problem}`);
    }
    if (sid !== sourceId) return error(404, 'SOURCE_NOT_FOUND', `Source not found: ${sid}`);
    return records as SeynRecord[];
  }

  /** Stores the records; the answer lists deduplicated and rejected ones. */
  function ingest(records: SeynRecord[]): Answer {
    let accepted = 0;
    let deduplicated = 0;
    const rejected: Array<{ recordId: string; code: string; message: string }> = [];
    for (const record of records) {
      const refusal = rejector?.(record);
      if (refusal) {
        rejected.push({ recordId: record.recordId, ...refusal });
        continue;
      }
      let type = latest.get(record.entityType);
      if (!type) latest.set(record.entityType, (type = new Map()));
      const previous = type.get(record.recordId);
      // Compared only when there is a version: a new record costs nothing more.
      if (previous && JSON.stringify(previous.payload) === JSON.stringify(record.payload)) {
        deduplicated++;
        continue;
      }
      if (keepRecords || !type.has(record.recordId)) stored.set(record.entityType, (stored.get(record.entityType) ?? 0) + 1);
      type.set(record.recordId, keepRecords ? record : undefined);
      accepted++;
    }
    const data = { batchId: randomUUID(), sourceId, status: 'queued', accepted, deduplicated, rejected, createdAt: new Date().toISOString() };
    return { status: 202, body: { success: true, data, meta: { requestId: randomUUID() } } };
  }

  async function handle(raw: Buffer, method: string, url: string, headers: IncomingHttpHeaders, res: ServerResponse) {
    const req: SeynRequest = { method, path: url, headers, records: [], bytes: raw.length, receivedAt: Date.now() };
    if (options.keepHistory !== false) {
      try {
        const records = (JSON.parse(raw.toString('utf8')) as { records?: unknown }).records;
        if (Array.isArray(records)) req.records = records as SeynRecord[];
      } catch {
        // validate() answers it
      }
    }
    requests.push(req);
    if (delayMs > 0) await new Promise((resolve) => setTimeout(resolve, delayMs));
    let answer = responder?.(req);
    if (!answer) {
      const checked = validate(req, raw);
      const idem = headers['idempotency-key'] as string | undefined;
      if (!Array.isArray(checked)) answer = checked;
      else if (idem && byIdempotencyKey.has(idem)) answer = byIdempotencyKey.get(idem)!;
      else {
        answer = ingest(checked);
        if (idem) byIdempotencyKey.set(idem, answer);
      }
    }
    req.status = answer.status;
    send(res, answer);
  }

  const server = await serveLoopback(handle, (err) => error(500, 'INTERNAL', `test server failure: ${String(err)}`));
  return {
    url: `http://127.0.0.1:${server.port}`,
    requests,
    latest: (type) => new Map([...(latest.get(type) ?? [])].filter((entry): entry is [string, SeynRecord] => entry[1] !== undefined)),
    stored: (type) => stored.get(type) ?? 0,
    respondWith(fn) {
      responder = fn;
    },
    rejectRecord(fn) {
      rejector = fn;
    },
    setDelay(ms) {
      delayMs = ms;
    },
    close: server.close,
  };
}

/** What is wrong with one record, as `.field must …`, or undefined. */
function recordProblem(record: unknown): string | undefined {
  if (record === null || typeof record !== 'object' || Array.isArray(record)) return ' must be an object';
  const r = record as Record<string, unknown>;
  for (const field in r) if (!RECORD_FIELDS.has(field)) return `: unknown field ${field}`;
  if (typeof r.recordId !== 'string' || r.recordId === '') return '.recordId must be a non-empty string';
  if (typeof r.entityType !== 'string' || r.entityType === '') return '.entityType must be a non-empty string';
  if (typeof r.sourceUpdatedAt !== 'string' || !ISO_UTC.test(r.sourceUpdatedAt) || Number.isNaN(Date.parse(r.sourceUpdatedAt))) {
    return '.sourceUpdatedAt must be an ISO 8601 UTC date-time';
  }
  if (r.payload === null || typeof r.payload !== 'object' || Array.isArray(r.payload)) return '.payload must be an object';
  return undefined;
}

export function error(status: number, code: string, message: string): Answer {
  return { status, body: { success: false, error: { code, message } } };
}
