/**
 * Opening the configured state store. The daemon opens it writable (one writer per embedded
 * directory, enforced by a lock file); `status` and `dlq list` open it read-only beside it.
 */
import type { StateConfig } from '../config/types.js';
import type { StateStore } from '../types.js';
import { EmbeddedStateStore } from './embedded.js';
import { PostgresStateStore } from './postgres.js';

export { EmbeddedStateStore } from './embedded.js';
export { PostgresStateStore } from './postgres.js';

export async function openStateStore(config: StateConfig, options: { readOnly?: boolean } = {}): Promise<StateStore> {
  switch (config.type) {
    case 'embedded':
      return EmbeddedStateStore.open(config.path, options);
    case 'postgres':
      return PostgresStateStore.open(config, options);
    default: {
      const unknown: never = config;
      throw new TypeError(`Unknown state store type ${JSON.stringify((unknown as { type: unknown }).type)}`);
    }
  }
}
