/**
 * The sink registry: one line per sink type. Adding a sink is one file in this folder and
 * one line in `factories`; the mapped type makes the compiler insist on it.
 */
import type { SinkConfig } from '../config/types.js';
import type { Sink } from '../types.js';
import type { WorkerEngine } from '../worker/types.js';
import { createSemilayerSink } from './semilayer.js';
import { createWorkerSink } from './worker.js';

/** What sinks may need from the running daemon. */
export interface SinkContext {
  /** The bundled worker, when the configuration has one. */
  engine?: WorkerEngine;
}

type SinkFactories = { [T in SinkConfig['type']]: (config: Extract<SinkConfig, { type: T }>, context: SinkContext) => Sink };

const factories: SinkFactories = {
  semilayer: (config) => createSemilayerSink(config),
  worker: (_config, { engine }) => createWorkerSink(engine!),
};

/**
 * Creates the sink a validated `SinkConfig` describes, dispatching on `config.type`.
 * Throws on an unknown type (the config loader rejects those first).
 */
export function createSink(config: SinkConfig, context: SinkContext = {}): Sink {
  if (!Object.hasOwn(factories, config.type)) {
    throw new Error(`unknown sink type ${JSON.stringify((config as { type: unknown }).type)}`);
  }
  const factory = factories[config.type] as (config: SinkConfig, context: SinkContext) => Sink;
  return factory(config, context);
}
