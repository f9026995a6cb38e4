/**
 * The position of a Kinesis source: one JSON text for all its shards,
 * `{"shards":{"shardId-000000000001":"4968…"},"done":["shardId-000000000000"],"since":1767225600000}`.
 *
 * - `shards`: the sequence number of each shard's last reported record: it resumes
 *   AFTER_SEQUENCE_NUMBER.
 * - `done`: shards read to their end (SHARD_END) whose records were all reported: never read
 *   again, and their children may start.
 * - `since`: a first start with `startAt: latest` (ms since the epoch): a shard with no
 *   sequence number starts AT_TIMESTAMP there; without it, at TRIM_HORIZON.
 *
 * Shards that no longer exist (trimmed after the retention period) are pruned.
 */
import { SourceSetupError } from '../../src/errors.js';
import type { Position } from '../../src/types.js';

export interface KinesisPosition {
  shards: Record<string, string>;
  done: string[];
  since?: number;
}

export function formatPosition(p: KinesisPosition): Position {
  return JSON.stringify(p);
}

export function parsePosition(text: Position, where: string): KinesisPosition {
  try {
    const p = JSON.parse(text) as KinesisPosition;
    if (p && typeof p.shards === 'object' && Array.isArray(p.done)) return { shards: { ...p.shards }, done: [...p.done], ...(typeof p.since === 'number' ? { since: p.since } : {}) };
  } catch {
    // reported below
  }
  throw new SourceSetupError(`${where}: the saved position ${JSON.stringify(text.slice(0, 200))} is not a Kinesis position (was the source's type changed?)`);
}

/** Drops shards that are no longer in the stream. */
export function prune(p: KinesisPosition, existing: Set<string>): void {
  for (const id of Object.keys(p.shards)) if (!existing.has(id)) delete p.shards[id];
  p.done = p.done.filter((id) => existing.has(id));
}
