/**
 * A loopback OpenAI-compatible embeddings API for tests and benchmarks: a real HTTP server on
 * 127.0.0.1 (random free port) that answers `POST /v1/embeddings` the way OpenAI does, records
 * every request, and can be told to fail, rate-limit or be slow.
 *
 * Default behaviour, in order:
 * 1. a scripted response (`script(...)`), if any is queued: each request takes the next one;
 * 2. any other route → 404; with `key` set, a missing or wrong `Authorization: Bearer KEY` →
 *    401 (whose message echoes the key it got, to prove clients never repeat it);
 * 3. bad JSON, no `model`, `input` not a non-empty string or string array, more than 2048
 *    inputs, an `encoding_format` other than `float`, bad `dimensions` → 400;
 * 4. the first input for which the `failOn` predicate returns a response → that response;
 * 5. after `delayMs`, 200 `{ object: 'list', data: [{ object, index, embedding }], model, usage }`.
 *
 * Vectors are the `hash` embedder's vectors of each input, scaled by 3 (so clients must
 * normalise them), of the request's `dimensions` or else `dimensions` (default 16). Usage
 * counts `ceil(chars / 4)` (at least 1) tokens per input. Errors use OpenAI's shape,
 * `{ error: { message, type, param, code } }`.
 */
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { createHashEmbedder } from '../../src/worker/embedders/hash.js';
import type { Embedder } from '../../src/worker/types.js';
import { send, serveLoopback } from './loopback.js';

const MAX_INPUTS = 2048;

export interface OpenAIServerOptions {
  /** Required bearer key; default: no key needed. */
  key?: string;
  /** Vector length when the request does not ask for `dimensions` (default 16). */
  dimensions?: number;
  /** Delay before every answer, ms (default 0). */
  delayMs?: number;
}

/** What the server may be told to answer instead of the default. */
export interface FakeResponse {
  status: number;
  headers?: Record<string, string>;
  /** A string is sent as is; anything else as JSON; undefined sends no body. */
  body?: unknown;
  /** Wait this long before answering, ms (default: the server's `delayMs` for 200s, else 0). */
  delayMs?: number;
}

/** One request as it arrived, whatever the answer was. */
export interface EmbeddingsRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body (undefined when it was not JSON). */
  body: unknown;
  /** The body's `input` as a list (empty when it had none). */
  inputs: string[];
  /** ms since the epoch. */
  receivedAt: number;
  /** The status answered and when (set once answered). */
  status?: number;
  answeredAt?: number;
}

export interface OpenAIServer {
  /** `http://127.0.0.1:PORT/v1`: what an embedder's `url` should be. */
  url: string;
  port: number;
  /** Every request, in arrival order. */
  requests: EmbeddingsRequest[];
  /** Requests being handled right now, and the most there ever were at once. */
  readonly inFlight: number;
  readonly maxInFlight: number;
  /** Vector length when a request does not ask for one (settable). */
  dimensions: number;
  /** Delay before every successful answer, ms (settable). */
  delayMs: number;
  /** Leave `usage` out of responses (settable, default false). */
  omitUsage: boolean;
  /** Return `data` in reverse order (settable, default false): clients must order by `index`. */
  reverseData: boolean;
  /** Fail requests that contain an input for which `predicate` returns a response. */
  failOn(predicate: ((input: string) => FakeResponse | undefined) | undefined): void;
  /** Queues responses: each later request takes the next one instead of the default. */
  script(...responses: FakeResponse[]): void;
  /** Forgets requests, scripts, failOn and the in-flight maximum; restores the settings. */
  reset(): void;
  close(): Promise<void>;
}

/** An OpenAI-shaped error response. */
export function openAIError(status: number, message: string, code: string | null = null, headers?: Record<string, string>): FakeResponse {
  const type = status === 429 ? 'rate_limit_error' : status >= 500 ? 'server_error' : 'invalid_request_error';
  return { status, headers, body: { error: { message, type, param: null, code } } };
}

/** Starts a loopback OpenAI-compatible embeddings server. */
export async function startOpenAIServer(options: OpenAIServerOptions = {}): Promise<OpenAIServer> {
  const embedders = new Map<number, Embedder>();
  const queue: FakeResponse[] = [];
  let predicate: ((input: string) => FakeResponse | undefined) | undefined;
  let inFlight = 0;
  let maxInFlight = 0;

  function embedderOf(dimensions: number): Embedder {
    let embedder = embedders.get(dimensions);
    if (!embedder) embedders.set(dimensions, (embedder = createHashEmbedder({ dimensions })));
    return embedder;
  }

  /** The default behaviour: validate, maybe fail, embed. */
  async function answer(req: EmbeddingsRequest): Promise<FakeResponse> {
    const scripted = queue.shift();
    if (scripted) return scripted;
    if (req.method !== 'POST' || req.path.split('?')[0] !== '/v1/embeddings') {
      return openAIError(404, `Invalid URL (${req.method} ${req.path})`, 'unknown_url');
    }
    if (options.key !== undefined) {
      const auth = req.headers.authorization ?? '';
      if (auth !== `Bearer ${options.key}`) {
        const given = auth.startsWith('Bearer ') ? auth.slice(7) : '';
        const message = given
          ? `Incorrect API key provided: ${given}. You can find your API key at https://platform.openai.com/account/api-keys.`
          : "You didn't provide an API key.";
        return openAIError(401, message, 'invalid_api_key');
      }
    }
    const body = req.body as { model?: unknown; input?: unknown; encoding_format?: unknown; dimensions?: unknown } | undefined;
    if (body === undefined || body === null || typeof body !== 'object') {
      return openAIError(400, 'We could not parse the JSON body of your request.');
    }
    if (typeof body.model !== 'string' || body.model === '') return openAIError(400, "'model' is a required property");
    const input = body.input;
    const valid = typeof input === 'string' || (Array.isArray(input) && input.length > 0 && input.every((x) => typeof x === 'string'));
    if (!valid) return openAIError(400, "'input' must be a string or a non-empty array of strings");
    if (req.inputs.length > MAX_INPUTS) return openAIError(400, `'input' must have at most ${MAX_INPUTS} items`);
    if (body.encoding_format !== undefined && body.encoding_format !== 'float') {
      return openAIError(400, `this server only speaks encoding_format 'float'`);
    }
    if (body.dimensions !== undefined && (!Number.isInteger(body.dimensions) || (body.dimensions as number) < 1)) {
      return openAIError(400, "'dimensions' must be a positive integer");
    }
    for (const text of req.inputs) {
      const failure = predicate?.(text);
      if (failure) return failure;
    }

    const dimensions = (body.dimensions as number | undefined) ?? api.dimensions;
    const vectors = await embedderOf(dimensions).embed(req.inputs);
    const data = vectors.map((vector, index) => ({ object: 'embedding', index, embedding: Array.from(vector, (x) => x * 3) }));
    if (api.reverseData) data.reverse();
    const tokens = req.inputs.reduce((sum, text) => sum + Math.max(1, Math.ceil(text.length / 4)), 0);
    const response: Record<string, unknown> = { object: 'list', data, model: body.model };
    if (!api.omitUsage) response.usage = { prompt_tokens: tokens, total_tokens: tokens };
    return { status: 200, body: response, delayMs: api.delayMs };
  }

  async function handle(raw: Buffer, method: string, url: string, headers: IncomingHttpHeaders, res: ServerResponse) {
    let body: unknown;
    try {
      body = raw.length === 0 ? undefined : JSON.parse(raw.toString('utf8'));
    } catch {
      body = undefined;
    }
    const input = (body as { input?: unknown } | undefined)?.input;
    const req: EmbeddingsRequest = {
      method,
      path: url,
      headers,
      body,
      inputs: typeof input === 'string' ? [input] : Array.isArray(input) ? input.filter((x): x is string => typeof x === 'string') : [],
      receivedAt: Date.now(),
    };
    api.requests.push(req);
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    try {
      const response = await answer(req);
      // unref: a slow answer nobody waits for any more does not keep the process alive.
      if (response.delayMs) await new Promise((resolve) => setTimeout(resolve, response.delayMs).unref());
      req.status = response.status;
      req.answeredAt = Date.now();
      send(res, response);
    } finally {
      inFlight--;
    }
  }

  const server = await serveLoopback(handle, (err) => openAIError(500, `test server failure: ${String(err)}`));
  const port = server.port;

  const api: OpenAIServer = {
    url: `http://127.0.0.1:${port}/v1`,
    port,
    requests: [],
    get inFlight() {
      return inFlight;
    },
    get maxInFlight() {
      return maxInFlight;
    },
    dimensions: options.dimensions ?? 16,
    delayMs: options.delayMs ?? 0,
    omitUsage: false,
    reverseData: false,
    failOn(fn) {
      predicate = fn;
    },
    script(...responses) {
      queue.push(...responses);
    },
    reset() {
      api.requests.length = 0;
      queue.length = 0;
      predicate = undefined;
      maxInFlight = inFlight;
      api.dimensions = options.dimensions ?? 16;
      api.delayMs = options.delayMs ?? 0;
      api.omitUsage = false;
      api.reverseData = false;
    },
    close: server.close,
  };
  return api;
}

