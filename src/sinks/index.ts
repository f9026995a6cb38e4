/**
 * The sink registry: one line per sink type. Each sink is one folder exporting one spec
 * (src/plugins.ts): its config schema, capabilities and factory.
 */
import type { SinkConfig } from '../config/types.js';
import { specOf, type SinkContext, type SinkSpec } from '../plugins.js';
import type { Sink } from '../types.js';
import { kafkaSinkSpec } from './kafka/spec.js';
import { psykheSpec } from './psykhe/spec.js';
import { semilayerSpec } from './semilayer/spec.js';
import { seynSpec } from './seyn/spec.js';
import { workerSpec } from './worker/spec.js';

export const sinkSpecs = [semilayerSpec, workerSpec, seynSpec, psykheSpec, kafkaSinkSpec] as const;

/** Sink types the design plans that this version does not have yet (a clearer config error). */
export const plannedSinks: string[] = [];

export function sinkSpec(type: string): SinkSpec<SinkConfig> {
  return specOf(sinkSpecs as readonly SinkSpec<any>[], type);
}

/** Creates the sink a validated `SinkConfig` describes. */
export async function createSink(config: SinkConfig, ctx: SinkContext): Promise<Sink> {
  return sinkSpec(config.type).create(config, ctx);
}
