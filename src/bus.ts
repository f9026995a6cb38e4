/**
 * The Tributary change bus format (`format: tributary`): what the `kafka` sink publishes
 * (src/sinks/kafka/) and the `kafka` source reads back (connectors/kafka/), so one capture
 * process can feed many workers (README, "Worker replicas over Kafka").
 *
 * - A change: key `<lens>/<id>`, value `{ "lens", "id", "action": "upsert" | "delete",
 *   "committedAt" (ms since the epoch), "row"? }`. The key keeps every change of an id in one
 *   partition, so their order survives the bus.
 * - A sync request (a full sync the capture side asked for, e.g. after a truncate): key
 *   `<lens>/`, value `{ "lens", "sync": "full" | "incremental", "requestedAt" }`.
 */
import type { Action, RecordChange } from './types.js';

export type BusMessage =
  | { lens: string; id: string; action: Action; committedAt: number; row?: Record<string, unknown> }
  | { lens: string; sync: 'full' | 'incremental'; requestedAt: number };

/** The key and value of one change; `rowJson`: its row's JSON (default: the row it carried, if any). */
export function encodeChange(lens: string, change: RecordChange, rowJson = change.row && JSON.stringify(change.row), now = Date.now()): { key: string; value: string } {
  const message: BusMessage = { lens, id: change.id, action: change.action, committedAt: change.committedAt ?? now };
  const value = JSON.stringify(message);
  return { key: `${lens}/${change.id}`, value: rowJson === undefined ? value : `${value.slice(0, -1)},"row":${rowJson}}` };
}

/** The key and value of a sync request. */
export function encodeSync(lens: string, sync: 'full' | 'incremental', now = Date.now()): { key: string; value: string } {
  return { key: `${lens}/`, value: JSON.stringify({ lens, sync, requestedAt: now } satisfies BusMessage) };
}

/** Parses one bus value; throws a description of what is wrong for anything else. */
export function decodeBusMessage(value: Buffer | null): BusMessage {
  if (value === null) throw new Error('a null value (tombstone) is not a bus message');
  const m = JSON.parse(value.toString('utf8')) as Record<string, unknown>;
  if (!m || typeof m !== 'object' || typeof m.lens !== 'string') throw new Error('no "lens" string');
  if ('sync' in m) {
    if (m.sync !== 'full' && m.sync !== 'incremental') throw new Error(`"sync" is ${JSON.stringify(m.sync)}, not full or incremental`);
    return { lens: m.lens, sync: m.sync, requestedAt: Number(m.requestedAt) || Date.now() };
  }
  if (typeof m.id !== 'string') throw new Error('no "id" string');
  if (m.action !== 'upsert' && m.action !== 'delete') throw new Error(`"action" is ${JSON.stringify(m.action)}, not upsert or delete`);
  if (typeof m.committedAt !== 'number') throw new Error('no "committedAt" number');
  const row = m.row && typeof m.row === 'object' ? (m.row as Record<string, unknown>) : undefined;
  return { lens: m.lens, id: m.id, action: m.action, committedAt: m.committedAt, ...(row ? { row } : {}) };
}
