/**
 * How the MySQL connectors and the row reader classify what MySQL, MariaDB and the network throw at them: by the
 * server's errno, mysql2's `code`/`fatal` and Node's network codes, never by the message, except
 * where the server gives no other signal (errno 1236, below).
 */
import { RecordRejectedError, SourceSetupError, SourceUnavailableError, TributaryError, certificateProblem, describeError, isNetworkError } from '../../src/errors.js';

/** The saved position is no longer in the server's binlogs. */
export class PurgedPositionError extends TributaryError {}

/** Server errnos Tributary reacts to by name. */
const ER = {
  accessDenied: 1045,
  /** MySQL's ER_SECURE_TRANSPORT_REQUIRED (require_secure_transport=ON and a connection without TLS). */
  secureTransportRequired: 3159,
  /** MariaDB's ER_SECURE_TRANSPORT_REQUIRED. */
  mariadbSecureTransportRequired: 4188,
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

/** A failed read of rows (`where` says which): a value the server refused rejects the record; anything else as classifyMysqlError. */
export function classifyMysqlReadError(err: unknown, where: string): TributaryError {
  if (isMysqlDataError(err)) return new RecordRejectedError(`${where}: ${describeError(err)}`, { cause: err });
  return classifyMysqlError(err, where);
}

/** `serverId`: the binlog connector's replica id, named when another replica uses it too. */
export function classifyMysqlError(err: unknown, where: string, serverId?: number): TributaryError {
  if (err instanceof TributaryError) return err;
  const tls = classifyMysqlTlsError(err, where);
  if (tls) return tls;
  const { errno, code, fatal } = (err ?? {}) as { errno?: number; code?: string; fatal?: boolean };
  const message = describeError(err);
  // Checked before `fatal` below: the server's errno says more than the driver's flag.
  switch (errno) {
    case ER.accessDenied:
      return new SourceSetupError(
        `${where}: authentication failed (${message}). Check the user and password in the source url (percent-encode special ` +
          'characters: @ as %40, : as %3A, / as %2F, # as %23, % as %25). A server with require_secure_transport=ON (MariaDB ' +
          'answers it this way) or a user created with REQUIRE SSL also needs ssl-mode=REQUIRED in the url.',
        { cause: err },
      );
    case ER.secureTransportRequired:
    case ER.mariadbSecureTransportRequired:
      return new SourceSetupError(`${where}: the server only accepts TLS connections (${message}). Add ssl-mode=REQUIRED (or VERIFY_IDENTITY with ssl-ca) to the url.`, { cause: err });
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

/** A TLS failure (by mysql2's and Node's codes) as a SourceSetupError saying what to do, or undefined. */
function classifyMysqlTlsError(err: unknown, where: string): SourceSetupError | undefined {
  const { code, host } = (err ?? {}) as { code?: unknown; host?: unknown };
  const message = describeError(err);
  if (code === 'HANDSHAKE_NO_SSL_SUPPORT') {
    return new SourceSetupError(
      `${where}: the server does not accept TLS connections (${message}). Turn TLS on in the server (ssl_cert, ssl_key), or remove ssl-mode from the url (or set ssl-mode=DISABLED).`,
      { cause: err },
    );
  }
  switch (mysqlCertificateProblem(err)) {
    case 'untrusted':
      return new SourceSetupError(
        `${where}: the server's TLS certificate is not trusted (${message}). Add ssl-ca=/path/to/ca.pem (the CA that signed it, ` +
          "e.g. your provider's CA bundle) to the url, or use ssl-mode=REQUIRED to encrypt without verifying the server.",
        { cause: err },
      );
    case 'host':
      return new SourceSetupError(
        `${where}: the server's TLS certificate is not valid for host "${String(host)}" (${message}). Connect with a host name the certificate lists, ` +
          'or use ssl-mode=VERIFY_CA to verify the certificate chain but not the host name.',
        { cause: err },
      );
    case 'expired':
      return new SourceSetupError(`${where}: the server's TLS certificate is not valid now (${message}). Renew the server's certificate.`, { cause: err });
  }
  return undefined;
}

/**
 * certificateProblem for mysql2's errors: mysql2 replaces the code of every TLS handshake error
 * with HANDSHAKE_SSL_ERROR, so what is left is the host name error's `cert` field and, for the
 * others, Node's fixed (never localized) verification message.
 */
function mysqlCertificateProblem(err: unknown): ReturnType<typeof certificateProblem> {
  const { code, cert } = (err ?? {}) as { code?: unknown; cert?: unknown };
  if (code !== 'HANDSHAKE_SSL_ERROR') return certificateProblem(err);
  if (cert !== undefined) return 'host';
  const message = describeError(err);
  if (/self[- ]signed|unable to (verify|get)/i.test(message)) return 'untrusted';
  if (/expired|not yet valid/i.test(message)) return 'expired';
  return undefined;
}
