/** How the binlog connector classifies what MySQL, MariaDB and the network throw at it. */
import { SourceSetupError, SourceUnavailableError, TributaryError, describeError } from '../../../src/errors.js';

/** The saved position is no longer in the server's binlogs. */
export class PurgedPositionError extends TributaryError {}

const NETWORK = /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|ENOTFOUND|EAI_AGAIN|PROTOCOL_CONNECTION_LOST|Connection lost|closed state|Can't add new command|server has gone away|shutdown in progress|no heartbeat/i;
const PURGED = /purged|could not find first log file|could not find GTID state|binary log .* not found|log event entry exceeded/i;
/** MariaDB: "A slave with the same server_uuid/server_id is already connected"; MySQL: "…same server_uuid/server_id as this slave has connected". */
const CLASH = /same server_uuid\/server_id|slave with the same server/i;

export function classifyMysqlError(err: unknown, where: string, serverId: number): TributaryError {
  if (err instanceof TributaryError) return err;
  const errno = (err as { errno?: number }).errno;
  const code = (err as { code?: string }).code ?? '';
  const message = describeError(err);
  if (errno === 1045) {
    return new SourceSetupError(`${where}: authentication failed (${message}). Check the user and password in the source url.`, { cause: err });
  }
  if (errno === 1049) return new SourceSetupError(`${where}: ${message}. Check the database name in the source url.`, { cause: err });
  if (errno === 1227 || errno === 1044 || errno === 1142 || errno === 1143) {
    return new SourceSetupError(
      `${where}: permission denied (${message}). The binlog connector needs: GRANT REPLICATION SLAVE, REPLICATION CLIENT, ` +
        'SELECT ON *.* TO the user (MariaDB 10.5+: GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ...).',
      { cause: err },
    );
  }
  if (errno === 1236 && PURGED.test(message)) return new PurgedPositionError(`${where}: ${message}`, { cause: err });
  if (CLASH.test(message)) return serverIdClash(where, serverId, message, err);
  if (errno === 1236) return new SourceSetupError(`${where}: the server stopped the binlog stream: ${message}`, { cause: err });
  if (errno === 1040 || errno === 1053 || errno === 1927 || errno === 2013 || code.startsWith('PROTOCOL_') || NETWORK.test(`${code} ${message}`)) {
    return new SourceUnavailableError(`${where}: ${message}`, { cause: err });
  }
  return new SourceSetupError(`${where}: ${message}`, { cause: err });
}

function serverIdClash(where: string, serverId: number, detail: string, cause?: unknown): SourceSetupError {
  return new SourceSetupError(
    `${where}: another replica connected with the same server_id ${serverId} and the server disconnected this one (${detail}). ` +
      'Each connection to the binlog needs its own id: set serverId: on this source to a number no other replica ' +
      '(or Tributary instance tailing this server) uses, e.g. from SELECT @@server_id on your replicas.',
    { cause },
  );
}
