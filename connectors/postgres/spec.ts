/**
 * The `postgres` source: one PostgreSQL database, captured by logical replication, row
 * triggers or polling (`capture`), with `capture: auto` choosing among them at start.
 */
import { IDENTIFIER_EXPECTED, IDENTIFIER_PATTERN } from '../../src/config/fragments.js';
import type { PluginProblem, PluginSchema, SourceSpec } from '../../src/plugins.js';
import { classifyPgError } from '../../src/postgres.js';
import { qualifyTableName, tableNameProblems } from '../../src/table-name.js';
import type { ConnectorContext, SourceConnector } from '../../src/types.js';
import { pollLensProblems, createPollConnector } from '../poll/index.js';
import { chooseCaptureWhenReachable } from './auto/index.js';
import { createPostgresLogicalConnector } from './logical/index.js';
import { createPostgresReader } from './reader.js';
import { createPostgresTriggerConnector } from './trigger/index.js';

/** A PostgreSQL source (`type: postgres`): its capture mode decides the connector. */
export interface PostgresSourceConfig {
  type: 'postgres';
  /** libpq-style connection URL. Never logged with its password. */
  url: string;
  /**
   * `logical`: a replication slot (./logical). `trigger`: row triggers and a changelog table
   * (./trigger). `auto`: probes the server and hands over to one of them, or to `poll` (./auto).
   * `poll`: each lens read every `syncInterval` by its changeTrackingColumn (../poll).
   */
  capture: 'logical' | 'trigger' | 'poll' | 'auto';
  /** Replication slot name; created if missing. Default `tributary_<source>`. */
  slot: string;
  /**
   * Publication name. Default `tributary_<source>`: created if missing and kept in step with
   * the lens tables. A publication that exists and was not created by Tributary is used as-is
   * (it must include every lens table).
   */
  publication: string;
  /** How often a standby status update is sent even without traffic, ms (default 10000). */
  statusIntervalMs: number;
  /** capture: trigger: install the changelog and triggers at start (default true); false only checks them. */
  installTriggers: boolean;
  /** capture: trigger: schema of the changelog table and trigger functions (default `tributary`). */
  triggerSchema: string;
  /** capture: logical: create the slot with `failover` (PostgreSQL 17+), default false. */
  failoverSlot?: boolean;
}

const schema = {
  type: 'object',
  description: 'A PostgreSQL database, tailed through logical replication (pgoutput) or row triggers.',
  additionalProperties: false,
  required: ['type', 'url'],
  properties: {
    type: { const: 'postgres', description: 'Source type.' },
    url: {
      type: 'string',
      minLength: 1,
      description:
        'libpq connection URL (for capture: logical, of a role with the REPLICATION attribute), e.g. ' +
        'postgres://tributary:${PGPASSWORD}@db:5432/app?sslmode=verify-full&sslrootcert=/etc/ssl/provider-ca.pem. ' +
        'TLS as libpq: sslmode (default prefer), sslrootcert, sslcert, sslkey, or PGSSLMODE etc. (README: Managed PostgreSQL ' +
        'and MySQL). Percent-encode special characters in the password. Never logged with its password.',
    },
    capture: {
      type: 'string',
      enum: ['logical', 'trigger', 'poll', 'auto'],
      default: 'logical',
      description:
        'How changes are captured. `logical`: a logical replication slot (needs wal_level=logical and a role ' +
        'with REPLICATION). `trigger`: row triggers on the lens tables write table, key and action to a ' +
        'changelog table in `triggerSchema` (needs only CREATE on that schema, or on the database when it does ' +
        'not exist yet, and TRIGGER on the tables). `auto`: logical when wal_level=logical and the role may ' +
        'replicate, else trigger when it may create the triggers, else poll; the choice and its reason are ' +
        'logged and shown by `tributary status`. `poll`: every lens is read every `syncInterval` by its ' +
        '`changeTrackingColumn` (no deletes: pair it with `smartSyncInterval`).',
    },
    installTriggers: {
      type: 'boolean',
      default: true,
      description:
        'capture: trigger (or auto choosing it): install the changelog table and triggers at start, idempotently. ' +
        'false: only check they are present; install them with `tributary triggers install --lens NAME` ' +
        '(for teams whose DDL goes through review).',
    },
    triggerSchema: {
      type: 'string',
      pattern: IDENTIFIER_PATTERN,
      'x-expected': IDENTIFIER_EXPECTED,
      default: 'tributary',
      description:
        'capture: trigger: the schema holding the changelog table and trigger functions; created if missing. ' +
        'Several sources may share it: each reads and removes only its own rows.',
    },
    slot: {
      type: 'string',
      pattern: IDENTIFIER_PATTERN,
      'x-expected': IDENTIFIER_EXPECTED,
      description:
        'Replication slot name; created if missing. Default: `tributary_<source name>` ' +
        '(set it explicitly when the source name is not a valid identifier).',
    },
    publication: {
      type: 'string',
      pattern: IDENTIFIER_PATTERN,
      'x-expected': IDENTIFIER_EXPECTED,
      description:
        'Publication name. Default: `tributary_<source name>`, created if missing and kept in step ' +
        'with the lens tables. A publication that exists and was not created by Tributary is used ' +
        'as-is (it must include every lens table).',
    },
    failoverSlot: {
      type: 'boolean',
      default: false,
      description:
        'capture: logical: create the replication slot with failover = true (PostgreSQL 17 or later; an error on ' +
        'older servers), so a standby with sync_replication_slots = on keeps a copy and streaming resumes from the ' +
        'promoted standby after a failover. See the README for what the primary and the standby need.',
    },
    statusIntervalMs: {
      type: 'integer',
      minimum: 1000,
      default: 10000,
      description: 'How often a standby status update is sent even without traffic, in milliseconds.',
    },
  },
} satisfies PluginSchema;


export const postgresSpec: SourceSpec<PostgresSourceConfig> = {
  type: 'postgres',
  schema,
  capabilities: { readsTables: true, requiresPrimaryKey: false },
  problems: ({ name, raw, lenses }) => [
    ...defaultNameProblems(name, raw),
    ...tableNameProblems(lenses, '"'),
    ...(raw.capture === 'poll' ? pollLensProblems(name, lenses) : []),
  ],
  resolve: (raw, name) => ({ slot: `tributary_${name}`, publication: `tributary_${name}`, ...raw }) as PostgresSourceConfig,
  qualifyTable: (table) => qualifyTableName(table, 'public', '"') ?? table,
  async create(config, ctx) {
    const capture = config.capture === 'auto' ? (await chooseCaptureWhenReachable(config, ctx)).mode : config.capture;
    return createConnector(config, capture, ctx);
  },
  openReader: (config, options) => createPostgresReader(config.url, options),
};

function createConnector(config: PostgresSourceConfig, capture: Exclude<PostgresSourceConfig['capture'], 'auto'>, ctx: ConnectorContext): SourceConnector {
  switch (capture) {
    case 'logical':
      return createPostgresLogicalConnector(config, ctx);
    case 'trigger':
      return createPostgresTriggerConnector(config, ctx);
    case 'poll':
      return createPollConnector(ctx, (lens) => createPostgresReader(config.url, lens), (err) => classifyPgError(err, `source "${ctx.sourceName}"`));
  }
}

/** The slot and publication names derived from the source name must be valid identifiers. */
function defaultNameProblems(name: string, raw: Record<string, unknown>): PluginProblem[] {
  const derived = `tributary_${name}`;
  if (new RegExp(IDENTIFIER_PATTERN).test(derived)) return [];
  return (['slot', 'publication'] as const)
    .filter((key) => raw[key] === undefined)
    .map((key) => ({
      path: ['sources', name, key],
      message:
        `the default ${key} name "${derived}" (from the source name) is not a valid identifier; ` +
        `set ${key}: explicitly (lowercase letters, digits and _, at most 63 characters)`,
    }));
}
