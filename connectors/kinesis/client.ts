/**
 * The Kinesis API client of a source, and the classification of its errors by their AWS error
 * code (`err.name`), never by message text.
 */
import { KinesisClient } from '@aws-sdk/client-kinesis';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { SourceSetupError, SourceUnavailableError, TributaryError, describeError } from '../../src/errors.js';
import type { KinesisSourceConfig } from './spec.js';

/**
 * A client over HTTP/1.1 with keep-alive (GetRecords needs no HTTP/2, and kinesalite speaks
 * only HTTP/1.1). Credentials come from the AWS default chain. Retries are ours: the SDK makes
 * one attempt per call.
 */
export function kinesisClient(config: KinesisSourceConfig): KinesisClient {
  return new KinesisClient({
    region: config.region,
    ...(config.endpoint ? { endpoint: config.endpoint } : {}),
    maxAttempts: 1,
    requestHandler: new NodeHttpHandler({
      httpAgent: new HttpAgent({ keepAlive: true }),
      httpsAgent: new HttpsAgent({ keepAlive: true }),
      requestTimeout: 30_000,
      connectionTimeout: 10_000,
    }),
  });
}

/** Too many calls for the shard or the account: wait and call again. */
const THROTTLES = new Set(['ProvisionedThroughputExceededException', 'LimitExceededException', 'KMSThrottlingException', 'ThrottlingException']);

/** Errors that calling again cannot fix: a missing stream, refused credentials or permissions, a bad request. */
const PERMANENT = new Set([
  'ResourceNotFoundException',
  'AccessDeniedException',
  'UnrecognizedClientException',
  'InvalidSignatureException',
  'IncompleteSignature',
  'MissingAuthenticationToken',
  'CredentialsProviderError',
  'ValidationException',
  'InvalidArgumentException',
  'KMSAccessDeniedException',
  'KMSDisabledException',
  'KMSInvalidStateException',
  'KMSNotFoundException',
  'KMSOptInRequired',
]);

const nameOf = (err: unknown) => (err as { name?: unknown } | null)?.name;

export const isThrottle = (err: unknown) => THROTTLES.has(nameOf(err) as string);
export const isExpiredIterator = (err: unknown) => nameOf(err) === 'ExpiredIteratorException';

/** A Kinesis failure as a TributaryError: permanent for setup problems, retriable otherwise (network, 5xx, throttling). */
export function classifyKinesisError(err: unknown, where: string): TributaryError {
  if (err instanceof TributaryError) return err;
  const name = String(nameOf(err) ?? 'Error');
  const message = `${where}: ${name}: ${describeError(err)}`;
  if (PERMANENT.has(name)) return new SourceSetupError(message, { cause: err });
  return new SourceUnavailableError(message, { cause: err });
}
