/**
 * The one Postgres helpers module: SQL quoting, and what a node-postgres error means
 * (classification by SQLSTATE and Node error codes, never by the message text), and wrapping
 * one into a TributaryError whose message says what to do. Used by the Postgres connectors,
 * the Postgres state store and the pgvector index.
 */
import pg from 'pg';
import { formatTableName, splitTableName } from './table-name.js';
import { SourceSetupError, SourceUnavailableError, TributaryError, describeError, isNetworkError } from './errors.js';

/** `name` as a quoted SQL identifier: `"my ""odd"" schema"`. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
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
 * - `permanent`: any other server error (syntax, privileges, missing objects);
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
  const message = describeError(err);
  switch (sqlState(err)) {
    case SQLSTATE.objectInUse:
      return new SourceUnavailableError(`${where}: ${message}; another Tributary replica is streaming it, standing by`, { cause: err, standby: true });
    case SQLSTATE.invalidPassword:
    case SQLSTATE.invalidAuthorization:
      return new SourceSetupError(`${where}: authentication failed (${message}). Check the user and password in the source url.`, { cause: err });
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
