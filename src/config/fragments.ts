/**
 * Building blocks of configuration schemas, shared by the core schema (./schema.ts) and the
 * plugins' specs (each connector's and sink's spec.ts). Imports nothing of the registries.
 */

/** Postgres identifiers Tributary creates (slots, publications, schemas): lowercase, ≤ 63. */
export const IDENTIFIER_PATTERN = '^[a-z_][a-z0-9_]{0,62}$';
export const IDENTIFIER_EXPECTED = 'a name of lowercase letters, digits and _ (not starting with a digit, at most 63 characters)';

/** Lens names: they appear in URLs, metrics labels and CLI arguments. */
export const LENS_NAME_PATTERN = '^[A-Za-z0-9_-]{1,64}$';

/** `30s`, `5m`, `24h`, `1h30m`, `2h15m10s`: hours, minutes, seconds, in that order. */
export const DURATION_PATTERN = '^(?:[0-9]+h(?:[0-9]+m)?(?:[0-9]+s)?|[0-9]+m(?:[0-9]+s)?|[0-9]+s)$';

/** A DURATION_PATTERN string in milliseconds: `1h30m` → 5400000. */
export function parseDuration(text: string): number {
  const unit: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000 };
  let ms = 0;
  for (const [, n, u] of text.matchAll(/(\d+)([hms])/g)) ms += Number(n) * unit[u];
  return ms;
}

/** `host:port` (host name, IPv4 or [IPv6]) with a port from 0 to 65535. */
export const LISTEN_PATTERN =
  '^(?:\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9.-]+):(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}|0)$';

export const duration = (description: string) =>
  ({
    type: 'string',
    description,
    pattern: DURATION_PATTERN,
    'x-expected': 'a duration like 30s, 5m, 24h or 1h30m',
    examples: ['30s', '5m', '24h', '1h30m'],
  }) as const;

/** An http(s) URL; `example` shows the expected form in messages and editors. */
export const httpUrl = (example: string, description: string, defaultValue?: string) =>
  ({
    type: 'string',
    pattern: '^https?://[^/\\s]+(?:/\\S*)?$',
    'x-expected': `an http(s) URL like ${example}`,
    description,
    examples: [example],
    ...(defaultValue ? { default: defaultValue } : {}),
  }) as const;

export const columnList = (description: string, defaultValue?: []) =>
  ({
    type: 'array',
    description,
    items: {
      type: 'string',
      minLength: 1,
      description: 'A column name, as written (spaces, dots, any case); double quotes or backticks around it are optional.',
    },
    uniqueItems: true,
    ...(defaultValue ? { default: defaultValue } : {}),
  }) as const;

export const positiveInteger = (defaultValue: number, description: string, minimum = 1) =>
  ({ type: 'integer', minimum, default: defaultValue, description }) as const;

/** Hosted sinks: the per-request timeout. */
export const timeoutMs = { type: 'integer', minimum: 1, default: 30000, description: 'Per-request timeout, in milliseconds.' } as const;

/** Hosted sinks: request pacing shared by the sink's lenses. */
export const maxRequestsPerSecond = {
  type: 'number',
  exclusiveMinimum: 0,
  description: "At most this many requests a second, across every lens of the sink (they share its key and quota). Default: no limit.",
  examples: [10],
} as const;

/** Where metrics, /healthz and /readyz listen unless `metrics.listen` says otherwise. */
export const DEFAULT_METRICS_LISTEN = '0.0.0.0:9464';
