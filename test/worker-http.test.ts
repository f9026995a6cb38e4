/**
 * The worker's HTTP contract (src/worker/http.ts) against a real server on 127.0.0.1, with a
 * small in-test engine that records what it was asked and answers canned results.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, EmbedError, QueueFullError, RecordRejectedError } from '../src/errors.js';
import type { QueryAnswer, QueryRequest } from '../src/worker/query.js';
import { checkExposure, embeddingId, startWorkerServer, type WorkerHandlerOptions } from '../src/worker/http.js';
import { runCli } from './helpers/daemon.js';
import type { IngestMode, JobView, LensWorkerStatus, SearchHit, SearchMode, WorkerEngine } from '../src/worker/types.js';

const INGEST_KEY = 'ik_test_ingest_9f8e7d6c5b4a';
const SEARCH_KEY = 'sk_test_search_1a2b3c4d5e6f';
const ADMIN_KEY = 'ak_test_admin_0123456789ab';
const ALL_KEYS = [INGEST_KEY, SEARCH_KEY, ADMIN_KEY];

type Change = { id: string; action: 'upsert' | 'delete' };

/** A WorkerEngine that records requests and answers canned data; `fail*` make it throw. */
class FakeEngine implements WorkerEngine {
  submitted: Array<{ lens: string; request: { mode: IngestMode; changes?: Change[] } }> = [];
  searched: Array<{ lens: string; request: { query: string; limit: number; minScore: number; mode: SearchMode } }> = [];
  similarAsked: Array<{ lens: string; request: { id: string; limit: number; minScore: number } }> = [];
  failSubmit?: unknown;
  failSearch?: unknown;
  hits: SearchHit[] = [
    { id: '42', content: 'Lightweight running shoe', metadata: { id: 42, name: 'Air Glide 3', price: 89.99 }, score: 0.94 },
    { id: '[7,"eu"]', content: 'Trail shoe', metadata: { id: 7 }, score: 0.5 },
  ];
  private jobCounter = 0;

  reset(): void {
    this.submitted = [];
    this.searched = [];
    this.similarAsked = [];
    this.failSubmit = undefined;
    this.failSearch = undefined;
    this.queried = [];
    this.failQuery = undefined;
  }

  lenses(): string[] {
    return ['products', 'my lens'];
  }

  async submit(lens: string, request: { mode: IngestMode; changes?: Change[] }) {
    if (this.failSubmit !== undefined) throw this.failSubmit;
    this.submitted.push({ lens, request });
    return { jobId: `j_${++this.jobCounter}`, status: 'queued' as const, lens, mode: request.mode, changesBuffered: request.changes?.length ?? 0, seq: this.jobCounter };
  }

  async indexed(): Promise<boolean> {
    return true;
  }

  job(jobId: string): JobView | undefined {
    if (jobId !== 'j_known') return undefined;
    return { jobId, lens: 'products', mode: 'records', status: 'done', changesBuffered: 2, indexed: 1, deleted: 1, deadLettered: 0, createdAt: '2026-01-01T00:00:00.000Z' };
  }

  status(lens?: string): LensWorkerStatus[] {
    const all: LensWorkerStatus[] = this.lenses().map((name) => ({ lens: name, state: 'idle', pending: 0, rate: 0, indexed: 3, dlq: 0, graphBacklog: 0 }));
    return lens === undefined ? all : all.filter((s) => s.lens === lens);
  }

  async search(lens: string, request: { query: string; limit: number; minScore: number; mode: SearchMode }): Promise<SearchHit[]> {
    if (this.failSearch !== undefined) throw this.failSearch;
    this.searched.push({ lens, request });
    return this.hits;
  }

  queried: Array<{ lens: string; request: QueryRequest }> = [];
  failQuery?: unknown;

  queryFields(lens: string): string[] | undefined {
    return lens === 'products' ? ['id', 'name', 'price'] : undefined;
  }

  async query(lens: string, request: QueryRequest): Promise<QueryAnswer> {
    if (this.failQuery !== undefined) throw this.failQuery;
    this.queried.push({ lens, request });
    return { rows: [{ id: 1, name: 'Air Glide 3', price: '89.99' }], total: 7, nextCursor: 'next' };
  }

  async similar(lens: string, request: { id: string; limit: number; minScore: number }): Promise<SearchHit[] | undefined> {
    this.similarAsked.push({ lens, request });
    if (request.id === 'missing') return undefined;
    return this.hits.slice(1);
  }

  async deadLetters() {
    return [];
  }

  async replayDeadLetters(_lens: string, ids?: string[]) {
    return ids?.length ?? 0;
  }

  async dropDeadLetters(_lens: string, ids?: string[]) {
    return ids?.length ?? 0;
  }
}

const engine = new FakeEngine();
const keys: WorkerHandlerOptions['keys'] = [
  { key: INGEST_KEY, scope: 'ingest' },
  { key: SEARCH_KEY, scope: 'search' },
  { key: ADMIN_KEY, scope: 'admin' },
];

async function start(options: Partial<WorkerHandlerOptions> = {}): Promise<{ server: Server; port: number }> {
  const server = await startWorkerServer('127.0.0.1:0', { engine, keys, ...options });
  after(() => {
    server.closeAllConnections();
    server.close();
  });
  return { server, port: (server.address() as AddressInfo).port };
}

const main = await start({
  extra: (req, res) => {
    if (req.url !== '/metrics') return false;
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('# metrics\n');
    return true;
  },
});
const small = await start({ maxBodyBytes: 1024 });
const open = await start({ keys: [] });

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  body: any;
}

/**
 * One request. `body` objects are sent as JSON, strings as they are. Every answer is checked
 * to be JSON (except the daemon's extra routes) and to contain no API key.
 */
async function call(
  method: string,
  path: string,
  options: { key?: string; body?: unknown; headers?: Record<string, string>; port?: number } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.key !== undefined) headers.authorization = `Bearer ${options.key}`;
  let payload: string | undefined;
  if (options.body !== undefined) {
    payload = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
    headers['content-type'] ??= 'application/json';
  }
  const answer = await new Promise<Answer>((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: options.port ?? main.port, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          body = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
  assertClean(answer);
  return answer;
}

function assertClean(answer: Answer): void {
  for (const key of [...ALL_KEYS, 'not_a_real_key_zzz']) {
    assert.ok(!answer.text.includes(key), `a key was echoed: ${answer.text}`);
    assert.ok(!JSON.stringify(answer.headers).includes(key), 'a key was echoed in a header');
  }
}

/** Asserts a JSON error answer with exactly this status and message. */
function assertError(answer: Answer, status: number, message: string | RegExp): void {
  assert.equal(answer.status, status, answer.text);
  assert.match(String(answer.headers['content-type']), /^application\/json/);
  assert.deepEqual(Object.keys(answer.body), ['error']);
  if (typeof message === 'string') assert.equal(answer.body.error, message);
  else assert.match(answer.body.error, message);
}

// ------------------------------------------------------------------------------------- ingest

test('records ingest answers 202 with the documented shape and passes the changes on', async () => {
  engine.reset();
  const changes = [
    { id: 'p_7712', action: 'upsert' },
    { id: 'p_0451', action: 'delete' },
  ];
  const answer = await call('POST', '/v1/ingest/products', { key: INGEST_KEY, body: { mode: 'records', changes } });
  assert.equal(answer.status, 202);
  assert.equal(answer.headers['content-type'], 'application/json');
  assert.equal(answer.headers.connection, 'keep-alive', 'a body that was read keeps the connection');
  assert.deepEqual(answer.body, { jobId: 'j_1', status: 'queued', lens: 'products', mode: 'records', changesBuffered: 2 });
  assert.deepEqual(engine.submitted, [{ lens: 'products', request: { mode: 'records', changes } }]);
});

test('full and incremental ingest take no changes; admin keys may ingest', async () => {
  engine.reset();
  for (const mode of ['full', 'incremental']) {
    const answer = await call('POST', '/v1/ingest/products', { key: ADMIN_KEY, body: { mode } });
    assert.equal(answer.status, 202);
    assert.deepEqual(Object.keys(answer.body), ['jobId', 'status', 'lens', 'mode', 'changesBuffered']);
    assert.equal(typeof answer.body.jobId, 'string');
    assert.equal(answer.body.mode, mode);
    assert.equal(answer.body.changesBuffered, 0);
  }
  assert.deepEqual(engine.submitted.map((s) => s.request), [{ mode: 'full' }, { mode: 'incremental' }]);
});

test('a wrong or missing Content-Type is tolerated when the body is JSON', async () => {
  engine.reset();
  const body = JSON.stringify({ mode: 'full' });
  assert.equal((await call('POST', '/v1/ingest/products', { key: INGEST_KEY, body, headers: { 'content-type': 'text/plain' } })).status, 202);
  assert.equal((await call('POST', '/v1/ingest/products', { key: INGEST_KEY, body, headers: { 'content-type': 'application/x-www-form-urlencoded' } })).status, 202);
  assert.equal(engine.submitted.length, 2);
});

test('URL-encoded lens names are decoded', async () => {
  engine.reset();
  const answer = await call('POST', '/v1/ingest/my%20lens', { key: INGEST_KEY, body: { mode: 'full' } });
  assert.equal(answer.status, 202);
  assert.equal(answer.body.lens, 'my lens');
  assert.equal(engine.submitted[0].lens, 'my lens');
});

test('ingest bodies are validated with messages that name the field and why', async () => {
  engine.reset();
  const cases: Array<[body: unknown, message: string]> = [
    ['{"mode": "records",', 'Request body must be valid JSON'],
    ['', 'Request body is empty; expected a JSON object'],
    [[{ mode: 'full' }], 'Request body must be a JSON object, got an array'],
    ['"full"', 'Request body must be a JSON object, got "full"'],
    [{}, 'mode: required, expected "records", "full" or "incremental"'],
    [{ mode: 'sync' }, 'mode: expected "records", "full" or "incremental", got "sync"'],
    [{ mode: 7 }, 'mode: expected "records", "full" or "incremental", got 7'],
    [{ mode: 'records' }, 'changes: required with mode "records"'],
    [{ mode: 'records', changes: [] }, 'changes: expected a non-empty array, got an empty array'],
    [{ mode: 'records', changes: { id: '1', action: 'upsert' } }, 'changes: expected a non-empty array, got an object'],
    [{ mode: 'full', changes: [{ id: '1', action: 'upsert' }] }, 'changes: not allowed with mode "full"; send changes with mode "records"'],
    [{ mode: 'incremental', changes: [] }, 'changes: not allowed with mode "incremental"; send changes with mode "records"'],
    [
      {
        mode: 'records',
        changes: [
          { id: 'a', action: 'upsert' },
          { id: 'b', action: 'delete' },
          { id: 'c', action: 'upsert' },
          { id: 'd', action: 'remove' },
          { id: 'e', action: 'nope' },
        ],
      },
      'changes[3].action: expected "upsert" or "delete", got "remove"',
    ],
    [{ mode: 'records', changes: [{ id: 'a' }] }, 'changes[0].action: required, expected "upsert" or "delete"'],
    [{ mode: 'records', changes: [{ id: 'a', action: 'upsert' }, { id: 42, action: 'upsert' }] }, 'changes[1].id: expected a non-empty string, got 42'],
    [{ mode: 'records', changes: [{ id: '', action: 'upsert' }] }, 'changes[0].id: expected a non-empty string, got an empty string'],
    [{ mode: 'records', changes: [{ action: 'upsert' }] }, 'changes[0].id: required, expected a non-empty string'],
    [{ mode: 'records', changes: [{ id: 'x'.repeat(1025), action: 'upsert' }] }, 'changes[0].id: longer than 1024 characters (1025)'],
    [{ mode: 'records', changes: [{ id: 'a', action: 'upsert' }, { id: 'b', action: 'upsert' }, 'c'] }, 'changes[2]: expected an object with id and action, got "c"'],
    [{ mode: 'records', changes: [null] }, 'changes[0]: expected an object with id and action, got null'],
    [{ mode: 'full', force: true }, 'force: unknown field; expected mode, changes'],
  ];
  for (const [body, message] of cases) {
    assertError(await call('POST', '/v1/ingest/products', { key: INGEST_KEY, body }), 400, message);
  }
  assert.equal(engine.submitted.length, 0, 'the engine saw no invalid request');
});

test('an id of exactly 1024 characters is accepted, and extra fields of a change are dropped', async () => {
  engine.reset();
  const id = 'x'.repeat(1024);
  const answer = await call('POST', '/v1/ingest/products', {
    key: INGEST_KEY,
    body: { mode: 'records', changes: [{ id, action: 'upsert', note: 'ignored' }] },
  });
  assert.equal(answer.status, 202);
  assert.deepEqual(engine.submitted[0].request.changes, [{ id, action: 'upsert' }]);
});

test('10,000 changes are accepted, 10,001 answer 413', async () => {
  engine.reset();
  const changes = (n: number) => Array.from({ length: n }, (_, i) => ({ id: String(i), action: 'upsert' }));
  const ok = await call('POST', '/v1/ingest/products', { key: INGEST_KEY, body: { mode: 'records', changes: changes(10_000) } });
  assert.equal(ok.status, 202);
  assert.equal(ok.body.changesBuffered, 10_000);
  const tooMany = await call('POST', '/v1/ingest/products', { key: INGEST_KEY, body: { mode: 'records', changes: changes(10_001) } });
  assertError(tooMany, 413, 'changes: at most 10000 per request, got 10001; split the batch');
  assert.equal(engine.submitted.length, 1);
});

test('a body over maxBodyBytes answers 413 by its Content-Length; one of exactly the limit is read', async () => {
  engine.reset();
  const exact = JSON.stringify({ mode: 'full' }).padEnd(1024, ' ');
  assert.equal(Buffer.byteLength(exact), 1024);
  assert.equal((await call('POST', '/v1/ingest/products', { key: INGEST_KEY, body: exact, port: small.port })).status, 202);
  const over = exact + ' ';
  assertError(await call('POST', '/v1/ingest/products', { key: INGEST_KEY, body: over, port: small.port }), 413, 'Request body too large: the limit is 1024 bytes');
  assert.equal(engine.submitted.length, 1);
});

test('a chunked body answers 413 as soon as it passes the limit, without waiting for the rest', { timeout: 5000 }, async () => {
  engine.reset();
  const answer = await new Promise<Answer>((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port: small.port,
        method: 'POST',
        path: '/v1/ingest/products',
        headers: { authorization: `Bearer ${INGEST_KEY}`, 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, body: JSON.parse(text) });
          req.destroy();
        });
      },
    );
    req.on('error', (err) => (req.writableEnded ? undefined : reject(err)));
    // 2 KiB of an endless body: the server must answer without the request ever ending.
    req.write('{"mode":"full","changes":"' + 'x'.repeat(2048));
  });
  assertClean(answer);
  assertError(answer, 413, 'Request body too large: the limit is 1024 bytes');
  assert.equal(answer.headers.connection, 'close');
  assert.equal(engine.submitted.length, 0);
});

test('a full queue answers 429 with Retry-After in whole seconds', async () => {
  engine.reset();
  engine.failSubmit = new QueueFullError('Queue for lens products is full (50000 changes); retry later', 7);
  let answer = await call('POST', '/v1/ingest/products', { key: INGEST_KEY, body: { mode: 'full' } });
  assertError(answer, 429, 'Queue for lens products is full (50000 changes); retry later');
  assert.equal(answer.headers['retry-after'], '7');
  engine.failSubmit = new QueueFullError('full', 0.2);
  answer = await call('POST', '/v1/ingest/products', { key: INGEST_KEY, body: { mode: 'full' } });
  assert.equal(answer.status, 429);
  assert.equal(answer.headers['retry-after'], '1');
  engine.reset();
});

test('other engine errors answer 500 with a one-line message and no stack', async () => {
  engine.reset();
  engine.failSubmit = new Error('disk full\nmore detail');
  const answer = await call('POST', '/v1/ingest/products', { key: INGEST_KEY, body: { mode: 'full' } });
  assertError(answer, 500, 'Internal error: disk full');
  assert.ok(!answer.text.includes('at '), 'no stack trace');
  engine.reset();
});

// ---------------------------------------------------------------------------------- jobs, status

test('GET /v1/jobs/:jobId answers the JobView, 404 for an unknown job', async () => {
  const answer = await call('GET', '/v1/jobs/j_known', { key: INGEST_KEY });
  assert.equal(answer.status, 200);
  assert.deepEqual(answer.body, engine.job('j_known'));
  assertError(await call('GET', '/v1/jobs/j_nope', { key: INGEST_KEY }), 404, 'Job not found: j_nope');
});

test('GET /v1/status lists every lens; /v1/status/:lens answers one', async () => {
  const all = await call('GET', '/v1/status', { key: SEARCH_KEY });
  assert.equal(all.status, 200);
  assert.deepEqual(all.body, { lenses: engine.status() });
  const one = await call('GET', '/v1/status/products', { key: INGEST_KEY });
  assert.equal(one.status, 200);
  assert.deepEqual(one.body, { lens: 'products', state: 'idle', pending: 0, rate: 0, indexed: 3, dlq: 0, graphBacklog: 0 });
  assertError(await call('GET', '/v1/status/nope', { key: ADMIN_KEY }), 404, 'Lens not found: nope');
});

// ----------------------------------------------------------------------------- search, similar

test('search answers the seed 002 shape and applies the defaults', async () => {
  engine.reset();
  const answer = await call('POST', '/v1/search/products', { key: SEARCH_KEY, body: { query: 'lightweight running shoes' } });
  assert.equal(answer.status, 200);
  assert.equal(answer.headers['content-type'], 'application/json');
  assert.deepEqual(engine.searched, [{ lens: 'products', request: { query: 'lightweight running shoes', limit: 10, minScore: 0, mode: 'semantic' } }]);

  assert.deepEqual(Object.keys(answer.body), ['results', 'meta']);
  const { results, meta } = answer.body;
  assert.equal(results.length, 2);
  for (const r of results) assert.deepEqual(Object.keys(r), ['id', 'sourceRowId', 'content', 'metadata', 'score']);
  assert.deepEqual(results[0], {
    id: embeddingId('products', '42'),
    sourceRowId: '42',
    content: 'Lightweight running shoe',
    metadata: { id: 42, name: 'Air Glide 3', price: 89.99 },
    score: 0.94,
  });
  assert.match(results[0].id, /^emb_[0-9a-f]{16}$/);
  assert.equal(results[1].sourceRowId, '[7,"eu"]');
  assert.notEqual(results[0].id, results[1].id);
  assert.notEqual(embeddingId('other', '42'), results[0].id, 'the id depends on the lens');

  assert.deepEqual(Object.keys(meta), ['lens', 'query', 'mode', 'count', 'durationMs']);
  assert.equal(meta.lens, 'products');
  assert.equal(meta.query, 'lightweight running shoes');
  assert.equal(meta.mode, 'semantic');
  assert.equal(meta.count, results.length);
  assert.equal(typeof meta.durationMs, 'number');
  assert.ok(meta.durationMs >= 0);

  // The embedding id is stable across requests.
  const again = await call('POST', '/v1/search/products', { key: SEARCH_KEY, body: { query: 'x' } });
  assert.equal(again.body.results[0].id, results[0].id);
});

test('search passes explicit limit, minScore and mode through; admin keys may search', async () => {
  engine.reset();
  for (const mode of ['semantic', 'keyword', 'hybrid']) {
    const answer = await call('POST', '/v1/search/products', { key: ADMIN_KEY, body: { query: 'shoe', limit: 100, minScore: 1, mode } });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.meta.mode, mode);
  }
  await call('POST', '/v1/search/products', { key: ADMIN_KEY, body: { query: 'shoe', limit: 1, minScore: 0.25 } });
  assert.deepEqual(engine.searched.map((s) => s.request), [
    { query: 'shoe', limit: 100, minScore: 1, mode: 'semantic' },
    { query: 'shoe', limit: 100, minScore: 1, mode: 'keyword' },
    { query: 'shoe', limit: 100, minScore: 1, mode: 'hybrid' },
    { query: 'shoe', limit: 1, minScore: 0.25, mode: 'semantic' },
  ]);
});

test('query: search and admin keys may, ingest keys may not; a lens without rules.query answers 403', async () => {
  engine.reset();
  const body = { where: { name: 'Air Glide 3' }, orderBy: { field: 'price', dir: 'desc' }, limit: 5, select: ['name'] };
  for (const key of [SEARCH_KEY, ADMIN_KEY]) {
    const answer = await call('POST', '/v1/query/products', { key, body });
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.body.rows, [{ id: 1, name: 'Air Glide 3', price: '89.99' }]);
    assert.deepEqual({ ...answer.body.meta, durationMs: 0 }, { lens: 'products', total: 7, nextCursor: 'next', count: 1, durationMs: 0 });
  }
  assert.deepEqual(engine.queried[0].request.query, {
    where: { name: 'Air Glide 3' },
    orderBy: [{ column: 'price', dir: 'desc' }],
    after: undefined,
    offset: 0,
    limit: 5,
  });
  assert.deepEqual(engine.queried[0].request.select, ['name']);
  assertError(await call('POST', '/v1/query/products', { key: INGEST_KEY, body }), 403, 'Key does not have permission for this operation');
  assertError(await call('POST', '/v1/query/products', { key: 'nope', body }), 401, 'Missing or invalid API key');
  assertError(await call('POST', '/v1/query/my%20lens', { key: SEARCH_KEY, body: {} }), 403, 'Lens my lens does not allow queries; set rules: { query: true } on it');
  assertError(await call('POST', '/v1/query/nothing', { key: SEARCH_KEY, body: {} }), 404, 'Lens not found: nothing');
  assert.equal(engine.queried.length, 2);
});

test('query: hostile and malformed bodies answer 400 and never reach the engine; huge limits are capped', async () => {
  engine.reset();
  const cases: Array<[body: unknown, message: RegExp]> = [
    [{ where: { 'name"; DROP TABLE products; --': 'x' } }, /^where: unknown field "name\\"; DROP TABLE products; --"; expected one of id, name, price$/],
    [{ where: { "name') OR 1=1 --": 'x' } }, /^where: unknown field/],
    [{ where: { name: { $ne: 'x' } } }, /^where\.name: expected a string, number, boolean or null/],
    [{ where: { name: ['a'] } }, /^where\.name: expected a string, number, boolean or null/],
    [{ where: [] }, /^where: expected an object/],
    [{ orderBy: { field: 'price; DELETE FROM x' } }, /^orderBy\.field: unknown field/],
    [{ orderBy: { field: 'price', dir: 'DESC; DROP' } }, /^orderBy\.dir: expected "asc" or "desc"/],
    [{ orderBy: [{ field: 'price' }, { field: 'price' }] }, /^orderBy\[1\]\.field: price is already in orderBy/],
    [{ orderBy: { field: 'price', nulls: 'first' } }, /^orderBy: unknown key "nulls"/],
    [{ select: ['name', 'secret'] }, /^select\[1\]: unknown field "secret"/],
    [{ select: [] }, /^select: expected a non-empty array/],
    [{ limit: 0 }, /^limit: expected an integer from 1$/],
    [{ limit: 1.5 }, /^limit: expected an integer/],
    [{ limit: '1000000' }, /^limit: expected an integer/],
    [{ offset: -1 }, /^offset: expected an integer from 0 to 10000/],
    [{ offset: 1e9 }, /^offset: expected an integer from 0 to 10000/],
    [{ cursor: 'garbage!!' }, /^cursor: not a cursor; pass meta.nextCursor/],
    [{ cursor: Buffer.from('{"f":"x","v":[],"id":"1"}').toString('base64url') }, /^cursor: it belongs to another where or orderBy/],
    [{ cursor: Buffer.from('{"f":"x","v":[{}],"id":"1"}').toString('base64url') }, /^cursor: not a cursor/],
    [{ cursor: 'x'.repeat(5000) }, /^cursor: not a cursor/],
    [{ cursor: 5 }, /^cursor: not a cursor/],
    [{ offset: 1, cursor: 'abc' }, /^cursor: use cursor or offset, not both/],
    [{ filter: {} }, /^filter: unknown field; expected where, orderBy, limit, offset, cursor, select$/],
    ['not json', /^Request body must be valid JSON$/],
  ];
  for (const [body, message] of cases) {
    const answer = await call('POST', '/v1/query/products', { key: SEARCH_KEY, body });
    assert.equal(answer.status, 400, JSON.stringify(body));
    assert.match(answer.body.error, message);
  }
  assert.equal(engine.queried.length, 0);
  assert.equal((await call('POST', '/v1/query/products', { key: SEARCH_KEY, body: { limit: 1e12 } })).status, 200);
  assert.equal(engine.queried[0].request.query.limit, 1000);
});

test('query: a value its column refuses answers 400', async () => {
  engine.reset();
  engine.failQuery = new RecordRejectedError('invalid input syntax for type numeric: "cheap"');
  const answer = await call('POST', '/v1/query/products', { key: SEARCH_KEY, body: { where: { price: 'cheap' } } });
  assert.equal(answer.status, 400);
  assert.match(answer.body.error, /^A where or cursor value does not fit its column: invalid input syntax/);
});

test('search with no hits answers an empty list and count 0', async () => {
  engine.reset();
  const saved = engine.hits;
  engine.hits = [];
  const answer = await call('POST', '/v1/search/products', { key: SEARCH_KEY, body: { query: 'nothing' } });
  engine.hits = saved;
  assert.equal(answer.status, 200);
  assert.deepEqual(answer.body.results, []);
  assert.equal(answer.body.meta.count, 0);
});

test('search bodies are validated', async () => {
  engine.reset();
  const cases: Array<[body: unknown, message: string]> = [
    [{}, 'query: required, expected a non-empty string'],
    [{ query: '' }, 'query: expected a non-empty string, got an empty string'],
    [{ query: 5 }, 'query: expected a non-empty string, got 5'],
    [{ query: 'q', limit: 0 }, 'limit: expected an integer from 1 to 100, got 0'],
    [{ query: 'q', limit: 101 }, 'limit: expected an integer from 1 to 100, got 101'],
    [{ query: 'q', limit: 2.5 }, 'limit: expected an integer from 1 to 100, got 2.5'],
    [{ query: 'q', limit: '10' }, 'limit: expected an integer from 1 to 100, got "10"'],
    [{ query: 'q', minScore: 1.5 }, 'minScore: expected a number from 0 to 1, got 1.5'],
    [{ query: 'q', minScore: -0.1 }, 'minScore: expected a number from 0 to 1, got -0.1'],
    [{ query: 'q', minScore: null }, 'minScore: expected a number from 0 to 1, got null'],
    [{ query: 'q', mode: 'fuzzy' }, 'mode: expected "semantic", "keyword" or "hybrid", got "fuzzy"'],
    [{ query: 'q', exact: 'yes' }, 'exact: expected true or false, got "yes"'],
    [{ query: 'q', filter: {} }, 'filter: unknown field; expected query, limit, minScore, mode, exact'],
    ['not json', 'Request body must be valid JSON'],
  ];
  for (const [body, message] of cases) {
    assertError(await call('POST', '/v1/search/products', { key: SEARCH_KEY, body }), 400, message);
  }
  assert.equal(engine.searched.length, 0);
});

test('embedding provider failures during search answer 502 (transient) or 400 (input)', async () => {
  engine.reset();
  engine.failSearch = new EmbedError('OpenAI answered 503 after 5 attempts', 'transient', { status: 503 });
  assertError(await call('POST', '/v1/search/products', { key: SEARCH_KEY, body: { query: 'q' } }), 502, 'Embedding provider error: OpenAI answered 503 after 5 attempts');
  engine.failSearch = new EmbedError('input too long for the model', 'input', { status: 400 });
  assertError(await call('POST', '/v1/search/products', { key: SEARCH_KEY, body: { query: 'q' } }), 400, 'query: rejected by the embedding provider: input too long for the model');
  engine.failSearch = new TypeError('cannot read properties of undefined');
  assertError(await call('POST', '/v1/search/products', { key: SEARCH_KEY, body: { query: 'q' } }), 500, 'Internal error: cannot read properties of undefined');
  engine.reset();
});

test('similar answers the search shape with the id as query and mode semantic, and applies the defaults', async () => {
  engine.reset();
  const answer = await call('POST', '/v1/similar/products', { key: SEARCH_KEY, body: { id: '42' } });
  assert.equal(answer.status, 200);
  assert.deepEqual(engine.similarAsked, [{ lens: 'products', request: { id: '42', limit: 10, minScore: 0 } }]);
  const { results, meta } = answer.body;
  assert.deepEqual(results, [{ id: embeddingId('products', '[7,"eu"]'), sourceRowId: '[7,"eu"]', content: 'Trail shoe', metadata: { id: 7 }, score: 0.5 }]);
  assert.deepEqual(Object.keys(meta), ['lens', 'query', 'mode', 'count', 'durationMs']);
  assert.equal(meta.lens, 'products');
  assert.equal(meta.query, '42');
  assert.equal(meta.mode, 'semantic');
  assert.equal(meta.count, 1);
  assert.equal(typeof meta.durationMs, 'number');

  await call('POST', '/v1/similar/products', { key: SEARCH_KEY, body: { id: '42', limit: 5, minScore: 0.5 } });
  assert.deepEqual(engine.similarAsked[1].request, { id: '42', limit: 5, minScore: 0.5 });
});

test('similar on an id that is not indexed answers 404; bad bodies 400', async () => {
  engine.reset();
  assertError(await call('POST', '/v1/similar/products', { key: SEARCH_KEY, body: { id: 'missing' } }), 404, 'Record not indexed in lens products: missing');
  const cases: Array<[body: unknown, message: string]> = [
    [{}, 'id: required, expected a non-empty string'],
    [{ id: 42 }, 'id: expected a non-empty string, got 42'],
    [{ id: 'x'.repeat(1025) }, 'id: longer than 1024 characters (1025)'],
    [{ id: '42', limit: 1000 }, 'limit: expected an integer from 1 to 100, got 1000'],
    [{ id: '42', minScore: 2 }, 'minScore: expected a number from 0 to 1, got 2'],
    [{ id: '42', mode: 'keyword' }, 'mode: unknown field; expected id, limit, minScore'],
  ];
  for (const [body, message] of cases) {
    assertError(await call('POST', '/v1/similar/products', { key: SEARCH_KEY, body }), 400, message);
  }
  assert.equal(engine.similarAsked.length, 1);
});

// ------------------------------------------------------------------------- lenses, routes, methods

test('an unknown lens answers 404 on every lens route', async () => {
  engine.reset();
  assertError(await call('POST', '/v1/ingest/nope', { key: ADMIN_KEY, body: { mode: 'full' } }), 404, 'Lens not found: nope');
  assertError(await call('POST', '/v1/search/nope', { key: ADMIN_KEY, body: { query: 'q' } }), 404, 'Lens not found: nope');
  assertError(await call('POST', '/v1/similar/nope', { key: ADMIN_KEY, body: { id: '1' } }), 404, 'Lens not found: nope');
  assertError(await call('GET', '/v1/status/nope', { key: ADMIN_KEY }), 404, 'Lens not found: nope');
  assert.equal(engine.submitted.length + engine.searched.length + engine.similarAsked.length, 0);
});

test('unknown routes answer 404 and wrong methods 405 with Allow', async () => {
  for (const path of ['/', '/v1', '/v1/ingest', '/v1/unknown/products', '/v2/ingest/products', '/v1/ingest/products/extra', '/v1/jobs']) {
    assertError(await call('GET', path, { key: ADMIN_KEY }), 404, /^No such endpoint: GET /);
  }
  const cases: Array<[method: string, path: string, allow: string]> = [
    ['GET', '/v1/ingest/products', 'POST'],
    ['PUT', '/v1/search/products', 'POST'],
    ['GET', '/v1/similar/products', 'POST'],
    ['POST', '/v1/status', 'GET'],
    ['DELETE', '/v1/jobs/j_known', 'GET'],
    ['POST', '/v1/status/products', 'GET'],
  ];
  for (const [method, path, allow] of cases) {
    const answer = await call(method, path, { key: ADMIN_KEY });
    assertError(answer, 405, `Method ${method} is not allowed here; use ${allow}`);
    assert.equal(answer.headers.allow, allow);
  }
});

// ---------------------------------------------------------------------------------------- auth

test('a missing or unknown key answers 401, before the lens or the body is looked at', async () => {
  engine.reset();
  const cases: Array<Record<string, string>> = [
    {},
    { authorization: 'Bearer not_a_real_key_zzz' },
    { authorization: `Basic ${INGEST_KEY}` },
    { authorization: `Bearer ${INGEST_KEY.slice(0, -1)}` },
    { authorization: `Bearer ${INGEST_KEY}x` },
    { authorization: 'Bearer ' },
  ];
  for (const headers of cases) {
    const answer = await call('POST', '/v1/ingest/products', { headers, body: { mode: 'full' } });
    assertError(answer, 401, 'Missing or invalid API key');
    assert.equal(answer.headers['www-authenticate'], 'Bearer');
  }
  assertError(await call('POST', '/v1/ingest/nope', { body: '{bad json' }), 401, 'Missing or invalid API key');
  assertError(await call('POST', '/v1/search/products', { body: { query: 'q' } }), 401, 'Missing or invalid API key');
  assertError(await call('GET', '/v1/status'), 401, 'Missing or invalid API key');
  assertError(await call('GET', '/v1/jobs/j_known', { key: 'not_a_real_key_zzz' }), 401, 'Missing or invalid API key');
  // Before the size check too: an over-limit body without a key is a 401, and the connection
  // is closed rather than the body read.
  const unread = await call('POST', '/v1/ingest/products', { body: 'x'.repeat(2048), port: small.port });
  assertError(unread, 401, 'Missing or invalid API key');
  assert.equal(unread.headers.connection, 'close');
  assert.equal(engine.submitted.length + engine.searched.length, 0);
});

test('the Bearer scheme is case-insensitive', async () => {
  assert.equal((await call('GET', '/v1/status', { headers: { authorization: `bearer ${SEARCH_KEY}` } })).status, 200);
});

test('ingest keys may not search; search keys may not ingest or read jobs (403)', async () => {
  engine.reset();
  const forbidden = 'Key does not have permission for this operation';
  assertError(await call('POST', '/v1/search/products', { key: INGEST_KEY, body: { query: 'q' } }), 403, forbidden);
  assertError(await call('POST', '/v1/similar/products', { key: INGEST_KEY, body: { id: '42' } }), 403, forbidden);
  assertError(await call('POST', '/v1/ingest/products', { key: SEARCH_KEY, body: { mode: 'full' } }), 403, forbidden);
  assertError(await call('GET', '/v1/jobs/j_known', { key: SEARCH_KEY }), 403, forbidden);
  // The scope is checked before the lens.
  assertError(await call('POST', '/v1/ingest/nope', { key: SEARCH_KEY, body: { mode: 'full' } }), 403, forbidden);
  assert.equal(engine.submitted.length + engine.searched.length + engine.similarAsked.length, 0);
  // Both may read status; admin may do everything.
  for (const key of ALL_KEYS) assert.equal((await call('GET', '/v1/status', { key })).status, 200);
  assert.equal((await call('GET', '/v1/jobs/j_known', { key: ADMIN_KEY })).status, 200);
  assert.equal((await call('POST', '/v1/similar/products', { key: ADMIN_KEY, body: { id: '42' } })).status, 200);
});

test('with no keys configured auth is off', async () => {
  engine.reset();
  assert.equal((await call('POST', '/v1/ingest/products', { body: { mode: 'full' }, port: open.port })).status, 202);
  assert.equal((await call('POST', '/v1/search/products', { body: { query: 'q' }, port: open.port })).status, 200);
  assert.equal((await call('GET', '/v1/status', { key: 'anything', port: open.port })).status, 200);
});

test('empty keys are refused at construction', async () => {
  await assert.rejects(startWorkerServer('127.0.0.1:0', { engine, keys: [{ key: '', scope: 'admin' }] }), /must not be empty/);
});

test('the extra handler serves its routes first, and the rest falls through', async () => {
  const metrics = await call('GET', '/metrics');
  assert.equal(metrics.status, 200);
  assert.equal(metrics.text, '# metrics\n');
  assertError(await call('GET', '/healthz'), 404, 'No such endpoint: GET /healthz');
});

test('no well-known key and no keyless API beyond loopback; loopback keeps the well-known keys', () => {
  const wellKnown = [{ key: 'ik_local_ingest', scope: 'ingest' as const }, { key: 'sk_local_search', scope: 'search' as const }];
  for (const listen of ['127.0.0.1:8080', '127.8.9.10:1', '[::1]:0', 'localhost:8080', '[::ffff:127.0.0.1]:80']) {
    assert.doesNotThrow(() => checkExposure(listen, wellKnown), listen);
    assert.doesNotThrow(() => checkExposure(listen, []), listen);
  }
  for (const listen of ['0.0.0.0:8080', ':8080', '[::]:8080', '10.1.2.3:8080']) {
    assert.throws(() => checkExposure(listen, wellKnown), (err: unknown) => err instanceof ConfigError && /well-known ingest key "ik_local_ingest".*-e INGEST_KEY=/.test(err.message), listen);
    assert.throws(() => checkExposure(listen, []), /has no keys/, listen);
    assert.throws(() => checkExposure(listen, [{ key: 'ik_mine_0123456789', scope: 'ingest' }, { key: 'sk_change_me', scope: 'search' }]), /search key "sk_change_me"/);
    assert.doesNotThrow(() => checkExposure(listen, [{ key: 'ik_mine_0123456789', scope: 'ingest' }, { key: 'sk_mine_0123456789', scope: 'search' }]));
  }
});

test('the quick start refuses to serve its default keys on 0.0.0.0 and says how to set keys (exit code 2)', async () => {
  const data = mkdtempSync(join(tmpdir(), 'tributary-exposure-'));
  const env = { DATABASE_URL: 'postgres://127.0.0.1:1/none', TRIBUTARY_DATA: data, TRIBUTARY_LISTEN: '0.0.0.0:0', TRIBUTARY_METRICS: '127.0.0.1:0', INGEST_KEY: '', SEARCH_KEY: '' };
  const { code, output } = await runCli(['run', '--config', 'config/quickstart.yaml'], env);
  assert.equal(code, 2, output);
  assert.match(output, /worker\.keys: the worker API listens on 0\.0\.0\.0:0 \(not loopback\) and uses the well-known ingest key "ik_local_ingest" and search key "sk_local_search"/);
  assert.match(output, /-e INGEST_KEY=.* -e SEARCH_KEY=/);
});
