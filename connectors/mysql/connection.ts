/**
 * How a MySQL/MariaDB url becomes mysql2's connection options, for the row reader's pool, the
 * binlog connector's connections and zongji's (which takes mysql2 options too). TLS parameters
 * are read the way MySQL clients read them and removed from the url before mysql2 sees it:
 * - `ssl-mode`: DISABLED (no TLS), PREFERRED and REQUIRED (TLS without verifying the server;
 *   mysql2 cannot fall back to plain text, so PREFERRED fails like REQUIRED against a server
 *   without TLS), VERIFY_CA (the chain), VERIFY_IDENTITY (the chain and the host name);
 *   without `ssl-mode`: VERIFY_CA when `ssl-ca` is given, else no TLS;
 * - `ssl-ca`: the CA file (without it the verify modes trust Node's bundled roots);
 * - `ssl-cert`, `ssl-key`: a client certificate.
 * Files are read here: a missing one is a SourceSetupError naming the parameter.
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions, SslOptions } from 'mysql2';
import { SourceSetupError, describeError } from '../../src/errors.js';

export const MYSQL_SSL_MODES = ['DISABLED', 'PREFERRED', 'REQUIRED', 'VERIFY_CA', 'VERIFY_IDENTITY'] as const;
export type MysqlSslMode = (typeof MYSQL_SSL_MODES)[number];

const TLS_PARAMS = ['ssl-mode', 'ssl-ca', 'ssl-cert', 'ssl-key'];

/** mysql2 options (`uri` without the TLS parameters, and `ssl`) for `url`, plus `extra`. */
export function mysqlConnection<T extends ConnectionOptions>(url: string, extra: T): T & { uri: string; ssl?: SslOptions } {
  const parsed = new URL(url);
  const params = new Map<string, string>();
  for (const key of TLS_PARAMS) {
    const value = parsed.searchParams.get(key);
    if (value !== null) params.set(key, value);
    parsed.searchParams.delete(key);
  }
  const ssl = mysqlSsl(params);
  return { ...extra, uri: parsed.toString(), ...(ssl ? { ssl } : {}) };
}

/** The `ssl-mode` of a url (see the module comment for the default). */
function mysqlSslMode(params: Map<string, string>): MysqlSslMode {
  const mode = (params.get('ssl-mode') ?? (params.has('ssl-ca') ? 'VERIFY_CA' : 'DISABLED')).toUpperCase();
  if (!(MYSQL_SSL_MODES as readonly string[]).includes(mode)) {
    throw new SourceSetupError(`ssl-mode=${params.get('ssl-mode')} in the MySQL url: expected one of ${MYSQL_SSL_MODES.join(', ')}`);
  }
  return mode as MysqlSslMode;
}

function mysqlSsl(params: Map<string, string>): SslOptions | undefined {
  const mode = mysqlSslMode(params);
  if (mode === 'DISABLED') return undefined;
  const ssl: SslOptions = { rejectUnauthorized: mode === 'VERIFY_CA' || mode === 'VERIFY_IDENTITY', verifyIdentity: mode === 'VERIFY_IDENTITY' };
  const file = (key: string) => {
    const path = params.get(key);
    if (path === undefined) return undefined;
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      throw new SourceSetupError(`${key}=${path} in the MySQL url: cannot read the file (${(err as { code?: string }).code ?? describeError(err)})`);
    }
  };
  const [ca, cert, key] = [file('ssl-ca'), file('ssl-cert'), file('ssl-key')];
  if (ca && ssl.rejectUnauthorized) ssl.ca = ca;
  if (cert) ssl.cert = cert;
  if (key) ssl.key = key;
  return ssl;
}
