import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { SinkError } from '../src/errors.js';
import { parseRetryAfter } from '../src/http-client.js';
import { createSemilayerSink, recordsBody } from '../src/sinks/semilayer/index.js';
import type { SinkContext } from '../src/plugins.js';
import { createSink } from '../src/sinks/index.js';
import type { RecordChange, Sink } from '../src/types.js';
import { startSemilayerServer, type SemilayerServer } from './helpers/semilayer-server.js';

const KEY = 'ik_test_s3cr3t_key_value';

const server: SemilayerServer = await startSemilayerServer({ keys: [KEY] });
after(() => server.close());

function sinkFor(url = server.url, options: { key?: string; timeoutMs?: number } = {}): Sink {
  return createSemilayerSink({ type: 'semilayer', url, key: options.key ?? KEY, timeoutMs: options.timeoutMs ?? 5000 });
}

/** Runs `fn` with the server answering through `respond`, and always restores the default. */
async function withResponder<T>(respond: Parameters<SemilayerServer['respondWith']>[0], fn: () => Promise<T>): Promise<T> {
  server.respondWith(respond);
  try {
    return await fn();
  } finally {
    server.respondWith(undefined);
  }
}

/** Awaits a promise that must reject with a SinkError, and returns that error. */
async function sinkError(promise: Promise<unknown>): Promise<SinkError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof SinkError, `expected a SinkError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the promise to reject');
}

function assertNoKey(err: SinkError): void {
  assert.ok(!err.message.includes(KEY), `key leaked into message: ${err.message}`);
  assert.ok(!JSON.stringify(err.details).includes(KEY), 'key leaked into details');
  assert.ok(!String(err.stack).includes(KEY), 'key leaked into stack');
}

const lastRequest = () => server.requests[server.requests.length - 1];

test('write sends one records-mode POST with the documented shape', async () => {
  const sink = sinkFor(`${server.url}/`); // a trailing slash on the base URL is tolerated
  const changes: RecordChange[] = [
    { id: 'p_7712', action: 'upsert' },
    { id: 'p_0451', action: 'delete' },
  ];
  await sink.write('products', changes);
  const req = lastRequest();
  assert.equal(req.method, 'POST');
  assert.equal(req.path, '/v1/ingest/products');
  assert.equal(req.lens, 'products');
  assert.equal(req.headers.authorization, `Bearer ${KEY}`);
  assert.equal(req.headers['content-type'], 'application/json');
  assert.deepEqual(req.body, { mode: 'records', changes });
  assert.equal(req.status, 202);
  assert.deepEqual(server.received('products').slice(-2), changes);
  await sink.close();
});

test('the records body is exact JSON and carries only id and action', () => {
  const extra = [
    { id: '42', action: 'upsert', lens: 'products', committedAt: 1 },
    { id: '[7,"eu"]', action: 'delete' },
  ] as RecordChange[];
  assert.equal(
    recordsBody(extra),
    '{"mode":"records","changes":[{"id":"42","action":"upsert"},{"id":"[7,\\"eu\\"]","action":"delete"}]}',
  );
  assert.equal(recordsBody([]), '{"mode":"records","changes":[]}');
  const tricky = [{ id: 'quote" back\\ nl\n tab\t nul\u0000 ü 😀 \ud800', action: 'upsert' }] as RecordChange[];
  assert.deepEqual(JSON.parse(recordsBody(tricky)), { mode: 'records', changes: tricky });
});

test('requestFullSync sends {"mode":"full"}', async () => {
  const sink = sinkFor();
  await sink.requestFullSync('products');
  const req = lastRequest();
  assert.equal(req.path, '/v1/ingest/products');
  assert.equal(req.headers.authorization, `Bearer ${KEY}`);
  assert.deepEqual(req.body, { mode: 'full' });
  assert.equal(req.status, 202);
});

test('requestIncrementalSync sends {"mode":"incremental"}', async () => {
  const sink = sinkFor();
  await sink.requestIncrementalSync('products');
  assert.deepEqual(lastRequest().body, { mode: 'incremental' });
  assert.equal(lastRequest().status, 202);
});

test('the default server answers 202 queued, then deduplicated while the job is pending', async () => {
  const local = await startSemilayerServer({ keys: [KEY], jobMs: 60_000 });
  try {
    const sink = sinkFor(local.url);
    await sink.write('a', [{ id: '1', action: 'upsert' }]);
    await sink.write('a', [{ id: '2', action: 'delete' }]);
    const first = await fetch(`${local.url}/v1/ingest/a`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: '{"mode":"records","changes":[{"id":"3","action":"upsert"}]}',
    });
    assert.equal(first.status, 202);
    assert.deepEqual(await first.json(), {
      jobId: 'j_1',
      status: 'deduplicated',
      lens: 'a',
      mode: 'records',
      changesBuffered: 3,
    });
    assert.deepEqual([...local.lastAction('a')], [['1', 'upsert'], ['2', 'delete'], ['3', 'upsert']]);
    assert.equal(local.counts('a'), 3);
  } finally {
    await local.close();
  }
});

test('any 2xx resolves, whatever its body', async () => {
  const sink = sinkFor();
  for (const answer of [
    { status: 200 },
    { status: 204 },
    { status: 202, body: 'not json at all' },
    { status: 201, body: { unexpected: ['shape'] } },
  ]) {
    await withResponder(() => answer, () => sink.write('products', [{ id: '1', action: 'upsert' }]));
  }
});

test('429 is rate-limited with retryAfterMs from Retry-After', async () => {
  // A fresh sink each time: a 429 holds the sink that got it (src/hosted.ts).
  const rateLimited = (headers?: Record<string, string>) =>
    withResponder(
      () => ({ status: 429, headers, body: { error: 'Rate limit exceeded' } }),
      () => sinkError(sinkFor().write('products', [{ id: '1', action: 'upsert' }])),
    );

  const seconds = await rateLimited({ 'retry-after': '2' });
  assert.equal(seconds.kind, 'rate-limited');
  assert.equal(seconds.retriable, true);
  assert.equal(seconds.details.status, 429);
  assert.equal(seconds.details.retryAfterMs, 2000);
  assert.match(seconds.message, /products/);
  assert.match(seconds.message, /429/);
  assert.match(seconds.message, /Rate limit exceeded/);

  const date = await rateLimited({ 'retry-after': new Date(Date.now() + 10_000).toUTCString() });
  assert.equal(date.kind, 'rate-limited');
  assert.ok(date.details.retryAfterMs !== undefined && date.details.retryAfterMs > 7000 && date.details.retryAfterMs <= 10_000);

  const missing = await rateLimited();
  assert.equal(missing.kind, 'rate-limited');
  assert.equal(missing.details.retryAfterMs, undefined);

  const garbage = await rateLimited({ 'retry-after': 'soon 5' });
  assert.equal(garbage.details.retryAfterMs, undefined);
});

test('parseRetryAfter reads delta-seconds and all three HTTP-date forms', () => {
  const now = Date.parse('Sun, 06 Nov 1994 08:49:30 GMT');
  assert.equal(parseRetryAfter('2', now), 2000);
  assert.equal(parseRetryAfter(' 0 ', now), 0);
  assert.equal(parseRetryAfter('Sun, 06 Nov 1994 08:49:37 GMT', now), 7000);
  assert.equal(parseRetryAfter('Sunday, 06-Nov-94 08:49:37 GMT', now), 7000);
  assert.equal(parseRetryAfter('Sun Nov  6 08:49:37 1994', now), 7000);
  assert.equal(parseRetryAfter('Sun, 06 Nov 1994 08:00:00 GMT', now), 0); // in the past
  for (const bad of [null, undefined, '', '-1', '1.5', 'soon', 'soon 5', '2 days', 'Sun, garbage']) {
    assert.equal(parseRetryAfter(bad, now), undefined, String(bad));
  }
});

test('5xx is transient', async () => {
  const sink = sinkFor();
  for (const status of [500, 502, 503]) {
    const err = await withResponder(
      () => ({ status, body: { error: 'Embedding provider error' } }),
      () => sinkError(sink.write('products', [{ id: '1', action: 'upsert' }])),
    );
    assert.equal(err.kind, 'transient', String(status));
    assert.equal(err.retriable, true);
    assert.equal(err.details.status, status);
    assert.match(err.message, new RegExp(`lens "products".*${status}.*Embedding provider error`));
  }
  // A body that is not JSON (a proxy's HTML page) is still transient and kept in details.
  const html = await withResponder(
    () => ({ status: 502, body: '<html>Bad Gateway</html>' }),
    () => sinkError(sink.requestFullSync('products')),
  );
  assert.equal(html.kind, 'transient');
  assert.equal(html.details.body, '<html>Bad Gateway</html>');
});

test('connection refused is transient', async () => {
  const port = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
  const err = await sinkError(sinkFor(`http://127.0.0.1:${port}`).write('products', [{ id: '1', action: 'upsert' }]));
  assert.equal(err.kind, 'transient');
  assert.match(err.message, /lens "products"/);
  assert.match(err.message, /ECONNREFUSED/);
  assertNoKey(err);
});

test('a request that outlives timeoutMs is transient', async () => {
  const sink = sinkFor(server.url, { timeoutMs: 100 });
  const started = Date.now();
  const err = await withResponder(
    () => new Promise((resolve) => setTimeout(() => resolve({ status: 202 }), 1000)),
    () => sinkError(sink.write('products', [{ id: '1', action: 'upsert' }])),
  );
  assert.equal(err.kind, 'transient');
  assert.match(err.message, /timed out after 100 ms/);
  assert.ok(Date.now() - started < 900, 'the timeout fired early');
});

test('400 is rejected with the response body', async () => {
  const sink = sinkFor();
  // The loopback server's own validation: a bad action.
  const err = await sinkError(sink.write('products', [{ id: '1', action: 'bogus' as 'upsert' }]));
  assert.equal(err.kind, 'rejected');
  assert.equal(err.retriable, false);
  assert.equal(err.details.status, 400);
  assert.deepEqual(JSON.parse(err.details.body ?? ''), { error: 'changes[0].action must be "upsert" or "delete"' });
  assert.match(err.message, /lens "products".*400.*changes\[0\]\.action/);

  // Too many changes, named by field.
  const many = Array.from({ length: 10_001 }, (_, i) => ({ id: String(i), action: 'upsert' as const }));
  const tooMany = await sinkError(sink.write('products', many));
  assert.equal(tooMany.kind, 'rejected');
  assert.match(tooMany.message, /changes must contain at most 10000/);

  // Other unlisted 4xx are rejected too; long bodies are cut to 2 KB.
  const big = await withResponder(
    () => ({ status: 413, body: { error: 'Request body too large', padding: 'x'.repeat(10_000) } }),
    () => sinkError(sink.write('products', [{ id: '1', action: 'upsert' }])),
  );
  assert.equal(big.kind, 'rejected');
  assert.equal(big.details.status, 413);
  assert.ok((big.details.body ?? '').length <= 2048);
  assert.ok((big.details.body ?? '').startsWith('{"error":"Request body too large"'));
});

test('401, 403 and 404 are fatal and say what to do', async () => {
  // 401 from the loopback server itself: the sink's key is not one it knows.
  const wrongKey = await sinkError(sinkFor(server.url, { key: 'ik_wrong' }).write('products', [{ id: '1', action: 'upsert' }]));
  assert.equal(wrongKey.kind, 'fatal');
  assert.equal(wrongKey.retriable, false);
  assert.equal(wrongKey.details.status, 401);
  assert.match(wrongKey.message, /lens "products": HTTP 401 \(Missing or invalid API key\)/);
  assert.match(wrongKey.message, /the ingest key is missing or invalid — check the sink's `key`/);
  assert.ok(!wrongKey.message.includes('ik_wrong'));

  const forbidden = await withResponder(
    () => ({ status: 403, body: { error: 'Key does not have permission for this operation' } }),
    () => sinkError(sinkFor().write('products', [{ id: '1', action: 'upsert' }])),
  );
  assert.equal(forbidden.kind, 'fatal');
  assert.equal(forbidden.details.status, 403);
  assert.match(forbidden.message, /403 \(Key does not have permission for this operation\)/);
  assert.match(forbidden.message, /the key lacks the ingest scope — use an ik_ key/);

  // 404 from the loopback server: it only knows `products`.
  const local = await startSemilayerServer({ keys: [KEY], lenses: ['products'] });
  try {
    const notFound = await sinkError(sinkFor(local.url).write('prodcuts', [{ id: '1', action: 'upsert' }]));
    assert.equal(notFound.kind, 'fatal');
    assert.equal(notFound.details.status, 404);
    assert.match(notFound.message, /lens "prodcuts": HTTP 404 \(Lens not found: prodcuts\)/);
    assert.match(notFound.message, /lens not found on the ingest API — push the lens \/ check its name/);
  } finally {
    await local.close();
  }
});

test('a redirect is not followed and is fatal', async () => {
  const err = await withResponder(
    () => ({ status: 308, headers: { location: 'https://elsewhere.example/v1/ingest/products' } }),
    () => sinkError(sinkFor().write('products', [{ id: '1', action: 'upsert' }])),
  );
  assert.equal(err.kind, 'fatal');
  assert.match(err.message, /redirected to https:\/\/elsewhere\.example/);
});

test('the key never appears in an error, even when the server echoes it', async () => {
  const echo = (status: number) => (req: { headers: { authorization?: string } }) => ({
    status,
    headers: { 'retry-after': '1', location: `/x?${req.headers.authorization}` },
    body: { error: `unknown key ${req.headers.authorization}`, key: KEY },
  });
  for (const status of [301, 400, 401, 403, 404, 409, 413, 429, 500, 503]) {
    // A fresh sink each time: the 429 holds the sink that got it (src/hosted.ts).
    const err = await withResponder(echo(status), () => sinkError(sinkFor().write('products', [{ id: '1', action: 'upsert' }])));
    assertNoKey(err);
    assert.match(err.message, /unknown key Bearer \[redacted\]/, String(status));
  }
  const timeout = await withResponder(
    () => new Promise((resolve) => setTimeout(() => resolve(undefined), 500)),
    () => sinkError(sinkFor(server.url, { timeoutMs: 50 }).write('products', [])),
  );
  assertNoKey(timeout);
});

test('lens names are URL-encoded into one path segment', async () => {
  const sink = sinkFor();
  const lens = 'my lens/ü?#%&=+';
  await sink.write(lens, [{ id: '1', action: 'upsert' }]);
  await sink.requestFullSync(lens);
  const [records, full] = server.requests.slice(-2);
  assert.equal(records.path, `/v1/ingest/${encodeURIComponent(lens)}`);
  assert.equal(records.path, '/v1/ingest/my%20lens%2F%C3%BC%3F%23%25%26%3D%2B');
  assert.equal(records.lens, lens);
  assert.equal(full.lens, lens);
  assert.deepEqual(server.received(lens), [{ id: '1', action: 'upsert' }]);
});

test('a 10,000-change batch round-trips exactly', async () => {
  const sink = sinkFor();
  const changes: RecordChange[] = Array.from({ length: 10_000 }, (_, i) => ({
    id: i % 5 === 0 ? JSON.stringify([i, 'eu "west"']) : i % 7 === 0 ? `ü_${i}_😀` : `p_${i}`,
    action: i % 3 === 0 ? 'delete' : 'upsert',
  }));
  await sink.write('big', changes);
  assert.deepEqual(server.received('big'), changes);
  assert.equal(server.counts('big'), 10_000);
  assert.equal(server.lastAction('big').get('p_1'), 'upsert');
  assert.equal(server.lastAction('big').get('[0,"eu \\"west\\""]'), 'delete');
});

test('close aborts requests in flight and is safe to call twice', async () => {
  const sink = sinkFor();
  const err = await withResponder(
    () => new Promise((resolve) => setTimeout(() => resolve({ status: 202 }), 1000)),
    async () => {
      const pending = sinkError(sink.write('products', [{ id: '1', action: 'upsert' }]));
      await server.waitFor(() => lastRequest()?.status === undefined && lastRequest()?.lens === 'products');
      await sink.close();
      return pending;
    },
  );
  assert.equal(err.kind, 'transient');
  assert.match(err.message, /aborted/);
  await sink.close();
  const after = await sinkError(sink.write('products', []));
  assert.match(after.message, /closed/);
});

test('createSink dispatches on type, and a bad URL fails at once', async () => {
  const sink = await createSink({ type: 'semilayer', url: server.url, key: KEY, timeoutMs: 5000 }, {} as SinkContext);
  await sink.write('registry', [{ id: '1', action: 'delete' }]);
  assert.deepEqual(server.received('registry'), [{ id: '1', action: 'delete' }]);
  await assert.rejects(createSink({ type: 'nope' } as never, {} as SinkContext), /no plugin of type "nope"/);
  await assert.rejects(createSink({ type: 'toString' } as never, {} as SinkContext), /no plugin of type/);
  assert.throws(() => sinkFor('ftp://example.com'), (err: unknown) => err instanceof SinkError && err.kind === 'fatal');
  assert.throws(() => sinkFor('not a url'), SinkError);
});
