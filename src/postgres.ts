/**
 * The one Postgres helpers module: how a connection URL becomes node-postgres's configuration
 * (libpq's sslmode semantics), SQL quoting, and what a node-postgres error means
 * (classification by SQLSTATE and Node error codes, never by the message text), and wrapping
 * one into a TributaryError whose message says what to do. Used by the Postgres connectors,
 * the Postgres state store and the pgvector index.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { formatTableName, splitTableName } from './table-name.js';
import { SourceSetupError, SourceUnavailableError, TributaryError, certificateProblem, describeError, isNetworkError } from './errors.js';
import { PgSocket, PgTlsRefusedError, authMethodAsked, type PgTlsPlan, type SslMode } from './pg-socket.js';

export type { SslMode } from './pg-socket.js';

const SSL_MODES: readonly SslMode[] = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'];

/** URL parameters Tributary reads itself and removes before node-postgres sees the URL. */
const TLS_PARAMS = ['sslmode', 'sslrootcert', 'sslcert', 'sslkey', 'sslpassword', 'sslnegotiation', 'ssl', 'uselibpqcompat'];

/**
 * The node-postgres configuration of `url` (plus `extra`: application_name, pool size, …) with
 * libpq's meaning of the TLS parameters, for every Postgres connection Tributary opens:
 * - `sslmode` (else PGSSLMODE, else `prefer`): see src/pg-socket.ts for the negotiation;
 *   `require` encrypts without verifying, unless a root certificate is given (or
 *   ~/.postgresql/root.crt exists): then it verifies the chain as `verify-ca` does;
 *   `verify-ca` verifies the chain, `verify-full` also the host name;
 * - `sslrootcert` (PGSSLROOTCERT): the CA file; `system` trusts Node's bundled roots and implies
 *   `verify-full`; the verify modes default to ~/.postgresql/root.crt and fail without one;
 * - `sslcert`, `sslkey` (PGSSLCERT, PGSSLKEY): a client certificate; `sslpassword`: its key's passphrase;
 * - `sslnegotiation=direct`: TLS from the first byte (PostgreSQL 17+).
 * Files are read here: a missing one is a SourceSetupError naming the parameter (never its content).
 */
export function pgConnection(url: string, extra: Omit<pg.PoolConfig, 'connectionString' | 'ssl' | 'stream'> = {}): pg.PoolConfig {
  const { rest, params } = splitTlsParams(url);
  const plan = tlsPlan(params);
  return { ...extra, connectionString: rest, ssl: false, stream: () => new PgSocket(plan) };
}

/** `url` without its TLS parameters, and those parameters (decoded). */
function splitTlsParams(url: string): { rest: string; params: Map<string, string> } {
  const q = url.indexOf('?');
  if (q === -1) return { rest: url, params: new Map() };
  const params = new Map<string, string>();
  const kept = url
    .slice(q + 1)
    .split('&')
    .filter((pair) => {
      const [key, value = ''] = pair.split('=');
      if (!TLS_PARAMS.includes(key)) return true;
      params.set(key, decodeURIComponent(value.replace(/\+/g, ' ')));
      return false;
    });
  return { rest: url.slice(0, q) + (kept.length ? `?${kept.join('&')}` : ''), params };
}

function tlsPlan(params: Map<string, string>): PgTlsPlan {
  const setting = (key: string) => params.get(key) || process.env[`PG${key.toUpperCase()}`] || undefined;
  const rootcert = setting('sslrootcert');
  const mode = (setting('sslmode') ?? (rootcert === 'system' ? 'verify-full' : 'prefer')) as SslMode;
  if (!SSL_MODES.includes(mode)) throw new SourceSetupError(`sslmode=${mode} in the Postgres url: expected one of ${SSL_MODES.join(', ')}`);
  if (rootcert === 'system' && mode !== 'verify-full') {
    throw new SourceSetupError(`sslrootcert=system in the Postgres url needs sslmode=verify-full (it is ${mode}), as with libpq`);
  }
  const direct = setting('sslnegotiation') === 'direct';
  if (direct && !['require', 'verify-ca', 'verify-full'].includes(mode)) {
    throw new SourceSetupError(`sslnegotiation=direct in the Postgres url needs sslmode=require, verify-ca or verify-full (it is ${mode})`);
  }
  const options: PgTlsPlan['options'] = { rejectUnauthorized: false };
  const cert = setting('sslcert');
  const key = setting('sslkey');
  if (cert) options.cert = readTlsFile('sslcert', cert);
  if (key) options.key = readTlsFile('sslkey', key);
  if (params.get('sslpassword')) options.passphrase = params.get('sslpassword');
  if (mode === 'disable' || mode === 'allow' || mode === 'prefer') return { mode, direct, options };
  const ca = rootCertificate(mode, rootcert);
  if (ca === undefined) return { mode, direct, options }; // require without a root certificate: encrypt only
  options.rejectUnauthorized = true;
  if (ca !== 'system') options.ca = ca;
  if (mode !== 'verify-full') options.checkServerIdentity = () => undefined;
  return { mode, direct, options };
}

/** The CA certificates to verify against: the file's text, `system`, or undefined for `require` without one. */
function rootCertificate(mode: SslMode, rootcert: string | undefined): string | undefined {
  if (rootcert === 'system') return 'system';
  if (rootcert) return readTlsFile('sslrootcert', rootcert);
  const fallback = join(homedir(), '.postgresql', 'root.crt');
  try {
    return readFileSync(fallback, 'utf8');
  } catch {
    if (mode === 'require') return undefined;
    throw new SourceSetupError(
      `sslmode=${mode} in the Postgres url verifies the server's certificate, but no CA file was given and ${fallback} does not exist: ` +
        `add sslrootcert=/path/to/ca.pem (your provider's CA bundle), or sslrootcert=system for a publicly trusted certificate, ` +
        'or use sslmode=require to encrypt without verifying.',
    );
  }
}

function readTlsFile(param: string, path: string): string {
  try {
    return readFileSync(path.replace(/^~(?=\/)/, homedir()), 'utf8');
  } catch (err) {
    throw new SourceSetupError(`${param}=${path} in the Postgres url: cannot read the file (${(err as { code?: string }).code ?? describeError(err)})`);
  }
}

/** `name` as a quoted SQL identifier: `"my ""odd"" schema"`. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * `values` as a Postgres text[] literal (`{"a","b \\"c\\""}`): a parameter the driver passes on as
 * it is, where it would escape a large array element by element.
 */
export function textArrayLiteral(values: string[]): string {
  const plain = !values.some((v) => v.includes('"') || v.includes('\\')); // the common case: nothing to escape
  if (plain) return values.length ? `{"${values.join('","')}"}` : '{}';
  return `{${values.map((v) => `"${v.replace(/["\\]/g, '\\$&')}"`).join(',')}}`;
}

/**
 * A canonical table name (`public.products`, `"Sales"."Order Items"`: src/table-name.ts) as a
 * quoted SQL name: `"public"."products"`, `"Sales"."Order Items"`.
 */
export function quoteTable(table: string): string {
  const { schema, name } = splitTableName(table, '"');
  return `${quoteIdent(schema)}.${quoteIdent(name)}`;
}

/** The canonical name of a table the server names by schema and name (a Relation message, a catalog row). */
export function pgTableName(schema: string, name: string): string {
  return formatTableName({ schema, name }, '"');
}

/** SQLSTATE codes Tributary reacts to by name. */
export const SQLSTATE = {
  objectInUse: '55006',
  invalidPassword: '28P01',
  invalidAuthorization: '28000',
  invalidCatalogName: '3D000',
  insufficientPrivilege: '42501',
  undefinedTable: '42P01',
  undefinedColumn: '42703',
  invalidSchemaName: '3F000',
} as const;

/**
 * SQLSTATE classes (and codes) worth retrying: 08 connection exception, 53 insufficient
 * resources, 57 operator intervention (shutdown, cancel), 58 system error, and the two
 * transaction conflicts 40001 (serialization) and 40P01 (deadlock).
 */
const RETRIABLE_CLASSES = ['08', '53', '57', '58'];
const RETRIABLE_CODES = ['40001', '40P01'];

/** The SQLSTATE of a server error, or undefined when `err` did not come from the server. */
export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return err instanceof pg.DatabaseError && typeof code === 'string' ? code : undefined;
}

/**
 * What an error from node-postgres means:
 * - `connection`: the connection failed or was lost (Node network codes; or the driver's own
 *   connection errors, see below): try again later;
 * - `retriable`: a server error whose SQLSTATE class is transient (see RETRIABLE_CLASSES);
 * - `permanent`: any other server error (syntax, privileges, missing objects), and a TLS
 *   failure no retry fixes (an untrusted certificate, a server that refuses TLS);
 * - `unknown`: anything else (a programmer error, or a thrown non-Error).
 *
 * node-postgres raises the losses it detects itself ("Connection terminated unexpectedly",
 * "timeout expired", "Client has encountered a connection error and is not queryable") as
 * plain `Error`s with no code, while every server error is a `pg.DatabaseError` and Node's
 * socket errors carry a code. So the structural signal is the class: a plain `Error` (not a
 * subclass such as TypeError) without a code is the driver reporting a broken connection.
 */
export function pgErrorKind(err: unknown): 'connection' | 'retriable' | 'permanent' | 'unknown' {
  const state = sqlState(err);
  if (state !== undefined) {
    return RETRIABLE_CLASSES.includes(state.slice(0, 2)) || RETRIABLE_CODES.includes(state) ? 'retriable' : 'permanent';
  }
  if (err instanceof PgTlsRefusedError || certificateProblem(err)) return 'permanent';
  if (isNetworkError(err)) return 'connection';
  if (err instanceof Error && Object.getPrototypeOf(err) === Error.prototype && (err as { code?: unknown }).code === undefined) return 'connection';
  return 'unknown';
}

/**
 * A source connector's error from Postgres as a TributaryError: retriable
 * (SourceUnavailableError) for lost connections and transient SQLSTATEs, standby when another
 * process streams the slot, and a SourceSetupError saying what to fix otherwise. `where` is
 * the message prefix (`source "app"`). TributaryErrors pass through unchanged.
 */
export function classifyPgError(err: unknown, where: string): TributaryError {
  if (err instanceof TributaryError) return err;
  const refused = connectionRefusal(err, where);
  if (refused) return refused;
  const message = describeError(err);
  switch (sqlState(err)) {
    case SQLSTATE.objectInUse:
      return new SourceUnavailableError(`${where}: ${message}; another Tributary replica is streaming it, standing by`, { cause: err, standby: true });
    case SQLSTATE.invalidCatalogName:
      return new SourceSetupError(`${where}: ${message}. Check the database name in the source url.`, { cause: err });
    case SQLSTATE.insufficientPrivilege:
      return new SourceSetupError(
        `${where}: permission denied (${message}). The role needs the REPLICATION attribute (ALTER ROLE … WITH REPLICATION), ` +
          'or use capture: trigger.',
        { cause: err },
      );
  }
  const kind = pgErrorKind(err);
  if (kind === 'connection' || kind === 'retriable') return new SourceUnavailableError(`${where}: ${message}`, { cause: err });
  return new SourceSetupError(`${where}: ${message}`, { cause: err });
}

/**
 * A connection the server or the TLS layer refused for good, as a SourceSetupError saying what
 * to do: TLS failures (below), a pg_hba.conf rejection (28000) and a failed password (28P01);
 * undefined for any other error. classifyPgError starts with it; the Postgres state store and
 * the pgvector index use it for the same advice.
 */
export function connectionRefusal(err: unknown, where: string): SourceSetupError | undefined {
  switch (sqlState(err)) {
    case SQLSTATE.invalidPassword:
      return passwordFailed(err as pg.DatabaseError, where);
    case SQLSTATE.invalidAuthorization:
      return new SourceSetupError(
        `${where}: the server refused the connection (${describeError(err)}). If pg_hba.conf only accepts encrypted connections ` +
          '(hostssl), connect with sslmode=require (or verify-full); otherwise its pg_hba.conf needs an entry for this host, ' +
          'user and database (a replication connection needs one for "replication").',
        { cause: err },
      );
  }
  return classifyTlsError(err, where);
}

/** A TLS failure (by its code) as a SourceSetupError saying what to do, or undefined. */
function classifyTlsError(err: unknown, where: string): SourceSetupError | undefined {
  const { code, host } = (err ?? {}) as { code?: unknown; host?: unknown };
  const message = describeError(err);
  if (err instanceof PgTlsRefusedError) {
    return new SourceSetupError(
      `${where}: the server does not accept TLS connections (ssl is off), and sslmode=${err.mode} demands TLS. ` +
        'Turn ssl on in the server, or connect with sslmode=prefer (TLS when the server offers it) or sslmode=disable.',
      { cause: err },
    );
  }
  const problem = certificateProblem(err);
  if (problem === 'untrusted') {
    return new SourceSetupError(
      `${where}: the server's TLS certificate is not trusted (${String(code)}: ${message}). Add sslrootcert=/path/to/ca.pem ` +
        "(the CA that signed it, e.g. your provider's CA bundle) to the url, or use sslmode=require to encrypt without verifying the server.",
      { cause: err },
    );
  }
  if (problem === 'host') {
    return new SourceSetupError(
      `${where}: the server's TLS certificate is not valid for host "${String(host)}" (${message}). Connect with a host name ` +
        'the certificate lists, or use sslmode=verify-ca to verify the certificate chain but not the host name.',
      { cause: err },
    );
  }
  if (problem === 'expired') {
    return new SourceSetupError(`${where}: the server's TLS certificate is not valid now (${String(code)}: ${message}). Renew the server's certificate.`, { cause: err });
  }
  return undefined;
}

/** 28P01: names the role (from the server's message) and the password method the server asked for. */
function passwordFailed(err: pg.DatabaseError, where: string): SourceSetupError {
  const role = /"([^"]*)"/.exec(err.message)?.[1];
  const method = role === undefined ? undefined : authMethodAsked(role);
  return new SourceSetupError(
    `${where}: password authentication failed${role === undefined ? '' : ` for role "${role}"`}` +
      `${method ? ` (the server asked for ${method})` : ''}. Check the user and password in the url; ` +
      'percent-encode special characters in the password (@ as %40, : as %3A, / as %2F, # as %23, % as %25).',
    { cause: err },
  );
}

/** A data exception (SQLSTATE class 22): the values were refused, not the statement or the connection. */
export function isDataError(err: unknown): boolean {
  return sqlState(err)?.startsWith('22') ?? false;
}

/**
 * For stores and indexes that own their retries: is this database error worth another try?
 * Everything but a permanent server error is (lost connections, transient SQLSTATEs, and
 * errors without a SQLSTATE).
 */
export function isRetriablePgError(err: unknown): boolean {
  return pgErrorKind(err) !== 'permanent';
}
