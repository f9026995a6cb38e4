/**
 * The HTTP client of the hosted sinks and the embedders: one POST over node:http with a
 * keep-alive agent, and what its failures and Retry-After headers say. Node's global fetch
 * costs 1.2–1.5 ms of CPU per 140 KB request on loopback (a Seyn request of 500 records),
 * node:http about 0.3 ms; on the daemon's one thread that is a tenth of a payload sink's
 * throughput.
 */
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';

export interface PostOptions {
  headers: Record<string, string>;
  /** A whole body (sent with Content-Length), or a stream of chunks (chunked). */
  body: string | Uint8Array | AsyncIterable<Uint8Array>;
  /** Aborts the request (and the reading of its answer). */
  signal: AbortSignal;
  agent: http.Agent;
}

/** A keep-alive agent for `url`'s protocol. */
export function keepAliveAgent(url: URL): http.Agent {
  // Idle sockets close after 4 s (sooner when the server's Keep-Alive header says so), before a server's usual 5 s.
  const options = { keepAlive: true, timeout: 4000 };
  return url.protocol === 'https:' ? new https.Agent(options) : new http.Agent(options);
}

/**
 * Sends the POST and resolves with the answer's head as soon as it arrives (for a streamed
 * body, possibly before the body was all sent: the rest is then not sent). Rejects on a
 * network failure, an abort, or a failure of the body's stream.
 */
export function post(url: URL, options: PostOptions): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const { body } = options;
    const whole = typeof body === 'string' || body instanceof Uint8Array;
    const headers = whole ? { ...options.headers, 'content-length': String(Buffer.byteLength(body)) } : options.headers;
    const client = url.protocol === 'https:' ? https : http;
    const req = client.request(url, { method: 'POST', headers, agent: options.agent, signal: options.signal }, (res) => {
      if (!req.writableFinished) res.once('close', () => req.destroy()); // answered mid-body: the connection cannot be reused
      resolve(res);
    });
    req.on('error', reject);
    if (whole) req.end(body);
    else streamBody(req, body).catch((err: Error) => req.destroy(err));
  });
}

async function streamBody(req: http.ClientRequest, body: AsyncIterable<Uint8Array>): Promise<void> {
  for await (const chunk of body) {
    if (req.destroyed) return;
    if (!req.write(chunk)) await drained(req);
  }
  if (!req.destroyed) req.end();
}

/** Resolves once `req` can take more (or is closed). */
function drained(req: http.ClientRequest): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      req.off('drain', done);
      req.off('close', done);
      resolve();
    };
    req.on('drain', done);
    req.on('close', done);
  });
}

/** The answer's body as text: all of it, or its first `limit` bytes (the rest is not read). */
export async function readText(res: IncomingMessage, limit = Infinity): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    size += chunk.length;
    if (size >= limit) break;
  }
  return Buffer.concat(chunks).subarray(0, limit).toString('utf8');
}

/**
 * One line for a request that never produced a response, or whose answer was cut short: a
 * timeout (`signal` aborted with a TimeoutError), another abort, a network error.
 */
export function describeRequestFailure(err: unknown, signal: AbortSignal, timeoutMs: number, aborted = 'request aborted'): string {
  if ((signal.reason as { name?: unknown } | undefined)?.name === 'TimeoutError') return `request timed out after ${timeoutMs} ms`;
  if ((err as { name?: unknown } | null)?.name === 'AbortError') return aborted;
  return `request failed: ${err instanceof Error ? err.message : String(err)}`;
}

/**
 * Parses a Retry-After header: delta-seconds (`2`) or an HTTP date. Returns milliseconds
 * from now (0 for a date in the past), or undefined when missing or unparseable.
 */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  if (value == null) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  // All three HTTP-date forms start with a day name; Date.parse alone accepts too much.
  if (/^(mon|tue|wed|thu|fri|sat|sun)[a-z]*,?\s/i.test(v)) {
    const at = Date.parse(v);
    if (Number.isFinite(at)) return Math.max(0, at - now);
  }
  return undefined;
}
