/**
 * The bundled worker's HTTP API, compatible with SemiLayer's (REST reference:
 * https://semilayer.dev/reference/api; ingest: https://semilayer.dev/ingest/webhook), on plain
 * node:http:
 *
 * - `POST /v1/ingest/:lens`  `{ mode, changes? }` → 202 `{ jobId, status, lens, mode, changesBuffered }`
 * - `GET  /v1/jobs/:jobId`   → JobView
 * - `GET  /v1/status`        → `{ lenses: LensWorkerStatus[] }`; `GET /v1/status/:lens` → one of them
 * - `POST /v1/search/:lens`  `{ query, limit=10, minScore=0, mode='semantic', exact=false }`
 * - `POST /v1/similar/:lens` `{ id, limit=10, minScore=0 }`
 * - `POST /v1/query/:lens`   `{ where?, orderBy?, limit=100 (capped at 1,000), offset?, cursor?, select? }`
 *   → `{ rows, meta: { lens, total, nextCursor, count, durationMs } }`; lenses with `rules: { query: true }` only (else 403)
 *   → `{ results: [{ id, sourceRowId, content, metadata, score }], meta: { lens, query, mode, count, durationMs } }`
 * - `GET  /v1/dlq/:lens`, `POST /v1/dlq/:lens` `{ action: replay|drop, ids? }`
 * - `GET  /v1/openapi.json`  → this API's OpenAPI 3.1 document (src/worker/openapi.json), no key needed
 *
 * Every answer is JSON; every error is `{ "error": "..." }`. Checks run in this order: route
 * (404), method (405), key (401), scope (403), lens (404), body size (413), body (400 / 413 for
 * more than 10,000 changes), then the engine (429 queue full, 502 embedding provider unavailable or misconfigured, 500).
 *
 * Auth is `Authorization: Bearer KEY`. Keys are scoped: `ingest` keys may ingest, read jobs and
 * status; `search` keys may search, find similar, query and read status; `admin` keys may do all.
 * With no keys configured auth is OFF and every request may do everything: for local
 * development only. The worker refuses to start such an API, or one with a well-known key
 * (WELL_KNOWN_KEYS), on an address other than loopback (checkExposure).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { ConfigError, EmbedError, QueueFullError, describeError, isRecordRejection } from '../errors.js';
import { parseQuery, QueryInputError, type QueryAnswer } from './query.js';
import { parseListen } from '../http.js';
import type { Logger } from '../types.js';
import openapiDocument from './openapi.json' with { type: 'json' };
import type { IngestMode, SearchHit, SearchMode, WorkerEngine } from './types.js';

export type KeyScope = 'ingest' | 'search' | 'admin';

export interface WorkerHandlerOptions {
  engine: WorkerEngine;
  /** Accepted API keys and what each may do. Empty: auth is off (local development only). */
  keys: Array<{ key: string; scope: KeyScope }>;
  /** Largest accepted request body in bytes; larger → 413 without reading it all. Default 32 MiB. */
  maxBodyBytes?: number;
  /**
   * Called first for every request, so the daemon can serve `/metrics`, `/healthz`, `/readyz`
   * on the same port; returns true when it answered. Those routes are not authenticated here.
   */
  extra?: (req: IncomingMessage, res: ServerResponse) => boolean;
  /** Where unexpected engine errors (the 500s) are logged, with their stack. */
  log?: Logger;
}

export const DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024;
export const MAX_CHANGES = 10_000;
export const MAX_ID_LENGTH = 1024;

const INGEST_MODES: readonly IngestMode[] = ['records', 'full', 'incremental'];
const SEARCH_MODES: readonly SearchMode[] = ['semantic', 'keyword', 'hybrid'];

/** What a route does, for scope checks: `status` is open to every scope, `docs` to anyone (no key). */
type Operation = 'ingest' | 'jobs' | 'status' | 'search' | 'query' | 'dlq' | 'docs';

/** Query reads rows of the table, as search reads records: search and admin keys may. */
const ALLOWED: Record<KeyScope, readonly Operation[]> = {
  ingest: ['ingest', 'jobs', 'status', 'dlq'],
  search: ['search', 'query', 'status'],
  admin: ['ingest', 'jobs', 'status', 'search', 'query', 'dlq'],
};

interface Route {
  method: 'GET' | 'POST';
  operation: Operation;
  /** The lens (or job id, for `jobs`) from the path, decoded; undefined for `/v1/status`. */
  param?: string;
  /** The handler that answers once auth, scope and lens have passed. */
  run: (ctx: Context) => Promise<void> | void;
}

interface Context {
  req: IncomingMessage;
  res: ServerResponse;
  engine: WorkerEngine;
  param: string;
  maxBodyBytes: number;
  log?: Logger;
}

/** A 4xx answer raised while reading or validating a request. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/**
 * The embedding id SemiLayer shows as a search result's `id`: `emb_` and 16 hex digits of a
 * sha256 of the lens and the source row id, so it is stable across restarts and re-indexing.
 */
export function embeddingId(lens: string, rowId: string): string {
  return 'emb_' + createHash('sha256').update(lens).update('\0').update(rowId).digest('hex').slice(0, 16);
}

/**
 * Builds the worker's request handler (see the module comment for routes and status codes).
 * The handler never throws: unexpected failures answer 500 with a one-line message.
 */
export function createWorkerHandler(options: WorkerHandlerOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const { engine, extra, log } = options;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const keys = options.keys.map(({ key, scope }) => {
    if (key.length === 0) throw new Error('worker API keys must not be empty');
    return { digest: sha256(key), scope };
  });

  /** The scope of the request's bearer key; undefined when missing or unknown. */
  function scopeOf(req: IncomingMessage): KeyScope | undefined {
    if (keys.length === 0) return 'admin';
    const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (!match) return undefined;
    const presented = sha256(match[1]);
    let scope: KeyScope | undefined;
    // Compare against every key, without stopping early, so timing says nothing about which matched.
    for (const key of keys) {
      if (timingSafeEqual(presented, key.digest) && scope === undefined) scope = key.scope;
    }
    return scope;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (extra?.(req, res)) return;
    const method = req.method ?? 'GET';
    const path = (req.url ?? '/').split('?')[0];
    const found = route(path);
    if (found === undefined) {
      return json(res, 404, { error: `No such endpoint: ${method} ${truncate(path, 200)}` });
    }
    if ('badPath' in found) return json(res, 404, { error: found.badPath });
    const candidates = found.filter((r) => r.method === method);
    if (candidates.length === 0) {
      const allow = [...new Set(found.map((r) => r.method))].join(', ');
      res.setHeader('allow', allow);
      return json(res, 405, { error: `Method ${method} is not allowed here; use ${allow}` });
    }
    const r = candidates[0];

    if (r.operation === 'docs') return r.run({ req, res, engine, param: '', maxBodyBytes, log });
    const scope = scopeOf(req);
    if (scope === undefined) {
      res.setHeader('www-authenticate', 'Bearer');
      return json(res, 401, { error: 'Missing or invalid API key' });
    }
    if (!ALLOWED[scope].includes(r.operation)) {
      return json(res, 403, { error: 'Key does not have permission for this operation' });
    }
    if (r.operation !== 'jobs' && r.param !== undefined && !engine.lenses().includes(r.param)) {
      return json(res, 404, { error: `Lens not found: ${truncate(r.param, 200)}` });
    }
    await r.run({ req, res, engine, param: r.param ?? '', maxBodyBytes, log });
  }

  return (req, res) => {
    req.on('error', () => undefined); // a client that goes away mid-body is not our error
    handle(req, res).catch((err: unknown) => sendError(res, err, log));
  };
}

/** API keys published in this repository (quick start defaults, manifest placeholders): anyone may know them. */
export const WELL_KNOWN_KEYS: readonly string[] = ['ik_local_ingest', 'sk_local_search', 'ik_change_me', 'sk_change_me'];

/** Whether a listen host is a loopback address: 127.0.0.0/8, ::1 (also IPv4-mapped) or localhost. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase().replace(/^::ffff:/, '');
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}

/**
 * Refuses (ConfigError, exit code 2) an API reachable beyond loopback that anyone could use:
 * one with no keys (auth off) or with a well-known key. Loopback keeps the local demo working.
 */
export function checkExposure(listen: string, keys: ReadonlyArray<{ key: string; scope: KeyScope }>): void {
  const { host } = parseListen(listen);
  if (isLoopbackHost(host)) return;
  const known = keys.filter((k) => WELL_KNOWN_KEYS.includes(k.key));
  if (keys.length > 0 && known.length === 0) return;
  const why =
    keys.length === 0
      ? 'has no keys, so anyone who can reach it may ingest, search and drop dead letters'
      : `uses the well-known ${known.map((k) => `${k.scope} key "${k.key}"`).join(' and ')}, which anyone may know`;
  throw new ConfigError('worker API', [
    {
      path: 'worker.keys',
      message:
        `the worker API listens on ${listen} (not loopback) and ${why}. Set keys of your own: with the bundled ` +
        `quick start pass INGEST_KEY and SEARCH_KEY (docker run -e INGEST_KEY=$(openssl rand -hex 24) -e SEARCH_KEY=$(openssl rand -hex 24) ...), ` +
        `otherwise list them under worker.keys; or listen on 127.0.0.1 (TRIBUTARY_LISTEN=127.0.0.1:8080).`,
    },
  ]);
}

/**
 * Starts the worker API on `listen` (`host:port`, e.g. `127.0.0.1:7420`, `[::1]:0`) and
 * resolves once it is listening.
 */
export async function startWorkerServer(listen: string, handlerOptions: WorkerHandlerOptions): Promise<Server> {
  const server = createServer(createWorkerHandler(handlerOptions));
  const { host, port } = parseListen(listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

// ---------------------------------------------------------------------------------------------
// Routing

/**
 * Every route the worker answers. A path is `/v1/<name>` or `/v1/<name>/:param`; the parameter
 * (a lens, or a job id for `jobs`) is decoded. The OpenAPI document (openapi.json) lists exactly
 * these (test/openapi.test.ts checks both ways).
 */
export const ROUTES: ReadonlyArray<Readonly<{ method: 'GET' | 'POST'; path: string; operation: Operation; run: (ctx: Context) => Promise<void> | void }>> = [
  { method: 'POST', path: '/v1/ingest/:lens', operation: 'ingest', run: ingest },
  { method: 'GET', path: '/v1/jobs/:jobId', operation: 'jobs', run: job },
  { method: 'GET', path: '/v1/status', operation: 'status', run: statusAll },
  { method: 'GET', path: '/v1/status/:lens', operation: 'status', run: statusOne },
  { method: 'POST', path: '/v1/search/:lens', operation: 'search', run: search },
  { method: 'POST', path: '/v1/similar/:lens', operation: 'search', run: similar },
  { method: 'POST', path: '/v1/query/:lens', operation: 'query', run: query },
  { method: 'GET', path: '/v1/dlq/:lens', operation: 'dlq', run: dlqList },
  { method: 'POST', path: '/v1/dlq/:lens', operation: 'dlq', run: dlqAct },
  { method: 'GET', path: '/v1/openapi.json', operation: 'docs', run: openapi },
];

/**
 * The routes at `path` (one per method), `{ badPath }` for a path that names a route but has
 * an undecodable parameter, or undefined for no such endpoint.
 */
function route(path: string): Route[] | { badPath: string } | undefined {
  const parts = path.replace(/\/+$/, '').split('/').slice(1); // '/v1/ingest/x' → ['v1', 'ingest', 'x']
  if (parts[0] !== 'v1' || parts.length < 2 || parts.length > 3) return undefined;
  let param: string | undefined;
  if (parts.length === 3) {
    try {
      param = decodeURIComponent(parts[2]);
    } catch {
      return { badPath: `Malformed path parameter: ${truncate(parts[2], 200)}` };
    }
    if (param === '') return undefined;
  }
  const prefix = `/v1/${parts[1]}`;
  const found = ROUTES.filter((r) => (param === undefined ? r.path === prefix : r.path.startsWith(prefix + '/:')));
  return found.length === 0 ? undefined : found.map((r) => ({ method: r.method, operation: r.operation, param, run: r.run }));
}

// ---------------------------------------------------------------------------------------------
// Route handlers

async function ingest(ctx: Context): Promise<void> {
  const body = await readJsonObject(ctx.req, ctx.maxBodyBytes, ['mode', 'changes']);
  const mode = body.mode;
  if (!INGEST_MODES.includes(mode as IngestMode)) {
    throw badRequest('mode', '"records", "full" or "incremental"', mode);
  }
  const request: { mode: IngestMode; changes?: Array<{ id: string; action: 'upsert' | 'delete' }> } = {
    mode: mode as IngestMode,
  };
  if (mode === 'records') {
    request.changes = validateChanges(body.changes);
  } else if (body.changes !== undefined) {
    throw new HttpError(400, `changes: not allowed with mode "${mode}"; send changes with mode "records"`);
  }
  const accepted = await ctx.engine.submit(ctx.param, request);
  json(ctx.res, 202, {
    jobId: accepted.jobId,
    status: accepted.status,
    lens: accepted.lens,
    mode: accepted.mode,
    changesBuffered: accepted.changesBuffered,
  });
}

/** `GET /v1/dlq/:lens` → `{ deadLetters: [...] }` */
async function dlqList(ctx: Context): Promise<void> {
  json(ctx.res, 200, { deadLetters: await ctx.engine.deadLetters(ctx.param) });
}

/** `POST /v1/dlq/:lens` `{ action: "replay" | "drop", ids? }` → `{ action, count }` */
async function dlqAct(ctx: Context): Promise<void> {
  const body = await readJsonObject(ctx.req, ctx.maxBodyBytes, ['action', 'ids']);
  if (body.action !== 'replay' && body.action !== 'drop') throw badRequest('action', '"replay" or "drop"', body.action);
  if (body.ids !== undefined && (!Array.isArray(body.ids) || body.ids.some((id) => typeof id !== 'string'))) {
    throw badRequest('ids', 'an array of dead-letter ids', body.ids);
  }
  const ids = body.ids as string[] | undefined;
  const count = body.action === 'replay' ? await ctx.engine.replayDeadLetters(ctx.param, ids) : await ctx.engine.dropDeadLetters(ctx.param, ids);
  json(ctx.res, 200, { action: body.action, count });
}

/** `GET /v1/openapi.json`: this API's OpenAPI document, without auth. */
function openapi(ctx: Context): void {
  json(ctx.res, 200, openapiDocument);
}

function job(ctx: Context): void {
  const view = ctx.engine.job(ctx.param);
  if (view === undefined) return json(ctx.res, 404, { error: `Job not found: ${truncate(ctx.param, 200)}` });
  json(ctx.res, 200, view);
}

function statusAll(ctx: Context): void {
  json(ctx.res, 200, { lenses: ctx.engine.status() });
}

function statusOne(ctx: Context): void {
  const status = ctx.engine.status(ctx.param).find((s) => s.lens === ctx.param);
  if (status === undefined) return json(ctx.res, 404, { error: `Lens not found: ${truncate(ctx.param, 200)}` });
  json(ctx.res, 200, status);
}

async function search(ctx: Context): Promise<void> {
  const body = await readJsonObject(ctx.req, ctx.maxBodyBytes, ['query', 'limit', 'minScore', 'mode', 'exact']);
  if (typeof body.query !== 'string' || body.query.trim() === '') throw badRequest('query', 'a non-empty string', body.query);
  const limit = validateLimit(body.limit);
  const minScore = validateMinScore(body.minScore);
  const mode = body.mode ?? 'semantic';
  if (!SEARCH_MODES.includes(mode as SearchMode)) throw badRequest('mode', '"semantic", "keyword" or "hybrid"', mode);
  if (body.exact !== undefined && typeof body.exact !== 'boolean') throw badRequest('exact', 'true or false', body.exact);

  const started = performance.now();
  let hits: SearchHit[];
  try {
    hits = await ctx.engine.search(ctx.param, { query: body.query, limit, minScore, mode: mode as SearchMode, ...(body.exact ? { exact: true } : {}) });
  } catch (err) {
    if (err instanceof EmbedError && err.kind !== 'input') {
      throw new HttpError(502, `Embedding provider error: ${oneLine(err.message)}`);
    }
    if (err instanceof EmbedError && err.kind === 'input') {
      throw new HttpError(400, `query: rejected by the embedding provider: ${oneLine(err.message)}`);
    }
    throw err;
  }
  sendResults(ctx, hits, body.query, mode as SearchMode, started);
}

async function similar(ctx: Context): Promise<void> {
  const body = await readJsonObject(ctx.req, ctx.maxBodyBytes, ['id', 'limit', 'minScore']);
  const id = body.id;
  if (typeof id !== 'string' || id === '') throw badRequest('id', 'a non-empty string', id);
  if (id.length > MAX_ID_LENGTH) throw new HttpError(400, `id: longer than ${MAX_ID_LENGTH} characters (${id.length})`);
  const limit = validateLimit(body.limit);
  const minScore = validateMinScore(body.minScore);

  const started = performance.now();
  const hits = await ctx.engine.similar(ctx.param, { id, limit, minScore });
  if (hits === undefined) {
    return json(ctx.res, 404, { error: `Record not indexed in lens ${ctx.param}: ${truncate(id, 200)}` });
  }
  sendResults(ctx, hits, id, 'semantic', started);
}

/** `POST /v1/query/:lens`: 403 unless the lens has `rules: { query: true }`; fields checked before any read. */
async function query(ctx: Context): Promise<void> {
  const fields = ctx.engine.queryFields(ctx.param);
  if (!fields) throw new HttpError(403, `Lens ${ctx.param} does not allow queries; set rules: { query: true } on it`);
  const body = await readJsonObject(ctx.req, ctx.maxBodyBytes, ['where', 'orderBy', 'limit', 'offset', 'cursor', 'select']);
  const started = performance.now();
  let answer: QueryAnswer;
  try {
    answer = await ctx.engine.query(ctx.param, parseQuery(body, fields));
  } catch (err) {
    if (err instanceof QueryInputError) throw new HttpError(400, err.message);
    if (isRecordRejection(err)) throw new HttpError(400, `A where or cursor value does not fit its column: ${oneLine(describeError(err))}`);
    throw err;
  }
  const meta = { lens: ctx.param, total: answer.total, nextCursor: answer.nextCursor, count: answer.rows.length, durationMs: Math.round(performance.now() - started) };
  json(ctx.res, 200, { rows: answer.rows, meta });
}

/** Answers 200 with seed 002's search response shape. */
function sendResults(ctx: Context, hits: SearchHit[], query: string, mode: SearchMode, started: number): void {
  const results = hits.map((hit) => ({
    id: embeddingId(ctx.param, hit.id),
    sourceRowId: hit.id,
    content: hit.content,
    metadata: hit.metadata,
    score: hit.score,
  }));
  json(ctx.res, 200, {
    results,
    meta: { lens: ctx.param, query, mode, count: results.length, durationMs: Math.round(performance.now() - started) },
  });
}

// ---------------------------------------------------------------------------------------------
// Validation

function validateChanges(changes: unknown): Array<{ id: string; action: 'upsert' | 'delete' }> {
  if (changes === undefined) throw new HttpError(400, 'changes: required with mode "records"');
  if (!Array.isArray(changes)) throw badRequest('changes', 'a non-empty array', changes);
  if (changes.length === 0) throw new HttpError(400, 'changes: expected a non-empty array, got an empty array');
  if (changes.length > MAX_CHANGES) {
    throw new HttpError(413, `changes: at most ${MAX_CHANGES} per request, got ${changes.length}; split the batch`);
  }
  return changes.map((change: unknown, i) => {
    const at = `changes[${i}]`;
    if (change === null || typeof change !== 'object' || Array.isArray(change)) {
      throw badRequest(at, 'an object with id and action', change);
    }
    const { id, action } = change as { id?: unknown; action?: unknown };
    if (typeof id !== 'string' || id === '') throw badRequest(`${at}.id`, 'a non-empty string', id);
    if (id.length > MAX_ID_LENGTH) throw new HttpError(400, `${at}.id: longer than ${MAX_ID_LENGTH} characters (${id.length})`);
    if (action !== 'upsert' && action !== 'delete') throw badRequest(`${at}.action`, '"upsert" or "delete"', action);
    return { id, action };
  });
}

function validateLimit(limit: unknown): number {
  if (limit === undefined) return 10;
  if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1 || limit > 100) {
    throw badRequest('limit', 'an integer from 1 to 100', limit);
  }
  return limit;
}

function validateMinScore(minScore: unknown): number {
  if (minScore === undefined) return 0;
  if (typeof minScore !== 'number' || !Number.isFinite(minScore) || minScore < 0 || minScore > 1) {
    throw badRequest('minScore', 'a number from 0 to 1', minScore);
  }
  return minScore;
}

/** `field: required, expected X` or `field: expected X, got Y`. */
function badRequest(field: string, expected: string, got: unknown): HttpError {
  if (got === undefined) return new HttpError(400, `${field}: required, expected ${expected}`);
  return new HttpError(400, `${field}: expected ${expected}, got ${describe(got)}`);
}

/** A short rendering of a JSON value for error messages. */
function describe(value: unknown): string {
  if (typeof value === 'string') return value === '' ? 'an empty string' : truncate(JSON.stringify(value), 80);
  if (Array.isArray(value)) return 'an array';
  if (value === null) return 'null';
  if (typeof value === 'object') return 'an object';
  return String(value);
}

// ---------------------------------------------------------------------------------------------
// Bodies and answers

/**
 * Reads the body (at most `maxBytes`, else 413 before or as soon as it is exceeded) and parses
 * it as a JSON object with only `allowedKeys`. The Content-Type is not checked.
 */
async function readJsonObject(req: IncomingMessage, maxBytes: number, allowedKeys: string[]): Promise<Record<string, unknown>> {
  const text = await readBody(req, maxBytes);
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new HttpError(400, text.trim() === '' ? 'Request body is empty; expected a JSON object' : 'Request body must be valid JSON');
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new HttpError(400, `Request body must be a JSON object, got ${describe(body)}`);
  }
  for (const key of Object.keys(body)) {
    if (!allowedKeys.includes(key)) {
      throw new HttpError(400, `${truncate(key, 80)}: unknown field; expected ${allowedKeys.join(', ')}`);
    }
  }
  return body as Record<string, unknown>;
}

function readBody(req: IncomingMessage, maxBytes: number): Promise<string> {
  const tooLarge = () =>
    new HttpError(413, `Request body too large: the limit is ${maxBytes} bytes`);
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > maxBytes) {
        // Stop keeping data: the 413 closes the connection and nothing more is buffered.
        req.off('data', onData);
        req.off('end', onEnd);
        chunks.length = 0;
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => resolve(Buffer.concat(chunks).toString('utf8'));
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', reject);
  });
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  // Answered before reading a body the client is still sending (401, 403, 404, 413…): close the
  // connection after the answer rather than read and discard the rest of it.
  const req = res.req;
  const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
  if (hasBody && !req.complete) headers = { ...headers, connection: 'close' };
  res.writeHead(status, { ...headers, 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/** Maps a thrown value to its answer: 4xx as raised, 429 for a full queue, else 500 (logged). */
function sendError(res: ServerResponse, err: unknown, log: Logger | undefined): void {
  if (err instanceof HttpError) return json(res, err.status, { error: err.message }, err.headers);
  if (err instanceof QueueFullError) {
    const seconds = Math.max(1, Math.ceil(err.retryAfterSeconds));
    return json(res, 429, { error: oneLine(err.message) }, { 'retry-after': String(seconds) });
  }
  log?.error({ err }, 'worker API request failed');
  json(res, 500, { error: `Internal error: ${oneLine(describeError(err))}` });
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

function oneLine(message: string): string {
  return truncate(message.split('\n')[0], 300);
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}…`;
}
