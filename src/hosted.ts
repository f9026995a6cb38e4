/**
 * What every hosted sink (semilayer, seyn, psykhe) shares about talking to its API: one
 * `HostedClient` per configured sink, used by every lens of that sink.
 *
 * - **Shared 429 hold.** The lenses of a sink share its key and its quota, so a 429's
 *   Retry-After holds them all: until it passes, every request of the sink fails at once as
 *   `rate-limited` with the time left (the pipeline waits that long), without calling the API.
 * - **`maxRequestsPerSecond`.** Optional pacing of the sink's requests, across its lenses.
 * - **Timeouts and closing.** Each request is aborted after `timeoutMs` (for a streamed body:
 *   `timeoutMs` after the body was sent); `close()` aborts requests in flight.
 * - **Classification.** Every failure is a SinkError of the kind the pipeline acts on:
 *
 * | response                         | kind           |
 * |----------------------------------|----------------|
 * | 2xx                              | (returned)     |
 * | 429                              | `rate-limited` (retryAfterMs from Retry-After; holds the sink) |
 * | 5xx, 408, network error, timeout | `transient`    |
 * | a status in `fatal` (401, 403…), 3xx | `fatal`    |
 * | any other 4xx (400, 413, …)      | `rejected`     |
 *
 * - **Keys never leak.** The key is removed from everything taken from a response (a server
 *   may echo it back) and never put into a message; redirects are not followed (they would
 *   carry the key elsewhere).
 */
import type { Agent, IncomingHttpHeaders } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LimitFunction } from 'p-limit';
import { linkedAbort, type LinkedAbort } from './abort.js';
import { SinkError } from './errors.js';
import { describeRequestFailure, keepAliveAgent, parseRetryAfter, post, readText } from './http-client.js';

/** How much of an error response body is read, and kept in `SinkError.details.body`. */
const MAX_READ_BODY = 16 * 1024;
const MAX_DETAILS_BODY = 2048;
/** How much of the server's error text goes into a message. */
const MAX_MESSAGE_ERROR = 300;

export interface HostedClientOptions {
  /** `seyn sink "name"`: how messages name the sink. */
  label: string;
  /** Base URL without a trailing slash. */
  url: string;
  /** The API key: only used to redact it from what servers send back. */
  key: string;
  timeoutMs: number;
  maxRequestsPerSecond?: number;
  /** What to do about each status that holds the lens in `error`, in the user's words. */
  fatal: Record<number, string>;
  /** The server's error text from an error body (its own envelope), one line; undefined if none. */
  errorText(body: string): string | undefined;
}

/** What every hosted sink's configuration has. */
export interface HostedSinkConfig {
  url: string;
  key: string;
  timeoutMs: number;
  maxRequestsPerSecond?: number;
}

/** The client of a hosted sink: its config's url, key, timeout and rate, and what its vendor's errors mean. */
export function hostedClient(label: string, config: HostedSinkConfig, vendor: Pick<HostedClientOptions, 'fatal' | 'errorText'>): HostedClient {
  const { url, key, timeoutMs, maxRequestsPerSecond } = config;
  return new HostedClient({ label, url, key, timeoutMs, maxRequestsPerSecond, ...vendor });
}

export interface HostedRequest {
  /** Who asks, for messages: `lens "deals"`. */
  where: string;
  /** Path after the base URL, e.g. `/v1/ingest`. */
  path: string;
  headers: Record<string, string>;
  /** A whole body, or a stream of chunks (sent with `duplex: 'half'`). */
  body: string | Uint8Array | AsyncIterable<Uint8Array>;
}

/** A 2xx answer. */
export interface HostedResponse {
  status: number;
  /** The body as text (redacted). */
  text: string;
}

export class HostedClient {
  private readonly closing = new AbortController();
  /** The sink is held until then (ms since the epoch) by a 429. */
  private heldUntil = 0;
  /** When the next request may start, with `maxRequestsPerSecond`. */
  private nextSlot = 0;
  private readonly agent: Agent;

  constructor(private readonly options: HostedClientOptions) {
    let parsed: URL | undefined;
    try {
      parsed = new URL(options.url);
    } catch {
      parsed = undefined;
    }
    if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) {
      throw new SinkError(`${options.label}: url ${JSON.stringify(options.url)} is not an http(s) URL`, 'fatal');
    }
    this.agent = keepAliveAgent(parsed);
  }

  /** Removes the key from text that came from elsewhere. */
  redact(text: string): string {
    return this.options.key ? text.replaceAll(this.options.key, '[redacted]') : text;
  }

  /** Sends one POST; resolves with a 2xx answer, or throws a classified SinkError. */
  async post(req: HostedRequest): Promise<HostedResponse> {
    const where = `${this.options.label}, ${req.where}`;
    await this.admit(where);
    const url = new URL(`${this.options.url}${req.path}`);
    const request = linkedAbort(this.closing.signal); // aborted by close(), or by the timeout
    let body = req.body;
    if (typeof body === 'string' || body instanceof Uint8Array) request.timeout(this.options.timeoutMs);
    else body = this.timedStream(body, request); // a streamed body: the timeout starts once it is sent
    const { signal } = request;
    try {
      const res = await post(url, { headers: req.headers, body, signal, agent: this.agent });
      const status = res.statusCode ?? 0;
      if (status >= 200 && status < 300) return { status, text: this.redact(await readText(res)) };
      const text = await readText(res, MAX_READ_BODY).catch(() => ''); // a body cut short still tells the status
      throw this.failure(where, status, res.headers, this.redact(text));
    } catch (err) {
      if (err instanceof SinkError) throw err;
      throw new SinkError(`${where}: ${describeRequestFailure(err, signal, this.options.timeoutMs, 'request aborted: the sink is closing')} (POST ${url})`, 'transient', {}, err);
    } finally {
      request.release();
    }
  }

  /** Aborts requests in flight; later requests fail as `fatal`. */
  close(): void {
    this.closing.abort();
    this.agent.destroy();
  }

  /** Waits for the rate limit; refuses at once while the sink is closed or held by a 429. */
  private async admit(where: string): Promise<void> {
    if (this.closing.signal.aborted) throw new SinkError(`${where}: the sink is closed`, 'fatal');
    const held = this.heldUntil - Date.now();
    if (held > 0) {
      throw new SinkError(`${where}: the API rate-limited this sink (a 429 on a lens sharing its key); retry after ${held} ms`, 'rate-limited', { status: 429, retryAfterMs: held });
    }
    const rate = this.options.maxRequestsPerSecond;
    if (!rate) return;
    const now = Date.now();
    const slot = Math.max(now, this.nextSlot);
    this.nextSlot = slot + 1000 / rate;
    if (slot > now) await sleep(slot - now, undefined, { signal: this.closing.signal }).catch(() => undefined);
  }

  /** Passes a streamed body through, starting the response timeout once it ended. */
  private async *timedStream(body: AsyncIterable<Uint8Array>, request: LinkedAbort): AsyncGenerator<Uint8Array> {
    yield* body;
    request.timeout(this.options.timeoutMs);
  }

  /** The SinkError of a non-2xx answer (a 429 also holds the sink). */
  private failure(where: string, status: number, headers: IncomingHttpHeaders, text: string): SinkError {
    const details: SinkError['details'] = { status, body: truncate(text, MAX_DETAILS_BODY) };
    const serverError = this.options.errorText(text);
    const head = `${where}: HTTP ${status}${serverError ? ` (${truncate(serverError, MAX_MESSAGE_ERROR)})` : ''}`;
    if (status === 429) {
      const retryAfterMs = parseRetryAfter(headers['retry-after']);
      if (retryAfterMs !== undefined) this.heldUntil = Math.max(this.heldUntil, Date.now() + retryAfterMs);
      const wait = retryAfterMs === undefined ? 'no Retry-After given' : `retry after ${retryAfterMs} ms (every lens of this sink waits)`;
      return new SinkError(`${head}: rate limited by the API, ${wait}`, 'rate-limited', { ...details, retryAfterMs });
    }
    if (status >= 500 || status === 408) return new SinkError(`${head}: the API failed, will retry`, 'transient', details);
    const hint = this.options.fatal[status];
    if (hint) return new SinkError(`${head}: ${hint}`, 'fatal', details);
    if (status >= 300 && status < 400) {
      const location = this.redact(headers.location ?? '(no Location)');
      return new SinkError(`${head}: the API redirected to ${location} — set the sink's \`url\` to the final address`, 'fatal', details);
    }
    return new SinkError(`${head}: the API rejected the request`, 'rejected', details);
  }
}

/**
 * Requests a hosted sink has in flight at once, across its lenses (a seyn batch's requests,
 * psykhe's inserts): each sink runs them through one `pLimit(CONCURRENT_REQUESTS)`.
 */
export const CONCURRENT_REQUESTS = 4;

/**
 * The requests of one delivery (a batch): each runs through the sink's limit, and at most
 * CONCURRENT_REQUESTS of them are started or waiting, so a delivery holds that many requests'
 * bodies at most. After a failure no new request starts; `check` throws the first failure.
 * A delivery waits for `settled` before it returns or throws, so a retry never overlaps it.
 */
export class InFlight {
  private readonly running = new Set<Promise<void>>();
  private failure: { err: unknown } | undefined;

  constructor(private readonly limit: LimitFunction) {}

  /** Starts `task` once fewer than CONCURRENT_REQUESTS are in flight; throws an earlier failure instead. */
  async add(task: () => Promise<void>): Promise<void> {
    while (this.running.size >= CONCURRENT_REQUESTS && !this.failure) await Promise.race(this.running);
    this.check();
    const run: Promise<void> = this.limit(task)
      .catch((err: unknown) => {
        this.failure ??= { err };
      })
      .finally(() => this.running.delete(run));
    this.running.add(run);
  }

  /** Waits for every request started (they never reject). */
  async settled(): Promise<void> {
    await Promise.all(this.running);
  }

  check(): void {
    if (this.failure) throw this.failure.err;
  }
}

/** Flattens a server's message to one line. */
export function oneLine(text: unknown): string | undefined {
  return typeof text === 'string' && text !== '' ? text.replace(/\s+/g, ' ').trim() : undefined;
}

/** A vendor's error object as `CODE: message` (either part alone when the other is missing). */
export function codeAndMessage(error: { code?: unknown; message?: unknown } | null | undefined): string | undefined {
  const code = oneLine(error?.code);
  const message = oneLine(error?.message);
  return code && message ? `${code}: ${message}` : (code ?? message);
}

/** Parses a JSON body; undefined when it is not JSON. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** A request body written as UTF-8 straight into one growing buffer, with no joined string. */
export class BodyBuffer {
  private buffer: Buffer;
  /** Bytes written. */
  length = 0;

  constructor(capacity = 64 * 1024) {
    this.buffer = Buffer.allocUnsafe(capacity);
  }

  /** Appends `text`. */
  write(text: string): void {
    const most = this.length + text.length * 3; // UTF-8 takes at most 3 bytes a UTF-16 unit
    if (most > this.buffer.length) this.grow(most);
    this.length += this.buffer.write(text, this.length);
  }

  /** Drops what was written after `length` bytes. */
  truncate(length: number): void {
    this.length = length;
  }

  /** The bytes written (a view, not a copy). */
  bytes(): Buffer {
    return this.buffer.subarray(0, this.length);
  }

  private grow(least: number): void {
    const next = Buffer.allocUnsafe(Math.max(least, this.buffer.length * 2));
    this.buffer.copy(next, 0, 0, this.length);
    this.buffer = next;
  }
}
