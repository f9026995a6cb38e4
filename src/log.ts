/**
 * Structured logging: one JSON object a line on stdout (pino), with an ISO `time`, a textual
 * `level` and, when given, the component `name`. Fields that commonly hold secrets are
 * censored wherever they appear in the first few levels of a logged object; connection URLs
 * are the callers' job: log `redactUrl(url)`, never the URL itself.
 */
import pino from 'pino';
import type { Logger } from './types.js';

/** Field names whose values never reach a log line. */
const SECRET_FIELDS = ['key', 'password', 'authorization', 'token'];

/** `key`, `*.key`, `*.*.key`, … for every secret field (pino redact paths). */
const REDACT_PATHS = SECRET_FIELDS.flatMap((field) => [field, `*.${field}`, `*.*.${field}`]);

export interface LoggerOptions {
  /** `debug`, `info`, `warn` or `error` (any pino level is accepted). */
  level: string;
  /** Component name, written as `name` on every line. */
  name?: string;
  /** Where the lines go; default stdout. */
  destination?: NodeJS.WritableStream;
}

/** Creates the root logger. `child()` adds bindings (`{ lens }`, `{ source }`) to every line. */
export function createLogger(options: LoggerOptions): Logger {
  const logger = pino(
    {
      level: options.level,
      name: options.name,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    },
    options.destination ?? pino.destination({ dest: 1, sync: true }),
  );
  return logger;
}

/**
 * Replaces the password of a connection string with `***` and keeps everything else:
 * `postgres://app:s3cret@db:5432/shop` → `postgres://app:***@db:5432/shop`. Also masks
 * `password=` and `sslpassword=` parameters (URL query strings and libpq `key=value` strings).
 * Strings that are not URLs come back unchanged apart from that.
 *
 * A database URL (postgres, postgresql, mysql, mariadb) whose password was not percent-encoded
 * may hold `/`, `?` or `#` in it, which end the authority of a URL: for those schemes the
 * password runs to the last `@` of the string, so no part of it shows.
 */
export function redactUrl(url: string): string {
  let out = url;
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(out);
  if (scheme) {
    const rest = out.slice(scheme[0].length);
    const database = /^(postgres|postgresql|mysql|mariadb)$/i.test(scheme[1]);
    // The authority ends at the first '/', '?' or '#'; its userinfo ends at its last '@'.
    const end = rest.search(/[/?#]/);
    const authority = database || end === -1 ? rest : rest.slice(0, end);
    const at = authority.lastIndexOf('@');
    const colon = authority.search(/[:/?#]/);
    if (at !== -1 && colon !== -1 && authority[colon] === ':' && colon < at) {
      out = scheme[0] + authority.slice(0, colon + 1) + '***' + rest.slice(at);
    }
  }
  // `?password=x&…`, `password=x host=…`, `password='a b'`, `sslpassword=x`
  return out.replace(/(\b(?:ssl)?password=)('(?:[^'\\]|\\.)*'|[^&\s]*)/gi, '$1***');
}
