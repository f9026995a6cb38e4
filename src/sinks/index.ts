/**
 * The sink registry: one line per sink type. Adding a sink is one file in this folder and
 * one line in `factories`; the mapped type makes the compiler insist on it.
 */
import type { SinkConfig } from '../config/types.js';
import type { Sink } from '../types.js';
import { createSemilayerSink } from './semilayer.js';

type SinkFactories = { [T in SinkConfig['type']]: (config: Extract<SinkConfig, { type: T }>) => Sink };

const factories: SinkFactories = {
  semilayer: createSemilayerSink,
};

/**
 * Creates the sink a validated `SinkConfig` describes, dispatching on `config.type`.
 * Throws on an unknown type (the config loader rejects those first).
 */
export function createSink(config: SinkConfig): Sink {
  if (!Object.hasOwn(factories, config.type)) {
    throw new Error(`unknown sink type ${JSON.stringify((config as { type: unknown }).type)}`);
  }
  const factory = factories[config.type] as (config: SinkConfig) => Sink;
  return factory(config);
}
