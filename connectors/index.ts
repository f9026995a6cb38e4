/**
 * The source registry: one line per source type. Each source is one folder exporting one spec
 * (src/plugins.ts): its config schema, capabilities, connector factory and row reader.
 */
import type { LensConfig, SourceConfig } from '../src/config/types.js';
import { specOf, type SourceSpec } from '../src/plugins.js';
import { readerOptions } from '../src/rows.js';
import type { ConnectorContext, RowReader, SourceConnector } from '../src/types.js';
import { kafkaSourceSpec } from './kafka/spec.js';
import { kinesisSpec } from './kinesis/spec.js';
import { mysqlSpec } from './mysql/spec.js';
import { postgresSpec } from './postgres/spec.js';

export const sourceSpecs = [postgresSpec, mysqlSpec, kinesisSpec, kafkaSourceSpec] as const;

/** Source types the design plans that this version does not have yet (a clearer config error). */
export const plannedSources: string[] = [];

export function sourceSpec(type: string): SourceSpec<SourceConfig> {
  return specOf(sourceSpecs as readonly SourceSpec<any>[], type);
}

/** The connector of a configured source (after `capture: auto` probed, the one it chose). */
export function createConnector(config: SourceConfig, ctx: ConnectorContext): Promise<SourceConnector> {
  return Promise.resolve(sourceSpec(config.type).create(config, ctx));
}

/**
 * The row reader of a lens of `source`; throws for sources that do not read tables.
 * `forPayload`: for a payload sink (see `readerOptions`).
 */
export function openRowReader(source: SourceConfig, lensName: string, lens: LensConfig, forPayload = false): Promise<RowReader> {
  const spec = sourceSpec(source.type);
  if (!spec.openReader) throw new Error(`source type ${source.type} reads no tables (lens ${lensName})`);
  return spec.openReader(source, readerOptions(lensName, lens, forPayload));
}
