/**
 * The `openai` embedder: any OpenAI-compatible `POST {url}/embeddings` endpoint (OpenAI, Azure
 * OpenAI, Ollama, vLLM, Hugging Face TEI, LiteLLM…).
 *
 * - Texts are split into requests of at most `maxInputs` inputs and `maxTokensPerRequest`
 *   estimated tokens, sent at most `concurrency` at a time (shared by every `embed` call of the
 *   embedder), and reassembled in order (by each result's `index`, not the response order).
 * - Tokens are ESTIMATED as `ceil(characters / 4)`: the usual rule of thumb for English with
 *   OpenAI's tokenisers, with no tokenizer to ship. The estimate only sizes requests and checks
 *   `maxInputTokens`; `tokensUsed` counts what the server reports in `usage`.
 * - An input over `maxInputTokens` is cut to `maxInputTokens * 4` characters (`overLong:
 *   truncate`) or rejected before anything is sent (`overLong: reject`).
 * - Returned vectors must have `dimensions` numbers each; they are normalised to unit length.
 *
 * Failures, by response:
 *
 * | response                               | outcome |
 * |----------------------------------------|---------|
 * | 429                                    | retried after `Retry-After` (seconds or HTTP date; backoff without it) |
 * | 5xx, 408, network error, timeout, bad JSON | retried with backoff (src/retry.ts) |
 * | …still failing after `maxRetries`      | EmbedError `transient` |
 * | 400, 413, 422 and other 4xx            | EmbedError `input`, with the server's message |
 * | 401, 403                               | EmbedError `config` (not retried): the key is missing or invalid |
 * | 404, 3xx                               | EmbedError `config` (not retried): check `url` and `model` |
 * | wrong count, length or shape of vectors | EmbedError `config` (not retried): check `dimensions`, `url` |
 *
 * `config` errors fail every request alike until an operator fixes the configuration or the
 * provider's account: the worker holds the lens in `error` and retries, it never dead-letters.
 *
 * The key travels only in the Authorization header: it is never part of an error message or
 * details, even when a server echoes it back.
 */
import type { IncomingMessage } from 'node:http';
import pLimit from 'p-limit';
import { linkedAbort } from '../../abort.js';
import { EmbedError, TributaryError } from '../../errors.js';
import { retry } from '../../retry.js';
import type { Embedder } from '../types.js';
import type { OpenAIEmbedderConfig } from '../../config/types.js';
import { describeRequestFailure, keepAliveAgent, parseRetryAfter, post as httpPost, readText } from '../../http-client.js';

/** Characters per token in the estimate. */
const CHARS_PER_TOKEN = 4;
/** The longest Retry-After honoured; longer waits are cut to this. */
const MAX_RETRY_AFTER_MS = 60_000;
/** How much of an error response is read, and how much of it is kept in messages and details. */
const MAX_READ_BODY = 16 * 1024;
const MAX_DETAILS_BODY = 2048;
const MAX_MESSAGE_ERROR = 300;

/** Estimated tokens of a text: `ceil(characters / 4)` (UTF-16 code units). */
export function estimateTokens(text: string): number {
  return Math.ceil(text.length / CHARS_PER_TOKEN);
}

/**
 * Creates an embedder for an OpenAI-compatible embeddings API (see the file comment for
 * batching, retries and errors). Its id is `openai:<model>:<dimensions>`. Throws a
 * TributaryError at once when the config is unusable (bad URL, non-positive numbers).
 */
export function createOpenAIEmbedder(config: OpenAIEmbedderConfig): Embedder {
  const base = config.url.replace(/\/+$/, '');
  const endpoint = `${base}/embeddings`;
  checkConfig(config, base);
  const url = new URL(endpoint);
  const agent = keepAliveAgent(url);

  const { key, model, dimensions } = config;
  const where = `openai embedder (model "${model}")`;
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    accept: 'application/json',
    'user-agent': 'tributary',
  };
  if (key) headers.authorization = `Bearer ${key}`;
  /** Removes the key from text that came from elsewhere (a server may echo it back). */
  const redact = (text: string): string => (key ? text.replaceAll(key, '[redacted]') : text);

  const limit = pLimit(config.concurrency);
  /** The wait a 429 asked for, by error. */
  const retryAfter = new WeakMap<object, number>();
  let tokensUsed = 0;

  /** One POST of one request's inputs (`signal` aborts it, with a TimeoutError after timeoutMs): their vectors in order, or a thrown error. */
  async function post(inputs: string[], estimate: number, signal: AbortSignal): Promise<Float32Array[]> {
    if (signal.aborted) throw new EmbedError(`${where}: request aborted`, 'transient');
    const body: Record<string, unknown> = { model, input: inputs, encoding_format: 'float' };
    if (config.sendDimensions) body.dimensions = dimensions;

    /** A failure on the way (no answer, or its body cut short): transient, saying whether it timed out. */
    const failed = (err: unknown) => new EmbedError(`${where}: ${describeRequestFailure(err, signal, config.timeoutMs)} (POST ${endpoint})`, 'transient', {}, err);
    let res: IncomingMessage;
    try {
      res = await httpPost(url, { headers, body: JSON.stringify(body), signal, agent });
    } catch (err) {
      throw failed(err);
    }

    const status = res.statusCode ?? 0;
    if (status >= 200 && status < 300) {
      const answer = await readText(res).catch((err: unknown) => {
        throw failed(err);
      });
      let parsed: unknown;
      try {
        parsed = JSON.parse(answer);
      } catch (err) {
        throw new EmbedError(`${where}: HTTP ${status} with a body that is not JSON, will retry`, 'transient', { status }, err);
      }
      const vectors = readVectors(parsed, inputs.length);
      const usage = (parsed as { usage?: { total_tokens?: unknown; prompt_tokens?: unknown } }).usage;
      const used = usage?.total_tokens ?? usage?.prompt_tokens;
      tokensUsed += typeof used === 'number' && Number.isFinite(used) ? used : estimate;
      return vectors;
    }

    const text = redact(await readText(res, MAX_READ_BODY).catch(() => '')); // a body cut short still tells the status
    const details = { status, body: truncate(text, MAX_DETAILS_BODY) };
    const serverError = errorText(text);
    const head = `${where}: HTTP ${status}${serverError ? ` (${serverError})` : ''}`;

    if (status === 401 || status === 403) {
      // Not even the server's text: OpenAI's 401 message quotes part of the key.
      throw new EmbedError(
        `${where}: HTTP ${status}: the embedding key is missing or invalid, or lacks access to the model — check worker.embedder.key`,
        'config',
        { status },
      );
    }
    if (status === 429) {
      const waitMs = parseRetryAfter(res.headers['retry-after']);
      const err = new EmbedError(`${head}: rate limited`, 'transient', details);
      if (waitMs !== undefined) retryAfter.set(err, Math.min(waitMs, MAX_RETRY_AFTER_MS));
      throw err;
    }
    if (status >= 500 || status === 408) {
      throw new EmbedError(`${head}: the embedding API failed`, 'transient', details);
    }
    if (status === 404 || (status >= 300 && status < 400)) {
      throw new EmbedError(
        `${head}: POST ${endpoint} is not an embeddings endpoint or the model is unknown — check worker.embedder.url (the base, e.g. https://api.openai.com/v1) and model`,
        'config',
        details,
      );
    }
    throw new EmbedError(`${head}: the embedding API rejected the input`, 'input', details);
  }

  /** Checks a 2xx body's shape, count and lengths; returns unit vectors ordered by `index`. */
  function readVectors(body: unknown, expected: number): Float32Array[] {
    const data = (body as { data?: unknown } | null)?.data;
    if (!Array.isArray(data)) {
      throw new EmbedError(`${where}: the response has no \`data\` array: not an OpenAI-compatible embeddings API? — check worker.embedder.url`, 'config');
    }
    if (data.length !== expected) {
      throw new EmbedError(`${where}: sent ${expected} inputs but the response has ${data.length} embeddings: not an OpenAI-compatible embeddings API? — check worker.embedder.url`, 'config');
    }
    const vectors: Float32Array[] = new Array(expected);
    for (let i = 0; i < data.length; i++) {
      const item = data[i] as { index?: unknown; embedding?: unknown } | null;
      const index = item?.index ?? i;
      const embedding = item?.embedding;
      if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= expected || vectors[index]) {
        throw new EmbedError(`${where}: the response has a missing, duplicate or out-of-range index (${String(index)}): not an OpenAI-compatible embeddings API? — check worker.embedder.url`, 'config');
      }
      if (!Array.isArray(embedding) || !embedding.every((x) => typeof x === 'number' && Number.isFinite(x))) {
        throw new EmbedError(`${where}: embedding ${index} is not an array of numbers (is encoding_format "float" supported?)`, 'config');
      }
      if (embedding.length !== dimensions) {
        throw new EmbedError(
          `${where}: the model returned ${embedding.length} dimensions but the config says ${dimensions} — set worker.embedder.dimensions to ${embedding.length}` +
            (config.sendDimensions ? '' : ', or enable sendDimensions if the model can shorten its vectors'),
          'config',
        );
      }
      vectors[index] = normalize(embedding as number[]);
    }
    return vectors;
  }

  /** One request, retried per the table in the file comment. */
  async function request(inputs: string[], estimate: number, signal: AbortSignal): Promise<Float32Array[]> {
    let attempts = 0;
    try {
      return await retry(
        async (attempt) => {
          attempts = attempt;
          const posting = linkedAbort(signal); // aborted with the call, or after timeoutMs
          posting.timeout(config.timeoutMs);
          try {
            return await post(inputs, estimate, posting.signal);
          } finally {
            posting.release();
          }
        },
        { maxAttempts: config.maxRetries + 1, signal, delayFor: (err) => retryAfter.get(err as object) },
      );
    } catch (err) {
      if (err instanceof EmbedError && err.kind === 'transient' && !signal.aborted) {
        throw new EmbedError(`${err.message} — gave up after ${attempts} attempts`, 'transient', err.details, err);
      }
      throw err;
    }
  }

  return {
    id: `openai:${model}:${dimensions}`,
    dimensions,
    get tokensUsed() {
      return tokensUsed;
    },
    async embed(texts, signal) {
      if (texts.length === 0) return [];
      const inputs = prepareInputs(texts, config, where);
      // One failed request stops the others of this call: their results would be thrown away.
      const stop = linkedAbort(signal);
      try {
        const batches = planBatches(inputs, config);
        const results = await Promise.all(
          batches.map((batch) =>
            limit(() => request(batch.texts, batch.tokens, stop.signal)).catch((err: unknown) => {
              stop.abort();
              throw err;
            }),
          ),
        );
        return results.flat();
      } finally {
        stop.abort();
        stop.release();
      }
    },
  };
}

/** An input ready to send, with its estimated tokens. */
interface Input {
  text: string;
  tokens: number;
}

/** Applies `overLong` to each text; throws EmbedError `input` naming the first one rejected. */
function prepareInputs(texts: string[], config: OpenAIEmbedderConfig, where: string): Input[] {
  const maxChars = config.maxInputTokens * CHARS_PER_TOKEN;
  return texts.map((text, i) => {
    const tokens = estimateTokens(text);
    if (tokens <= config.maxInputTokens) return { text, tokens };
    if (config.overLong === 'reject') {
      throw new EmbedError(
        `${where}: input ${i} is about ${tokens} tokens (${text.length} characters / ${CHARS_PER_TOKEN}), over maxInputTokens ${config.maxInputTokens} — shorten the lens's fields or set overLong: truncate`,
        'input',
      );
    }
    // Do not cut a surrogate pair in half.
    const cut = isHighSurrogate(text.charCodeAt(maxChars - 1)) ? maxChars - 1 : maxChars;
    const truncated = text.slice(0, cut);
    return { text: truncated, tokens: estimateTokens(truncated) };
  });
}

/** Splits inputs, in order, into requests within `maxInputs` and `maxTokensPerRequest`. */
function planBatches(inputs: Input[], config: OpenAIEmbedderConfig): Array<{ texts: string[]; tokens: number }> {
  const batches: Array<{ texts: string[]; tokens: number }> = [];
  let current: { texts: string[]; tokens: number } | undefined;
  for (const input of inputs) {
    if (!current || current.texts.length >= config.maxInputs || current.tokens + input.tokens > config.maxTokensPerRequest) {
      current = { texts: [], tokens: 0 };
      batches.push(current);
    }
    current.texts.push(input.text);
    current.tokens += input.tokens;
  }
  return batches;
}

function checkConfig(config: OpenAIEmbedderConfig, base: string): void {
  const problems: string[] = [];
  let url: URL | undefined;
  try {
    url = new URL(base);
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    problems.push(`url ${JSON.stringify(base)} is not an http(s) URL`);
  }
  if (!config.model) problems.push('model is required');
  for (const name of ['dimensions', 'maxInputs', 'maxTokensPerRequest', 'maxInputTokens', 'concurrency', 'timeoutMs'] as const) {
    const value = config[name];
    if (!Number.isInteger(value) || value < 1) problems.push(`${name} must be a positive integer (got ${String(value)})`);
  }
  if (!Number.isInteger(config.maxRetries) || config.maxRetries < 0) {
    problems.push(`maxRetries must be a non-negative integer (got ${String(config.maxRetries)})`);
  }
  if (config.overLong !== 'truncate' && config.overLong !== 'reject') {
    problems.push(`overLong must be "truncate" or "reject" (got ${JSON.stringify(config.overLong)})`);
  }
  if (problems.length > 0) throw new TributaryError(`openai embedder: ${problems.join('; ')}`);
}

/** A unit-length copy of a vector (the zero vector stays zero). */
function normalize(values: number[]): Float32Array {
  let sumOfSquares = 0;
  for (const x of values) sumOfSquares += x * x;
  const scale = sumOfSquares > 0 ? 1 / Math.sqrt(sumOfSquares) : 0;
  const vector = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) vector[i] = values[i] * scale;
  return vector;
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff;
}



/**
 * The server's error message, flattened to one short line: OpenAI's `{ error: { message } }`,
 * or `{ error: "..." }` / `{ message }` / `{ detail }` as other servers send it, or plain text.
 */
function errorText(body: string): string | undefined {
  let message: unknown = body;
  try {
    const parsed = JSON.parse(body) as { error?: unknown; message?: unknown; detail?: unknown } | null;
    const error = parsed?.error;
    message =
      typeof error === 'string' ? error : ((error as { message?: unknown } | null)?.message ?? parsed?.message ?? parsed?.detail);
  } catch {
    // Not JSON: the text itself.
  }
  if (typeof message !== 'string') return undefined;
  const line = message.replace(/\s+/g, ' ').trim();
  return line === '' ? undefined : truncate(line, MAX_MESSAGE_ERROR);
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
