/** Helpers for the HTTP clients: the hosted sinks (over node:http, src/http-post.ts) and the embedders (over fetch). */

/** One line for a request (fetch or node:http) that never produced a response. */
export function describeFetchFailure(err: unknown, timeoutMs: number, aborted = 'request aborted'): string {
  const name = (err as { name?: unknown } | null)?.name;
  if (name === 'TimeoutError') return `request timed out after ${timeoutMs} ms`;
  if (name === 'AbortError') return aborted;
  // undici reports `TypeError: fetch failed` with the real reason (ECONNREFUSED…) as cause.
  const cause = (err as { cause?: unknown } | null)?.cause;
  const reason = cause instanceof Error ? cause.message : err instanceof Error ? err.message : String(err);
  return `request failed: ${reason}`;
}

/** Reads at most `limit` bytes of a response body as text; '' when it cannot be read. */
export async function readLimited(res: Response, limit: number): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < limit) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } catch {
    // A body cut short still tells us the status; keep what arrived.
  } finally {
    reader.cancel().catch(() => undefined);
  }
  return Buffer.concat(chunks).subarray(0, limit).toString('utf8');
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
