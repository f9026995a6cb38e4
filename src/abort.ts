/**
 * An abort controller tied to a long-lived signal (a sink's closing, a session's stop), for one
 * request or one wait. `AbortSignal.any([longLived, …])` would do, but on Node 20 the long-lived
 * signal keeps a trace of every signal ever combined with it (nodejs/node#55351,
 * https://github.com/nodejs/node/issues/55351): about 50 bytes a request, without bound, in a
 * daemon that runs for months. This one is unlinked by `release()`, which also cancels its
 * `timeout`.
 */
export interface LinkedAbort {
  readonly signal: AbortSignal;
  /** Aborts this one (not the parent). */
  abort(reason?: unknown): void;
  /** Aborts this one with a TimeoutError `ms` from now (instead of any earlier timeout), unless released first. */
  timeout(ms: number): void;
  /** Stops following the parent, which then holds nothing of it, and the timeout. Call it once the request or wait is over. */
  release(): void;
}

/** A controller that aborts, with the parent's reason, when `parent` (if any) does. */
export function linkedAbort(parent?: AbortSignal): LinkedAbort {
  const controller = new AbortController();
  const follow = () => controller.abort(parent?.reason);
  if (parent?.aborted) follow();
  else parent?.addEventListener('abort', follow, { once: true });
  let timer: NodeJS.Timeout | undefined;
  return {
    signal: controller.signal,
    abort: (reason) => controller.abort(reason),
    timeout(ms) {
      clearTimeout(timer);
      timer = setTimeout(() => controller.abort(new DOMException('timeout', 'TimeoutError')), ms).unref();
    },
    release() {
      clearTimeout(timer);
      parent?.removeEventListener('abort', follow);
    },
  };
}
