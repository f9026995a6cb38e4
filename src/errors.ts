/**
 * The one errors module. Every error Tributary raises on purpose is a TributaryError:
 * a message that says what went wrong and what to do, a `retriable` flag that the retry
 * helper trusts, and an optional `cause`. Anything else (TypeError, RangeError…) is a
 * programmer error and is never retried.
 */
export class TributaryError extends Error {
  /** True when trying the same thing again later may succeed (network, 5xx, slot busy). */
  readonly retriable: boolean;

  constructor(message: string, options: { retriable?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.retriable = options.retriable ?? false;
  }
}

/** The configuration file is invalid. Carries every problem found; the CLI exits 2. */
export class ConfigError extends TributaryError {
  constructor(
    readonly file: string,
    readonly problems: Array<{ path: string; line?: number; message: string }>,
  ) {
    super(
      `${file}: invalid configuration\n` +
        problems.map((p) => `  ${p.path}${p.line ? ` (line ${p.line})` : ''}: ${p.message}`).join('\n'),
    );
  }
}

/** A source cannot run as configured (wal_level, privileges, missing key); fix and restart. */
export class SourceSetupError extends TributaryError {}

/** A transient source failure: connection lost, slot held by another process. */
export class SourceUnavailableError extends TributaryError {
  constructor(message: string, options: { cause?: unknown; standby?: boolean } = {}) {
    super(message, { retriable: true, cause: options.cause });
    this.standby = options.standby ?? false;
  }
  /** True when another process holds the source (we are a standby replica). */
  readonly standby: boolean;
}

/**
 * A sink refused or failed a request. `kind` decides what the pipeline does:
 * - `transient`: network error or 5xx; retried with backoff without limit.
 * - `rate-limited`: 429; retried after `retryAfterMs`.
 * - `rejected`: 400; the batch goes to the dead-letter store, the stream goes on.
 * - `fatal`: 401/403/404; the lens stops in `error`, its position held.
 */
export class SinkError extends TributaryError {
  constructor(
    message: string,
    readonly kind: 'transient' | 'rate-limited' | 'rejected' | 'fatal',
    readonly details: { status?: number; body?: string; retryAfterMs?: number } = {},
    cause?: unknown,
  ) {
    super(message, { retriable: kind === 'transient' || kind === 'rate-limited', cause });
  }
}

/**
 * An embedding provider failed. `input`: it rejected the inputs themselves (context length,
 * invalid input: split the batch to isolate the bad one); `transient`: 429/5xx/network
 * failures outlasted the embedder's own retries; `config`: the provider refuses every request
 * until an operator fixes the key, the URL or model, or the dimensions setting (401, 403, 404,
 * vectors of the wrong length or shape). Only `input` errors are about the inputs.
 */
export class EmbedError extends TributaryError {
  constructor(
    message: string,
    readonly kind: 'input' | 'transient' | 'config',
    readonly details: { status?: number; body?: string } = {},
    cause?: unknown,
  ) {
    super(message, { retriable: kind === 'transient', cause });
  }
}

/** The worker's queue for a lens is full: answer 429 and let the caller come back. */
export class QueueFullError extends TributaryError {
  constructor(message: string, readonly retryAfterSeconds: number) {
    super(message, { retriable: true });
  }
}

/**
 * A record was refused for one of its values (a NUL character PostgreSQL text cannot hold, a
 * value of the wrong type, a malformed id): trying again cannot help, the record goes to the
 * dead-letter store.
 */
export class RecordRejectedError extends TributaryError {}

/** A RecordRejectedError, here or in a cause: the values were refused, not the connection or the server. */
export function isRecordRejection(err: unknown): boolean {
  for (let e = err; e instanceof Error; e = e.cause) if (e instanceof RecordRejectedError) return true;
  return false;
}

/** Short one-line description of any thrown value, for logs and status. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Node's socket and DNS error codes (`err.code`): the server is unreachable or the connection dropped. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNABORTED']);

/** True for a Node socket or DNS failure, by its `err.code`: worth trying again later. */
export function isNetworkError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && NETWORK_CODES.has(code);
}

/** Node's codes for a certificate chain that does not lead to a trusted CA. */
const UNTRUSTED_CERT_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
]);

/**
 * What is wrong with the server's TLS certificate, by Node's error code: `untrusted` (no chain to
 * a trusted CA), `host` (not issued for the host name connected to), `expired` (or not yet
 * valid), or undefined for any other error. Database connectors turn it into advice.
 */
export function certificateProblem(err: unknown): 'untrusted' | 'host' | 'expired' | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return undefined;
  if (UNTRUSTED_CERT_CODES.has(code)) return 'untrusted';
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return 'host';
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return 'expired';
  return undefined;
}
