/**
 * How the MySQL connectors and the row reader classify what MySQL, MariaDB and the network throw at them: by the
 * server's errno, mysql2's `code`/`fatal` and Node's network codes, never by the message, except
 * where the server gives no other signal (errno 1236, below).
 */
import { SourceSetupError, SourceUnavailableError, TributaryError, describeError, isNetworkError } from '../../src/errors.js';

/** The saved position is no longer in the server's binlogs. */
export class PurgedPositionError extends TributaryError {}

/** Server errnos Tributary reacts to by name. */
const ER = {
  accessDenied: 1045,
  badDb: 1049,
  dbAccessDenied: 1044,
  specificAccessDenied: 1227,
  tableAccessDenied: 1142,
  columnAccessDenied: 1143,
  /** ER_MASTER_FATAL_ERROR_READING_BINLOG: the server stopped the dump (purged position, MySQL's server_id clash, …). */
  fatalReadingBinlog: 1236,
  /** MariaDB's ER_SLAVE_SAME_ID: another replica connected with our server_id (mysql2 names it after an unrelated MySQL code). */
  mariadbSameServerId: 4052,
} as const;

/** Errnos worth retrying: too many connections, shutdown, connection killed, lock conflicts, and the client's lost/gone-away. */
const RETRIABLE_ERRNOS = new Set([1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055]);

/**
 * Errno 1236 is the one code for every reason the server ends a binlog dump; only its message
 * tells them apart (the server sends no sub-code), so these two checks read the text.
 */
const PURGED = /purged|could not find first log file|could not find GTID state|binary log .* not found|log event entry exceeded/i;
/** MySQL: "A slave with the same server_uuid/server_id as this slave has connected to the master" (MariaDB has its own errno). */
const CLASH = /same server_uuid\/server_id|slave with the same server/i;

/** Errnos of values the server refused (wrong type, out of range, too long): the record, not the connection. */
const DATA_ERRNOS = new Set([1264, 1292, 1366, 1406]);

export function isMysqlDataError(err: unknown): boolean {
  const errno = (err as { errno?: unknown } | null)?.errno;
  return typeof errno === 'number' && DATA_ERRNOS.has(errno);
}

/** `serverId`: the binlog connector's replica id, named when another replica uses it too. */
export function classifyMysqlError(err: unknown, where: string, serverId?: number): TributaryError {
  if (err instanceof TributaryError) return err;
  const { errno, code, fatal } = (err ?? {}) as { errno?: number; code?: string; fatal?: boolean };
  const message = describeError(err);
  // Checked before `fatal` below: the server's errno says more than the driver's flag.
  switch (errno) {
    case ER.accessDenied:
      return new SourceSetupError(`${where}: authentication failed (${message}). Check the user and password in the source url.`, { cause: err });
    case ER.badDb:
      return new SourceSetupError(`${where}: ${message}. Check the database name in the source url.`, { cause: err });
    case ER.specificAccessDenied:
    case ER.dbAccessDenied:
    case ER.tableAccessDenied:
    case ER.columnAccessDenied:
      return new SourceSetupError(
        `${where}: permission denied (${message}). The binlog connector needs: GRANT REPLICATION SLAVE, REPLICATION CLIENT, ` +
          'SELECT ON *.* TO the user (MariaDB 10.5+: GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ...).',
        { cause: err },
      );
    case ER.mariadbSameServerId:
      return serverIdClash(where, serverId, message, err);
    case ER.fatalReadingBinlog:
      if (PURGED.test(message)) return new PurgedPositionError(`${where}: ${message}`, { cause: err });
      if (CLASH.test(message)) return serverIdClash(where, serverId, message, err);
      return new SourceSetupError(`${where}: the server stopped the binlog stream: ${message}`, { cause: err });
  }
  // mysql2 marks every error that leaves the connection unusable `fatal` (lost, closed state,
  // protocol errors); its own codes for them start with PROTOCOL_.
  const lost = fatal === true || code?.startsWith('PROTOCOL_') || isNetworkError(err);
  if (lost || (errno !== undefined && RETRIABLE_ERRNOS.has(errno))) return new SourceUnavailableError(`${where}: ${message}`, { cause: err });
  return new SourceSetupError(`${where}: ${message}`, { cause: err });
}

function serverIdClash(where: string, serverId: number | undefined, detail: string, cause?: unknown): SourceSetupError {
  return new SourceSetupError(
    `${where}: another replica connected with the same server_id ${serverId} and the server disconnected this one (${detail}). ` +
      'Each connection to the binlog needs its own id: set serverId: on this source to a number no other replica ' +
      '(or Tributary instance tailing this server) uses, e.g. from SELECT @@server_id on your replicas.',
    { cause },
  );
}
