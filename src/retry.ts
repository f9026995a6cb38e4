import { setTimeout as sleep } from 'node:timers/promises';
import { TributaryError } from './errors.js';

export interface RetryOptions {
  /** First delay in ms (default 200). */
  initialMs?: number;
  /** Largest delay in ms (default 30 s). */
  maxMs?: number;
  /** Give up after this many attempts (default: never). */
  maxAttempts?: number;
  /** Stop waiting and rethrow the last error once this signal aborts. */
  signal?: AbortSignal;
  /**
   * Decides whether `err` is worth another attempt. Default: only TributaryErrors that
   * say they are retriable; programmer errors are never retried.
   */
  retriable?: (err: unknown) => boolean;
  /** The delay a specific error asks for (a 429's Retry-After); overrides the backoff. */
  delayFor?: (err: unknown) => number | undefined;
  /** Called before each wait, for logs and status. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
}

/** Full-jitter exponential backoff: a random delay in [0, min(max, initial * 2^attempt)]. */
export function backoffDelay(attempt: number, initialMs = 200, maxMs = 30_000): number {
  const ceiling = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.max(initialMs / 2, Math.random() * ceiling);
}

export function isRetriable(err: unknown): boolean {
  return err instanceof TributaryError && err.retriable;
}

/**
 * The one retry helper: runs `fn` until it succeeds, the error is not retriable, the
 * attempts run out or the signal aborts. Waits use jittered exponential backoff.
 */
export async function retry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions = {}): Promise<T> {
  const retriable = options.retriable ?? isRetriable;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (!retriable(err) || options.signal?.aborted) throw err;
      if (options.maxAttempts !== undefined && attempt >= options.maxAttempts) throw err;
      const delayMs = options.delayFor?.(err) ?? backoffDelay(attempt - 1, options.initialMs, options.maxMs);
      options.onRetry?.(err, attempt, delayMs);
      try {
        await sleep(delayMs, undefined, { signal: options.signal });
      } catch {
        throw err;
      }
    }
  }
}
