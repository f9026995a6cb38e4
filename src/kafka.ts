/**
 * Connecting to Kafka, shared by the `kafka` source (connectors/kafka/) and the `kafka` sink
 * (src/sinks/kafka/): the connection settings' schema, the kafkajs client they configure, and
 * how a kafkajs failure is classified. kafkajs 2.2.4 speaks to Kafka 0.10 through 3.x brokers
 * (https://kafka.js.org/docs/getting-started).
 *
 * Classification goes by kafkajs's error types and `retriable` flags
 * (https://kafka.js.org/docs/retry-detailed, node_modules/kafkajs/src/errors.js) and by the
 * broker's protocol error `type` names (https://kafka.apache.org/protocol#protocol_error_codes),
 * never by message text (docs/architecture.md, "Adding a source or a sink").
 */
import { readFileSync } from 'node:fs';
import { Kafka, logLevel, type KafkaConfig, type SASLOptions } from 'kafkajs';
import { TributaryError, certificateProblem, describeError, isNetworkError } from './errors.js';

/** The connection settings of a kafka source or sink. */
export interface KafkaConnection {
  /** Bootstrap brokers, `host:port`. */
  brokers: string[];
  /** The client id the broker sees in its logs and quotas (default `tributary`). */
  clientId: string;
  /** TLS to the brokers; absent: plaintext. Files are PEM. */
  tls?: { caFile?: string; certFile?: string; keyFile?: string; rejectUnauthorized: boolean };
  /** SASL authentication; the password is never logged. */
  sasl?: { mechanism: 'plain' | 'scram-sha-256' | 'scram-sha-512'; username: string; password: string };
}

/** The schema properties of `KafkaConnection`, for both specs. */
export const kafkaConnectionProperties = {
  brokers: {
    type: 'array',
    minItems: 1,
    items: { type: 'string', pattern: '^[^\\s:]+:[0-9]{1,5}$', 'x-expected': 'a broker address like kafka-0.kafka:9092' },
    description: 'Bootstrap brokers, host:port; the client learns the rest of the cluster from them.',
    examples: [['kafka-0.kafka:9092', 'kafka-1.kafka:9092']],
  },
  clientId: { type: 'string', minLength: 1, default: 'tributary', description: 'The client id the brokers see (logs, quotas).' },
  tls: {
    type: 'object',
    additionalProperties: false,
    description: 'Connect over TLS (absent: plaintext). Files are PEM; without caFile the system CAs are trusted.',
    properties: {
      caFile: { type: 'string', minLength: 1, description: 'CA certificate(s) to trust.' },
      certFile: { type: 'string', minLength: 1, description: 'Client certificate, for mutual TLS.' },
      keyFile: { type: 'string', minLength: 1, description: 'Client private key, for mutual TLS.' },
      rejectUnauthorized: { type: 'boolean', default: true, description: 'Refuse brokers whose certificate does not verify.' },
    },
  },
  sasl: {
    type: 'object',
    additionalProperties: false,
    required: ['mechanism', 'username', 'password'],
    description: 'SASL authentication (usually with tls).',
    properties: {
      mechanism: { type: 'string', enum: ['plain', 'scram-sha-256', 'scram-sha-512'], description: 'SASL mechanism.' },
      username: { type: 'string', minLength: 1, description: 'User name.' },
      password: { type: 'string', description: 'Password. Use ${VAR}; never logged.' },
    },
  },
} as const;

/** A kafkajs client for these settings; kafkajs's own logging is off (errors reach ours classified). */
export function kafkaClient(connection: KafkaConnection, overrides: Partial<KafkaConfig> = {}): Kafka {
  const { tls, sasl } = connection;
  return new Kafka({
    clientId: connection.clientId,
    brokers: connection.brokers,
    logLevel: logLevel.NOTHING,
    ...(tls
      ? {
          ssl: {
            rejectUnauthorized: tls.rejectUnauthorized,
            ...(tls.caFile ? { ca: [readFileSync(tls.caFile, 'utf8')] } : {}),
            ...(tls.certFile ? { cert: readFileSync(tls.certFile, 'utf8') } : {}),
            ...(tls.keyFile ? { key: readFileSync(tls.keyFile, 'utf8') } : {}),
          },
        }
      : {}),
    ...(sasl ? { sasl: { mechanism: sasl.mechanism, username: sasl.username, password: sasl.password } as SASLOptions } : {}),
    ...overrides,
  });
}

/** Broker error types that refuse the records themselves: sending them again cannot help. */
const RECORD_ERRORS = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE', 'INVALID_RECORD', 'CORRUPT_MESSAGE', 'INVALID_TIMESTAMP']);

interface KafkaJSErrorLike {
  name?: string;
  retriable?: boolean;
  type?: string;
  cause?: unknown;
}

/**
 * Whether trying again later may help. kafkajs gives up a call after its own retries with
 * `KafkaJSNumberOfRetriesExceeded` (not retriable itself): what counts then is the cause it
 * wraps (a broker that was down is worth another connection later).
 */
export function kafkaRetriable(err: unknown): boolean {
  if (kafkaAdvice(err)) return false; // credentials or certificates: the same again fails the same way
  if (isNetworkError(err)) return true;
  const e = err as KafkaJSErrorLike | null;
  if (!e || typeof e !== 'object') return false;
  if (e.name === 'KafkaJSNumberOfRetriesExceeded' || e.name === 'KafkaJSNonRetriableError') return e.cause !== undefined && e.cause !== err && kafkaRetriable(e.cause);
  if (typeof e.retriable === 'boolean' && e.name?.startsWith('KafkaJS')) return e.retriable;
  return false;
}

/** True when the broker refused the records themselves (too large, invalid), by protocol error type. */
export function kafkaRecordRefused(err: unknown): boolean {
  for (let e = err as KafkaJSErrorLike | undefined; e && typeof e === 'object'; e = e.cause as KafkaJSErrorLike | undefined) {
    if (e.type && RECORD_ERRORS.has(e.type)) return true;
    if (e.cause === e) break;
  }
  return false;
}

/** A kafkajs failure as a TributaryError: retriable as `kafkaRetriable` says, `where` first. */
export function classifyKafkaError(err: unknown, where: string): TributaryError {
  if (err instanceof TributaryError) return err;
  return new TributaryError(`${where}: ${describeKafkaError(err)}`, { retriable: kafkaRetriable(err), cause: err });
}

/** The failure's message, with what to do when it is the credentials or the brokers' certificate. */
export function describeKafkaError(err: unknown): string {
  const advice = kafkaAdvice(err);
  return advice ? `${describeError(err)}; ${advice}` : describeError(err);
}

/**
 * What to do about a SASL login the brokers refused (kafkajs's KafkaJSSASLAuthenticationError, a
 * mechanism the listener does not enable) or a certificate that does not verify (Node's codes,
 * which kafkajs keeps on its connection error), found anywhere in the cause chain.
 */
function kafkaAdvice(err: unknown): string | undefined {
  for (let e = err as KafkaJSErrorLike | undefined; e && typeof e === 'object'; e = e.cause === e ? undefined : (e.cause as KafkaJSErrorLike | undefined)) {
    if (e.name === 'KafkaJSSASLAuthenticationError' || e.type === 'SASL_AUTHENTICATION_FAILED') {
      return "check sasl.username and sasl.password (use ${VAR}), and that the brokers' listener enables sasl.mechanism";
    }
    if (e.type === 'UNSUPPORTED_SASL_MECHANISM') return "the brokers' listener does not enable this sasl.mechanism: pick one it lists";
    const problem = certificateProblem(e);
    if (problem === 'untrusted') return "the brokers' certificate does not lead to a trusted CA: set tls.caFile to the CA that signed it";
    if (problem === 'host') return "the brokers' certificate is not issued for the address in brokers: use a name or address it lists";
    if (problem === 'expired') return "the brokers' certificate has expired (or is not yet valid): renew it";
  }
  return undefined;
}
