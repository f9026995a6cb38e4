/**
 * Opening the configured vector index (`worker.index`). One registry line per type: the
 * embedded index is the default; pgvector serves production deployments.
 */
import { join } from 'node:path';
import type { Logger } from '../../types.js';
import type { VectorIndex } from '../types.js';
import type { IndexConfig } from '../../config/types.js';
import { EmbeddedVectorIndex } from './embedded.js';
import { PgvectorIndex } from './pgvector.js';

export { EmbeddedVectorIndex } from './embedded.js';
export { PgvectorIndex } from './pgvector.js';
export type { IndexConfig } from '../../config/types.js';

/** The keys of `o` whose values are defined (so defaults are not overwritten by undefined). */
function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** `embedded` keeps its files in the `index/` subdirectory of `path` (beside the worker's queue). */
export async function openVectorIndex(config: IndexConfig, options: { logger?: Logger } = {}): Promise<VectorIndex> {
  switch (config.type) {
    case 'embedded':
      return EmbeddedVectorIndex.open(join(config.path, 'index'), {
        ...options,
        exactBelow: config.exactBelow,
        hnsw: definedOnly({ quantization: config.quantization, connectivity: config.connectivity, expansionAdd: config.expansionAdd, expansionSearch: config.expansionSearch }),
      });
    case 'pgvector':
      return PgvectorIndex.open({ url: config.url, schema: config.schema }, { ...options, hnsw: definedOnly({ m: config.m, efConstruction: config.efConstruction, efSearch: config.efSearch }) });
    default: {
      const unknown: never = config;
      throw new TypeError(`Unknown vector index type ${JSON.stringify((unknown as { type: unknown }).type)}`);
    }
  }
}
