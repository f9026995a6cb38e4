/**
 * A loopback SemiLayer ingest API for tests and benchmarks: a real HTTP server on 127.0.0.1
 * (random free port) that speaks `POST /v1/ingest/:lens` as the vendor docs describe it
 * (seeds 000 and 002), records what it receives, and can be told to answer anything else.
 *
 * Default behaviour, in order:
 * - any other route → 404 `{ "error": "Not found" }`
 * - missing or unknown `Authorization: Bearer KEY` → 401 `{ "error": "Missing or invalid API key" }`
 * - a lens outside `options.lenses` (when given) → 404 `{ "error": "Lens not found: NAME" }`
 * - body over 32 MiB → 413; bad JSON, bad mode, missing/invalid changes, more than 10,000
 *   changes, a bad action or a non-string id → 400 `{ "error": "..." }` naming the field
 * - otherwise 202 `{ jobId, status, lens, mode, changesBuffered }`. A job stays pending for
 *   `jobMs` (default 50); a request for the same lens while it is pending merges into it
 *   (`deduplicated`, same jobId, `changesBuffered` counts the whole job).
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { Action, RecordChange } from '../../src/types.js';
import { send, serveLoopback } from './loopback.js';

const MAX_CHANGES = 10_000;
const MAX_BODY_BYTES = 32 * 1024 * 1024;
const MODES = ['incremental', 'full', 'records'];
/** Stands for a body that did not parse as JSON. */
const INVALID_JSON = Symbol('invalid JSON');

export interface SemilayerServerOptions {
  /** Accepted bearer keys (default `['ik_test']`). */
  keys?: string[];
  /** Known lenses; any other lens gets 404. Default: every lens is accepted. */
  lenses?: string[];
  /** Keep every accepted change for `received`/`lastAction` (default true); false only counts them. */
  recordChanges?: boolean;
  /** How long a job stays pending and absorbs later requests, ms (default 50). */
  jobMs?: number;
}

/** One request as it arrived, whatever the answer was. */
export interface IngestRequest {
  /** The decoded lens name from the path ('' for requests outside /v1/ingest/:lens). */
  lens: string;
  /** `mode` from the body, when the body had one. */
  mode: string | undefined;
  /** The body's changes, when it had an array of them and `recordChanges` is on. */
  changes?: RecordChange[];
  method: string;
  /** The raw request target, e.g. `/v1/ingest/my%20lens`. */
  path: string;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body (undefined when it was not JSON). */
  body: unknown;
  /** ms since the epoch. */
  receivedAt: number;
  /** The status the server answered with (set once it answered). */
  status?: number;
}

/** What `respondWith` may answer instead of the default behaviour. */
export interface FakeResponse {
  status: number;
  headers?: Record<string, string>;
  /** A string is sent as is; anything else as JSON; undefined sends no body. */
  body?: unknown;
}

export type Responder = (req: IngestRequest) => FakeResponse | undefined | Promise<FakeResponse | undefined>;

export interface SemilayerServer {
  /** `http://127.0.0.1:PORT`: what a sink's `url` should be. */
  url: string;
  port: number;
  /** Every request, in arrival order. */
  requests: IngestRequest[];
  /** Every accepted change of `lens`, in arrival order (needs `recordChanges`). */
  received(lens: string): RecordChange[];
  /** The last accepted action of each id of `lens` (needs `recordChanges`). */
  lastAction(lens: string): Map<string, Action>;
  /** How many changes of `lens` were accepted (always counted). */
  counts(lens: string): number;
  /** Answer requests with `fn`; returning undefined falls back to the default behaviour. */
  respondWith(fn: Responder | undefined): void;
  /** Resolves once `predicate()` is true; rejects after `timeoutMs` (default 5000). */
  waitFor(predicate: () => boolean, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

/** Starts a loopback SemiLayer ingest server. */
export async function startSemilayerServer(options: SemilayerServerOptions = {}): Promise<SemilayerServer> {
  const keys = new Set(options.keys ?? ['ik_test']);
  const lenses = options.lenses ? new Set(options.lenses) : undefined;
  const recordChanges = options.recordChanges ?? true;
  const jobMs = options.jobMs ?? 50;

  const requests: IngestRequest[] = [];
  const changesByLens = new Map<string, RecordChange[]>();
  const countByLens = new Map<string, number>();
  const pendingJobs = new Map<string, { jobId: string; until: number; buffered: number }>();
  let jobCounter = 0;
  let responder: Responder | undefined;

  /** The default behaviour: validate, record, answer 202. */
  function ingest(req: IngestRequest, body: unknown, rawLength: number): FakeResponse {
    const prefix = '/v1/ingest/';
    const path = req.path.split('?')[0];
    if (req.method !== 'POST' || !path.startsWith(prefix) || path.length === prefix.length || path.includes('/', prefix.length)) {
      return error(404, 'Not found');
    }
    const auth = req.headers.authorization ?? '';
    if (!auth.startsWith('Bearer ') || !keys.has(auth.slice('Bearer '.length))) {
      return error(401, 'Missing or invalid API key');
    }
    if (lenses && !lenses.has(req.lens)) return error(404, `Lens not found: ${req.lens}`);
    if (rawLength > MAX_BODY_BYTES) return error(413, 'Request body too large');
    if (body === INVALID_JSON) return error(400, 'Request body must be valid JSON');
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      return error(400, 'Request body must be a JSON object');
    }
    const { mode, changes } = body as { mode?: unknown; changes?: unknown };
    if (typeof mode !== 'string' || !MODES.includes(mode)) {
      return error(400, 'mode must be one of: incremental, full, records');
    }
    let accepted = 0;
    if (mode === 'records') {
      if (changes === undefined) return error(400, 'changes is required for mode "records"');
      if (!Array.isArray(changes)) return error(400, 'changes must be an array');
      if (changes.length > MAX_CHANGES) {
        return error(400, `changes must contain at most ${MAX_CHANGES} entries (got ${changes.length})`);
      }
      for (let i = 0; i < changes.length; i++) {
        const c = changes[i] as { id?: unknown; action?: unknown } | null;
        if (c === null || typeof c !== 'object') return error(400, `changes[${i}] must be an object`);
        if (typeof c.id !== 'string') return error(400, `changes[${i}].id must be a string`);
        if (c.action !== 'upsert' && c.action !== 'delete') {
          return error(400, `changes[${i}].action must be "upsert" or "delete"`);
        }
      }
      accepted = changes.length;
      countByLens.set(req.lens, (countByLens.get(req.lens) ?? 0) + accepted);
      if (recordChanges) {
        let list = changesByLens.get(req.lens);
        if (!list) changesByLens.set(req.lens, (list = []));
        for (const c of changes as RecordChange[]) list.push({ id: c.id, action: c.action });
      }
    }

    const now = Date.now();
    let job = pendingJobs.get(req.lens);
    let status = 'deduplicated';
    if (!job || job.until <= now) {
      job = { jobId: `j_${++jobCounter}`, until: now + jobMs, buffered: 0 };
      pendingJobs.set(req.lens, job);
      status = 'queued';
    }
    job.buffered += accepted;
    return {
      status: 202,
      body: { jobId: job.jobId, status, lens: req.lens, mode, changesBuffered: job.buffered },
    };
  }

  async function handle(raw: Buffer, method: string, url: string, headers: IncomingHttpHeaders, res: ServerResponse) {
    let body: unknown;
    try {
      body = raw.length === 0 ? undefined : JSON.parse(raw.toString('utf8'));
    } catch {
      body = INVALID_JSON;
    }
    const prefix = '/v1/ingest/';
    const path = url.split('?')[0];
    let lens = '';
    if (path.startsWith(prefix)) {
      try {
        lens = decodeURIComponent(path.slice(prefix.length));
      } catch {
        lens = path.slice(prefix.length);
      }
    }
    const changes = (body as { changes?: unknown } | undefined)?.changes;
    const mode = (body as { mode?: unknown } | undefined)?.mode;
    const req: IngestRequest = {
      lens,
      mode: typeof mode === 'string' ? mode : undefined,
      changes: recordChanges && Array.isArray(changes) ? (changes as RecordChange[]) : undefined,
      method,
      path: url,
      headers,
      body: recordChanges && body !== INVALID_JSON ? body : undefined,
      receivedAt: Date.now(),
    };
    requests.push(req);

    const answer = (responder ? await responder(req) : undefined) ?? ingest(req, body, raw.length);
    req.status = answer.status;
    send(res, answer);
  }

  const server = await serveLoopback(handle, (err) => error(500, `test server failure: ${String(err)}`));
  const port = server.port;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    received: (lens) => changesByLens.get(lens) ?? [],
    lastAction(lens) {
      const last = new Map<string, Action>();
      for (const c of changesByLens.get(lens) ?? []) last.set(c.id, c.action);
      return last;
    },
    counts: (lens) => countByLens.get(lens) ?? 0,
    respondWith(fn) {
      responder = fn;
    },
    async waitFor(predicate, timeoutMs = 5000) {
      const deadline = Date.now() + timeoutMs;
      while (!predicate()) {
        if (Date.now() > deadline) throw new Error(`semilayer test server: condition not met within ${timeoutMs} ms`);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    },
    close: server.close,
  };
}

function error(status: number, message: string): FakeResponse {
  return { status, body: { error: message } };
}

