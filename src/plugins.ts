/**
 * The plugin shape. Every source connector (`connectors/<name>/`) and every sink
 * (`src/sinks/<name>/`) is one folder exporting one spec, and each registry
 * (connectors/index.ts, src/sinks/index.ts) is one line per spec. The configuration schema
 * (src/config/schema.ts), the typed configuration (src/config/types.ts), validation
 * (src/config/load.ts), `config/tributary.schema.json` and the README's configuration reference
 * are all derived from the specs: adding a plugin touches its folder and one registry line.
 * See docs/architecture.md, "Plugins".
 */
import type { Config, LensConfig } from './config/types.js';
import type { DeadLetters } from './dead-letters.js';
import type { Metrics } from './metrics.js';
import type { RowReaderOptions } from './rows.js';
import type { ConnectorContext, Logger, RowReader, Sink, SourceConnector, StateStore } from './types.js';

/**
 * The JSON Schema (draft-07) of one plugin's configuration object: a map with a
 * `type: { const: NAME }` property, `additionalProperties: false`, and a description, default
 * and (where useful) examples on every other property. `x-expected` says in words what a
 * pattern-checked value looks like (it goes into error messages).
 */
export interface PluginSchema {
  type: 'object';
  description: string;
  additionalProperties: false;
  required: readonly string[];
  properties: { type: { const: string; description: string } } & Record<string, object>;
}

/** One problem a plugin finds in the configuration; `path` is relative to the file's root. */
export interface PluginProblem {
  path: Array<string | number>;
  message: string;
}

/** What a plugin's `problems` sees: raw data that passed no validation yet, so read it defensively. */
export interface CheckContext {
  /** The source's (or sink's) name and its raw map. */
  name: string;
  raw: Record<string, unknown>;
  /** The raw lenses that name this source (or sink), by lens name. */
  lenses: Array<[string, Record<string, unknown>]>;
}

interface PluginSpec<C extends { type: string }> {
  readonly type: C['type'];
  readonly schema: PluginSchema;
  /**
   * Checks the schema cannot express (derived names, settings of the lenses that use it).
   * Runs beside schema validation, on data that may be malformed.
   */
  problems?(check: CheckContext): PluginProblem[];
  /**
   * The validated raw map (defaults filled in) as the plugin's typed config: derived defaults
   * (names from the source name), normalised values (trailing slashes). Default: as it is.
   */
  resolve?(raw: Record<string, unknown>, name: string): C;
}

/** What a source can do, for the stages around it. */
export interface SourceCapabilities {
  /**
   * The source owns a database Tributary can read (`openReader`): full syncs, smart sync
   * sweeps and polling read the table; sinks that need rows re-read them by id. Stream sources
   * (Kinesis, Kafka) read what another system wrote and carry rows in their changes instead.
   * A function: it depends on the source's (raw, possibly unvalidated) config: a kafka source
   * with `rowsFrom` reads its lenses' tables from that database.
   */
  readsTables: boolean | ((config: Record<string, unknown>) => boolean);
  /** Lenses of this source must name their `primaryKey` (there is no catalog to read it from). */
  requiresPrimaryKey: boolean;
  /**
   * Replicas sharing a state store may all read the source at once, because the source divides
   * the work among them itself (a Kafka consumer group gives each partition to one member and
   * keeps the committed offsets). No source lease is taken; without this, one replica reads and
   * the others stand by (src/leases.ts).
   */
  sharedReading?: boolean;
  /**
   * A stream source whose changes always carry their rows (Kinesis, Debezium events): a sink
   * that reads rows only for changes without one never needs a table. A function: it depends on
   * the source's (raw) config.
   */
  carriesRows?: boolean | ((config: Record<string, unknown>) => boolean);
}

export interface SourceSpec<C extends { type: string } = { type: string }> extends PluginSpec<C> {
  readonly capabilities: SourceCapabilities;
  /** A lens's `table` in full (`schema.table`), e.g. a bare `products` → `public.products`. */
  qualifyTable(table: string, config: C): string;
  /**
   * The connector for this source, as configured (its capture mode). May probe the source
   * first (`capture: auto`): it then reports through `ctx.report` and returns the chosen
   * connector, whole, with every capability of its own.
   */
  create(config: C, ctx: ConnectorContext): SourceConnector | Promise<SourceConnector>;
  /** The row reader of one lens (sources that read tables). */
  openReader?(config: C, options: RowReaderOptions): Promise<RowReader>;
}

/** What every sink factory receives. */
export interface SinkContext {
  /** The sink's name (a key of `sinks`). */
  name: string;
  /** The lenses whose batches go to this sink. */
  lenses: Record<string, LensConfig>;
  /** The whole configuration (the worker sink reads the `worker` section). */
  config: Config;
  /**
   * Opens the row reader of a lens, for sinks that need rows; undefined when the lens's source
   * reads no tables (a stream: its changes carry their rows).
   */
  openReader(lens: string): Promise<RowReader> | undefined;
  state: StateStore;
  /**
   * The dead-letter queue, for sinks whose API rejects single records of an accepted request
   * (seyn's `rejected`): each such record becomes a letter whose `provenance.changes` holds its
   * change, so `tributary dlq replay` delivers it again. A whole batch the API refuses is still
   * the pipeline's to dead-letter (a `rejected` SinkError).
   */
  deadLetters: DeadLetters;
  metrics: Metrics;
  log: Logger;
}

/** When a sink reads a lens's table through its row reader (`SinkCapabilities.readsTable`). */
export type ReadsTable = 'always' | 'for full syncs' | 'for changes without rows' | 'never';

/** What a sink takes. */
export interface SinkCapabilities {
  /**
   * `ids`: `{ id, action }` only (it re-reads rows itself); `rows`: each id's current row (its
   * row reader is a payload reader: src/payload.ts). A function: it depends on the lens (the
   * kafka sink sends rows for lenses with `payload`).
   */
  takes: 'ids' | 'rows' | ((lens: LensConfig) => 'ids' | 'rows');
  /**
   * When the sink reads the lens's table through its row reader: `always` (the worker re-reads
   * every id; psykhe soft-replaces the catalog from the table), `for full syncs` (seyn: changes
   * carry their rows from stream sources), `for changes without rows` (the kafka sink of a lens
   * with `payload`: every change of a table source, none of a stream whose changes carry rows),
   * `never` (the far side reads the source itself). A lens whose source reads no tables (a
   * stream) cannot use an `always` sink, needs `initialSync: none` with a `for full syncs` one,
   * and a source whose changes carry rows (`SourceCapabilities.carriesRows`) with a `for changes
   * without rows` one. A function: it depends on the lens.
   */
  readsTable: ReadsTable | ((lens: LensConfig) => ReadsTable);
}

/** A sink capability for one lens (`takes`, `readsTable`): the value, or the function's answer. */
export function forLens<T extends string>(capability: T | ((lens: LensConfig) => T), lens: LensConfig): T {
  return typeof capability === 'function' ? capability(lens) : capability;
}

export interface SinkSpec<C extends { type: string } = { type: string }> extends PluginSpec<C> {
  readonly capabilities: SinkCapabilities;
  create(config: C, ctx: SinkContext): Sink | Promise<Sink>;
}

/** Whether a source with this (raw or resolved) config reads tables (`SourceCapabilities.readsTables`). */
export function readsTables(spec: { capabilities: SourceCapabilities }, config: object): boolean {
  const reads = spec.capabilities.readsTables;
  return typeof reads === 'function' ? reads(config as Record<string, unknown>) : reads;
}

/** The config type a spec is for. */
export type ConfigOf<S> = S extends SourceSpec<infer C> ? C : S extends SinkSpec<infer C> ? C : never;

/** Finds the spec of `type` in a registry; throws for a type the config loader would have refused. */
export function specOf<S extends { type: string }>(registry: readonly S[], type: string): S {
  const spec = registry.find((s) => s.type === type);
  if (!spec) throw new Error(`no plugin of type ${JSON.stringify(type)} is registered`);
  return spec;
}
