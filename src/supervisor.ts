/**
 * The one connection supervisor, beside `retry()` (src/retry.ts): `retry()` runs one call
 * until it succeeds; `supervise()` keeps one long-running connection alive. Every source
 * connector that holds a connection (a replication stream, a changelog reader, a binlog dump,
 * a polling schedule; later Kinesis and Kafka consumers) runs it through here:
 *
 *     connect ──► streaming ──► ends or fails ──► classify ──► retriable: wait, connect again
 *                                                          └─► permanent: `error`, stop for good
 *
 * - A session (`options.session`) is one connection from connect to its end. It calls
 *   `streaming()` once the connection delivers (and may call it again later, e.g. after every
 *   successful poll): that reports `streaming`, resets the backoff, and the first time
 *   resolves `started`. It resolves when the connection ended, throws when it failed, and must
 *   end its connection when `signal` aborts (the supervisor is stopping).
 * - A failure is classified by `options.classify` (e.g. `classifyPgError`) into a
 *   TributaryError, and only its `retriable` flag decides: the message text never does.
 *   - retriable: state `reconnecting` with the error's message, then a jittered exponential
 *     wait (`backoffDelay`, between `initialDelayMs` and `maxDelayMs`) and a new session;
 *   - SourceUnavailableError with `standby` (another process holds the source): state
 *     `standby`, and a new try every `standbyDelayMs`;
 *   - permanent, before the first `streaming()`: `started` rejects with it, so a setup problem
 *     still fails the daemon's start;
 *   - permanent, after a start: state `error` with the message, and the supervisor stops for
 *     good: `stopped` resolves with the error.
 *   A session that ends without an error (and without `stop`) counts as a retriable loss.
 * - `stop()` aborts the wait or the session's signal and resolves once the session ended.
 *
 * Learning that a connection stopped for good: `stopped` resolves with the permanent error
 * (or with undefined after `stop()`), after the `error` state was reported through
 * `options.state`. Connectors pass it on as `SourceConnector.stopped` (src/types.ts), so the
 * daemon can await it and fail `/healthz` (or exit) when a source stopped for good; until the
 * daemon wires that in, the `error` state with its message shows in `tributary status`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { SourceUnavailableError, TributaryError, describeError } from './errors.js';
import { backoffDelay } from './retry.js';
import type { Logger, SourceState } from './types.js';

/** First reconnect delay, ms: the jittered delays grow from here... */
export const RECONNECT_INITIAL_MS = 500;
/** ...up to this, ms. */
export const RECONNECT_MAX_MS = 10_000;
/** A standby retries taking over the source this often, ms (not backed off: failover should be quick). */
export const STANDBY_RETRY_MS = 2_000;

/** What a session gets: the stop signal, and the call that says the connection streams. */
export interface Session {
  /** Aborted by `stop()`: end the connection and return. */
  signal: AbortSignal;
  /** The connection delivers: report `streaming`, reset the backoff, resolve `started` (first time). */
  streaming(): void;
  /** The consecutive failures before this session (0 after a `streaming()`), for logs. */
  attempt: number;
}

export interface SupervisorOptions {
  /** One connection from connect to its end (see the file comment). */
  session(session: Session): Promise<void>;
  /** A failure as a TributaryError; its `retriable` flag decides. Default: TributaryErrors as they are, anything else permanent. */
  classify?(err: unknown): TributaryError;
  /** Connection state, e.g. the SourceHandler's `state`. */
  state(state: SourceState, detail?: string): void;
  log: Logger;
  /** Backoff bounds, ms (defaults RECONNECT_INITIAL_MS, RECONNECT_MAX_MS) and the standby interval (STANDBY_RETRY_MS). */
  initialDelayMs?: number;
  maxDelayMs?: number;
  standbyDelayMs?: number;
  /** Report `connecting` before the first session (default true). */
  reportConnecting?: boolean;
}

export interface Supervisor {
  /**
   * Resolves at the first `streaming()`. Rejects with the classified error when a session
   * fails permanently before that, or when `stop()` comes first.
   */
  readonly started: Promise<void>;
  /**
   * Resolves once the supervisor ran its last session: with the permanent error that stopped
   * it (state `error`), or undefined after `stop()`. Never rejects.
   */
  readonly stopped: Promise<TributaryError | undefined>;
  /** Ends the wait or the current session; resolves once it ended. */
  stop(): Promise<void>;
}

/** Starts supervising at once (see the file comment). */
export function supervise(options: SupervisorOptions): Supervisor {
  const classify = options.classify ?? defaultClassify;
  const abort = new AbortController();
  let resolveStarted!: () => void;
  let rejectStarted!: (err: unknown) => void;
  const started = new Promise<void>((resolve, reject) => ((resolveStarted = resolve), (rejectStarted = reject)));
  started.catch(() => {}); // a caller that never awaits it must not crash the process
  let isStarted = false;
  let attempt = 0;

  const streaming = () => {
    if (abort.signal.aborted) return;
    if (attempt > 0 || !isStarted) options.state('streaming');
    attempt = 0;
    if (!isStarted) {
      isStarted = true;
      resolveStarted();
    }
  };

  /** Waits `ms` unless stopped; false once stopped. */
  const wait = (ms: number) => sleep(ms, true, { signal: abort.signal }).catch(() => false);

  async function loop(): Promise<TributaryError | undefined> {
    if (options.reportConnecting !== false) options.state('connecting');
    while (!abort.signal.aborted) {
      let error: TributaryError;
      try {
        await options.session({ signal: abort.signal, streaming, attempt });
        if (abort.signal.aborted) break;
        error = new SourceUnavailableError('the connection ended');
      } catch (err) {
        if (abort.signal.aborted) break;
        error = classify(err);
      }
      if (!error.retriable) return fail(error);
      const standby = error instanceof SourceUnavailableError && error.standby;
      const delayMs = standby
        ? (options.standbyDelayMs ?? STANDBY_RETRY_MS)
        : backoffDelay(attempt, options.initialDelayMs ?? RECONNECT_INITIAL_MS, options.maxDelayMs ?? RECONNECT_MAX_MS);
      attempt++;
      options.state(standby ? 'standby' : 'reconnecting', error.message);
      options.log.warn({ err: error.message, attempt, retryInMs: Math.round(delayMs) }, standby ? 'the source is in use elsewhere; standing by' : 'connection failed; reconnecting');
      if (!(await wait(delayMs))) break;
    }
    rejectStarted(new TributaryError('stopped before the connection streamed'));
    return undefined;
  }

  function fail(error: TributaryError): TributaryError {
    if (!isStarted) {
      rejectStarted(error);
    } else {
      options.state('error', error.message);
      options.log.error({ err: error.message }, 'connection failed for good; fix the cause and restart');
    }
    return error;
  }

  const stopped = loop().catch((err) => fail(new TributaryError(`supervisor failed: ${describeError(err)}`, { cause: err })));
  return {
    started,
    stopped,
    async stop() {
      abort.abort();
      await stopped;
    },
  };
}

function defaultClassify(err: unknown): TributaryError {
  return err instanceof TributaryError ? err : new TributaryError(describeError(err), { cause: err });
}

