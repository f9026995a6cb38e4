/** How the logical connector classifies what Postgres and the network throw at it. */
import { SourceSetupError, SourceUnavailableError, TributaryError, describeError } from '../../../src/errors.js';

const NETWORK = /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|EHOSTUNREACH|ENOTFOUND|EAI_AGAIN|Connection terminated|connection timeout|the server ended/i;

export function classifyPgError(err: unknown, where: string): TributaryError {
  if (err instanceof TributaryError) return err;
  const code = (err as { code?: string }).code ?? '';
  const message = describeError(err);
  if (code === '55006') {
    return new SourceUnavailableError(`${where}: ${message}; another Tributary replica is streaming it, standing by`, {
      cause: err,
      standby: true,
    });
  }
  if (code === '28P01' || code === '28000') {
    return new SourceSetupError(`${where}: authentication failed (${message}). Check the user and password in the source url.`, { cause: err });
  }
  if (code === '3D000') {
    return new SourceSetupError(`${where}: ${message}. Check the database name in the source url.`, { cause: err });
  }
  if (code === '42501') {
    return new SourceSetupError(
      `${where}: permission denied (${message}). The role needs the REPLICATION attribute (ALTER ROLE … WITH REPLICATION), ` +
        'or use capture: trigger.',
      { cause: err },
    );
  }
  if (code.startsWith('08') || code.startsWith('57P') || code === '53300' || NETWORK.test(message)) {
    return new SourceUnavailableError(`${where}: ${message}`, { cause: err });
  }
  return new SourceSetupError(`${where}: ${message}`, { cause: err });
}
