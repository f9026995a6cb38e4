/**
 * Opening the configured vector index (`worker.index`). One registry line per type; the
 * embedded index is the default, pgvector comes later.
 */
import { join } from 'node:path';
import type { Logger } from '../../types.js';
import type { VectorIndex } from '../types.js';
import { EmbeddedVectorIndex } from './embedded.js';

export { EmbeddedVectorIndex } from './embedded.js';

/**
 * `embedded`: files under `path`, in its `index/` subdirectory (so `path` may be the same
 * data directory as the embedded state store's).
 */
export type IndexConfig = { type: 'embedded'; path: string };

export async function openVectorIndex(config: IndexConfig, options: { logger?: Logger } = {}): Promise<VectorIndex> {
  switch (config.type) {
    case 'embedded':
      return EmbeddedVectorIndex.open(join(config.path, 'index'), options);
    default: {
      const unknown: never = config.type;
      throw new TypeError(`Unknown vector index type ${JSON.stringify(unknown)}`);
    }
  }
}
