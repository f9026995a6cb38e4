/**
 * The embedder registry: `worker.embedder` in the config names a type, and this module turns
 * it into an Embedder. Adding an embedder is one file and one line in `factories`.
 *
 * - `hash` (default): offline, deterministic, lexical feature hashing (./hash.ts).
 * - `openai`: any OpenAI-compatible `/v1/embeddings` API (./openai.ts).
 */
import { TributaryError } from '../../errors.js';
import type { Embedder } from '../types.js';
import { createHashEmbedder } from './hash.js';
import type { EmbedderConfig } from '../../config/types.js';
import { createOpenAIEmbedder } from './openai.js';

export type { EmbedderConfig, OpenAIEmbedderConfig } from '../../config/types.js';

type Factories = { [T in EmbedderConfig['type']]: (config: Extract<EmbedderConfig, { type: T }>) => Embedder };

const factories: Factories = {
  hash: (config) => createHashEmbedder({ dimensions: config.dimensions }),
  openai: (config) => createOpenAIEmbedder(config),
};

/** Creates the embedder a config describes. Throws a TributaryError when the config is unusable. */
export function createEmbedder(config: EmbedderConfig): Embedder {
  const factory = factories[config.type] as ((config: EmbedderConfig) => Embedder) | undefined;
  if (!factory) {
    throw new TributaryError(`unknown embedder type ${JSON.stringify(config.type)} (expected one of: ${Object.keys(factories).join(', ')})`);
  }
  return factory(config);
}
