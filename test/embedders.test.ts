import { test, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { EmbedError, TributaryError } from '../src/errors.js';
import { createHashEmbedder } from '../src/worker/embedders/hash.js';
import { createEmbedder } from '../src/worker/embedders/index.js';
import type { OpenAIEmbedderConfig } from '../src/config/types.js';
import { createOpenAIEmbedder } from '../src/worker/embedders/openai.js';

/** The config schema's defaults for the optional settings. */
const OPENAI_EMBEDDER_DEFAULTS = {
  sendDimensions: false,
  maxInputs: 256,
  maxTokensPerRequest: 250_000,
  maxInputTokens: 8191,
  overLong: 'truncate',
  concurrency: 2,
  timeoutMs: 60_000,
  maxRetries: 6,
} as const;
import { openAIError, startOpenAIServer } from './helpers/openai-server.js';

const KEY = 'sk-test-s3cr3t-embedding-key-value';

const server = await startOpenAIServer({ key: KEY, dimensions: 16 });
after(() => server.close());
beforeEach(() => server.reset());

/** An embedder for the test server with small limits; `overrides` win. */
function openai(overrides: Partial<OpenAIEmbedderConfig> = {}) {
  return createOpenAIEmbedder({
    ...OPENAI_EMBEDDER_DEFAULTS,
    url: server.url,
    key: KEY,
    model: 'text-embedding-test',
    dimensions: 16,
    timeoutMs: 5000,
    maxRetries: 2,
    ...overrides,
  });
}

const dot = (a: Float32Array, b: Float32Array) => a.reduce((sum, x, i) => sum + x * b[i], 0);
const norm = (a: Float32Array) => Math.sqrt(dot(a, a));

/** The vectors the test server computes for texts: the hash embedder's, normalised. */
async function expected(texts: string[], dimensions = 16): Promise<Float32Array[]> {
  return createHashEmbedder({ dimensions }).embed(texts);
}

function assertClose(actual: Float32Array[], wanted: Float32Array[]): void {
  assert.equal(actual.length, wanted.length);
  actual.forEach((vector, i) => {
    assert.equal(vector.length, wanted[i].length);
    vector.forEach((x, j) => assert.ok(Math.abs(x - wanted[i][j]) < 1e-5, `vector ${i}[${j}]: ${x} vs ${wanted[i][j]}`));
  });
}

/** Awaits a promise that must reject with an error of `type`, and returns that error. */
async function rejection<E extends Error>(promise: Promise<unknown>, type: new (...args: never[]) => E): Promise<E> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof type, `expected a ${type.name}, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the promise to reject');
}

function assertNoKey(err: Error): void {
  assert.ok(!err.message.includes(KEY), `key leaked into message: ${err.message}`);
  assert.ok(!String(err.stack).includes(KEY), 'key leaked into stack');
  assert.ok(!JSON.stringify((err as { details?: unknown }).details ?? {}).includes(KEY), 'key leaked into details');
}

// ---------------------------------------------------------------------------------- hash

test('hash: deterministic, named by its dimensions, unit length', async () => {
  const a = createHashEmbedder({ dimensions: 384 });
  const b = createHashEmbedder({ dimensions: 384 });
  assert.equal(a.id, 'hash:v1:384');
  assert.equal(a.dimensions, 384);
  const texts = ['Lightweight running shoe, breathable mesh', 'Cast iron skillet 26 cm', 'Größe 42 — naïve café 東京'];
  const [first, second] = [await a.embed(texts), await b.embed(texts)];
  assert.deepEqual(first, second);
  assert.deepEqual(await a.embed(texts), first);
  for (const vector of first) {
    assert.ok(vector instanceof Float32Array);
    assert.equal(vector.length, 384);
    assert.ok(Math.abs(norm(vector) - 1) < 1e-5);
  }
  assert.notEqual(createHashEmbedder({ dimensions: 64 }).id, a.id);
});

test('hash: similar texts score higher than unrelated ones (lexically)', async () => {
  const embedder = createHashEmbedder({ dimensions: 384 });
  const [shoe, shoes, skillet] = await embedder.embed(['lightweight running shoe', 'running shoes, light', 'cast iron skillet']);
  assert.ok(dot(shoe, shoes) > 0.3, `shoe~shoes ${dot(shoe, shoes)}`);
  assert.ok(dot(shoe, shoes) > dot(shoe, skillet) + 0.25);
  assert.ok(dot(shoes, shoe) > dot(shoes, skillet) + 0.25);
  // Case and punctuation do not matter; word order does, a little (bigrams).
  const [upper, lower, reordered] = await embedder.embed(['RUNNING SHOE!', 'running shoe', 'shoe running']);
  assert.deepEqual(upper, lower);
  assert.ok(dot(lower, reordered) > 0.7 && dot(lower, reordered) < 0.999);
});

test('hash: a text without words is the zero vector, not NaN; tokensUsed is the chars/4 estimate', async () => {
  const embedder = createHashEmbedder({ dimensions: 32 });
  const [empty, punctuation, some] = await embedder.embed(['', ' ,.;— ', 'one two three']);
  assert.deepEqual(Array.from(empty), new Array(32).fill(0));
  assert.deepEqual(Array.from(punctuation), new Array(32).fill(0));
  assert.ok(Math.abs(norm(some) - 1) < 1e-5);
  assert.equal(embedder.tokensUsed, 0 + 2 + 4); // ceil(0/4) + ceil(6/4) + ceil(13/4)
  assert.deepEqual(await embedder.embed([]), []);
  assert.throws(() => createHashEmbedder({ dimensions: 0 }), TributaryError);
});

test('hash: a large batch, embedded on its own thread, gives exactly the vectors of texts embedded one by one', async () => {
  const words = 'lightweight running shoe breathable mesh Größe naïve café 東京 cast iron skillet organic cotton'.split(' ');
  const texts = Array.from({ length: 1_000 }, (_, i) => `${Array.from({ length: 1 + (i % 12) }, (_, j) => words[(i * 7 + j * 13) % words.length]).join(' ')} sku ${i}`);
  texts[5] = '';
  const embedder = createHashEmbedder({ dimensions: 96 });
  const batch = await embedder.embed(texts);
  assert.equal(batch.length, texts.length);
  for (const [i, text] of texts.entries()) assert.deepEqual(batch[i], (await embedder.embed([text]))[0], text);
  assert.equal(embedder.tokensUsed, 2 * texts.reduce((sum, text) => sum + Math.ceil(text.length / 4), 0));
});

// ---------------------------------------------------------------------------------- openai

test('openai: request shape, auth header, id, unit vectors in order', async () => {
  const embedder = openai();
  assert.equal(embedder.id, 'openai:text-embedding-test:16');
  const texts = ['red running shoe', 'cast iron skillet'];
  const vectors = await embedder.embed(texts);
  assertClose(vectors, await expected(texts));
  vectors.forEach((v) => assert.ok(Math.abs(norm(v) - 1) < 1e-5));

  assert.equal(server.requests.length, 1);
  const [req] = server.requests;
  assert.equal(req.method, 'POST');
  assert.equal(req.path, '/v1/embeddings');
  assert.equal(req.headers.authorization, `Bearer ${KEY}`);
  assert.equal(req.headers['content-type'], 'application/json');
  assert.deepEqual(req.body, { model: 'text-embedding-test', input: texts, encoding_format: 'float' });

  // `dimensions` travels only with sendDimensions; a trailing slash on the URL is fine.
  const shortened = openai({ url: `${server.url}/`, dimensions: 8, sendDimensions: true });
  assertClose(await shortened.embed(texts), await expected(texts, 8));
  assert.deepEqual(server.requests[1].body, { model: 'text-embedding-test', input: texts, encoding_format: 'float', dimensions: 8 });
  assert.deepEqual(await embedder.embed([]), []);
  assert.equal(server.requests.length, 2);
});

test('openai: batches bounded by maxInputs are reassembled in order by index', async () => {
  server.reverseData = true;
  server.delayMs = 10;
  const texts = Array.from({ length: 11 }, (_, i) => `product number ${i} ${'x'.repeat(i)}`);
  const vectors = await openai({ maxInputs: 3, concurrency: 4 }).embed(texts);
  assertClose(vectors, await expected(texts));
  assert.deepEqual(server.requests.map((r) => r.inputs.length), [3, 3, 3, 2]);
  assert.deepEqual(server.requests.flatMap((r) => r.inputs).sort(), [...texts].sort());
  assert.ok(server.maxInFlight > 1, 'requests ran concurrently');
});

test('openai: batches are bounded by estimated tokens (ceil(chars / 4))', async () => {
  const texts = Array.from({ length: 5 }, (_, i) => `${i}`.padEnd(40, '.')); // 10 tokens each
  await openai({ maxTokensPerRequest: 25 }).embed(texts);
  assert.deepEqual(server.requests.map((r) => r.inputs.length), [2, 2, 1]);
});

test('openai: never more than `concurrency` requests in flight, across embed calls', async () => {
  server.delayMs = 40;
  const embedder = openai({ maxInputs: 1, concurrency: 2 });
  const texts = Array.from({ length: 6 }, (_, i) => `text ${i}`);
  await Promise.all([embedder.embed(texts), embedder.embed(texts)]);
  assert.equal(server.requests.length, 12);
  assert.equal(server.maxInFlight, 2);
});

test('openai: 429 waits for Retry-After, then succeeds', async () => {
  server.script(openAIError(429, 'Rate limit reached for requests', 'rate_limit_exceeded', { 'retry-after': '1' }));
  const started = Date.now();
  const vectors = await openai().embed(['retry me']);
  const waited = server.requests[1].receivedAt - server.requests[0].receivedAt;
  assert.ok(waited >= 950, `waited only ${waited} ms`);
  assert.ok(Date.now() - started < 3000);
  assert.deepEqual(server.requests.map((r) => r.status), [429, 200]);
  assertClose(vectors, await expected(['retry me']));
});

test('openai: 5xx is retried with backoff, then succeeds', async () => {
  server.script(openAIError(503, 'The server is overloaded'), { status: 502, body: 'Bad Gateway' });
  const vectors = await openai({ maxRetries: 3 }).embed(['eventually']);
  assert.deepEqual(server.requests.map((r) => r.status), [503, 502, 200]);
  assertClose(vectors, await expected(['eventually']));
});

test('openai: retries exhausted → EmbedError transient', async () => {
  server.script(...Array.from({ length: 3 }, () => openAIError(503, 'The server is overloaded')));
  const err = await rejection(openai({ maxRetries: 2 }).embed(['never']), EmbedError);
  assert.equal(err.kind, 'transient');
  assert.equal(err.retriable, true);
  assert.equal(err.details.status, 503);
  assert.match(err.message, /HTTP 503 \(The server is overloaded\).*3 attempts/);
  assert.equal(server.requests.length, 3);
});

test('openai: a slow server times out and is retried', async () => {
  server.delayMs = 400;
  const err = await rejection(openai({ timeoutMs: 100, maxRetries: 1 }).embed(['slow']), EmbedError);
  assert.equal(err.kind, 'transient');
  assert.match(err.message, /timed out after 100 ms/);
  assert.equal(server.requests.length, 2);
});

test('openai: 400 for one poisoned input → EmbedError input with the server message, not retried', async () => {
  server.failOn((input) =>
    input.includes('POISON')
      ? openAIError(400, "This model's maximum context length is 8192 tokens.", 'context_length_exceeded')
      : undefined,
  );
  const embedder = openai({ maxInputs: 2 });
  const err = await rejection(embedder.embed(['fine', 'also fine', 'POISON pill', 'fine again']), EmbedError);
  assert.equal(err.kind, 'input');
  assert.equal(err.retriable, false);
  assert.equal(err.details.status, 400);
  assert.match(err.message, /maximum context length is 8192 tokens/);
  assert.equal(server.requests.filter((r) => r.status === 400).length, 1);
  // Splitting the batch isolates the bad input: the rest embed fine.
  assert.equal((await embedder.embed(['fine', 'also fine'])).length, 2);
});

test('openai: a dimension mismatch is a config error naming both numbers and the setting', async () => {
  server.dimensions = 8;
  const err = await rejection(openai({ dimensions: 16 }).embed(['hello']), EmbedError);
  assert.equal(err.kind, 'config');
  assert.equal(err.retriable, false);
  assert.match(err.message, /set worker\.embedder\.dimensions to 8/);
  assert.match(err.message, /returned 8 dimensions but the config says 16/);
});

test('openai: over-long input is truncated or rejected, per overLong', async () => {
  const long = 'a'.repeat(100);
  await openai({ maxInputTokens: 10, overLong: 'truncate' }).embed(['short', long]);
  assert.deepEqual(server.requests[0].inputs, ['short', 'a'.repeat(40)]);

  const err = await rejection(openai({ maxInputTokens: 10, overLong: 'reject' }).embed(['short', long]), EmbedError);
  assert.equal(err.kind, 'input');
  assert.match(err.message, /input 1 is about 25 tokens/);
  assert.equal(server.requests.length, 1, 'nothing is sent when an input is rejected');
});

test('openai: 401 is a non-retriable EmbedError config that never shows the key', async () => {
  const wrongKey = `${KEY}-wrong`;
  const err = await rejection(openai({ key: wrongKey }).embed(['hi']), EmbedError);
  assert.equal(err.kind, 'config');
  assert.equal(err.retriable, false);
  assert.match(err.message, /embedding key is missing or invalid/);
  assert.ok(!err.message.includes(wrongKey));
  assertNoKey(err);
  assert.equal(server.requests.length, 1);

  const missing = await rejection(openai({ key: undefined }).embed(['hi']), EmbedError);
  assert.match(missing.message, /HTTP 401: the embedding key is missing or invalid/);
  assert.equal(server.requests[1].headers.authorization, undefined);
});

test('openai: 403 and 404 are EmbedError config naming what to check; 400 stays input', async () => {
  server.script(openAIError(403, 'You do not have access to this model'), openAIError(404, 'The model does not exist', 'model_not_found'));
  const forbidden = await rejection(openai().embed(['hi']), EmbedError);
  assert.equal(forbidden.kind, 'config');
  assert.match(forbidden.message, /check worker\.embedder\.key/);
  const unknown = await rejection(openai().embed(['hi']), EmbedError);
  assert.equal(unknown.kind, 'config');
  assert.match(unknown.message, /check worker\.embedder\.url .* and model/);
  assert.equal(server.requests.length, 2, 'not retried');
});

test('openai: the key never appears in errors, even when a server echoes it', async () => {
  server.failOn(() => openAIError(422, `bad input for key ${KEY}`));
  const err = await rejection(openai().embed(['x']), EmbedError);
  assert.equal(err.kind, 'input');
  assertNoKey(err);
  assert.match(err.message, /\[redacted\]/);
});

test('openai: tokensUsed sums usage.total_tokens, or the estimate without usage', async () => {
  const embedder = openai({ maxInputs: 2 });
  await embedder.embed(['12345678', '1234', 'abcdefghijkl']); // 2 + 1 + 3
  assert.equal(embedder.tokensUsed, 6);
  server.omitUsage = true;
  await embedder.embed(['123456789']); // ceil(9 / 4)
  assert.equal(embedder.tokensUsed, 9);
});

test('openai: aborting the signal stops the call', async () => {
  server.delayMs = 2000;
  const controller = new AbortController();
  const started = Date.now();
  const promise = openai().embed(['slow'], controller.signal);
  setTimeout(() => controller.abort(), 50);
  const err = await rejection(promise, EmbedError);
  assert.match(err.message, /aborted/);
  assert.ok(Date.now() - started < 1000);
});

test('openai: an unusable config fails at once', () => {
  assert.throws(() => openai({ url: 'ftp://example.com' }), /not an http\(s\) URL/);
  assert.throws(() => openai({ maxInputs: 0 }), /maxInputs must be a positive integer/);
});

test('createEmbedder: one registry entry per type', async () => {
  const hash = createEmbedder({ type: 'hash', dimensions: 12 });
  assert.equal(hash.id, 'hash:v1:12');
  const remote = createEmbedder({
    type: 'openai',
    ...OPENAI_EMBEDDER_DEFAULTS,
    url: server.url,
    key: KEY,
    model: 'm',
    dimensions: 16,
  });
  assert.equal(remote.id, 'openai:m:16');
  assert.equal((await remote.embed(['hi']))[0].length, 16);
  assert.throws(() => createEmbedder({ type: 'nope' } as never), /unknown embedder type "nope"/);
});
