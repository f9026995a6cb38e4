/**
 * A child process for test/embedded-hnsw.test.ts: writes a deterministic workload to an
 * embedded index until it is killed, and after each write resolves appends its step number to
 * an acknowledgement file (as the worker's queue would mark a job done).
 *
 * Usage: node index-writer.js <index dir> <ack file> <first step>
 */
import { appendFileSync, closeSync, fsyncSync, openSync } from 'node:fs';
import { EmbeddedVectorIndex } from '../../src/worker/index/embedded.js';
import type { VectorIndex } from '../../src/worker/types.js';
import { random, record, unit } from './vector-index-contract.js';

export const WRITER_OPTIONS = { exactBelow: 0, checkpointFrames: 1500, checkpointIntervalMs: 0, hnsw: { quantization: 'i8' as const } };
const DIMS = 32;
const BATCH = 200;

/** What step `step` does: even steps upsert 200 ids (half of them again), odd steps delete 50. */
export function stepOps(step: number): { upsert?: string[]; delete?: string[] } {
  const b = Math.floor(step / 2);
  if (step % 2 === 0) return { upsert: Array.from({ length: BATCH }, (_, i) => String(b * 100 + i)) };
  return { delete: Array.from({ length: 50 }, (_, i) => String(b * 100 + 2 * i)) };
}

/** The record an upsert at `step` writes for `id`. */
export function stepRecord(step: number, id: string) {
  const next = random(Number(id) * 7919 + step);
  return record(id, unit(Array.from({ length: DIMS }, next)), `id ${id} at step ${step}`, { step });
}

/** Applies step `step` to an index (the queue's replay does the same). */
export async function applyStep(index: VectorIndex, step: number): Promise<void> {
  const ops = stepOps(step);
  if (ops.upsert) await index.upsert('p', ops.upsert.map((id) => stepRecord(step, id)));
  if (ops.delete) await index.delete('p', ops.delete);
}

/** The table after steps 0 … `last`: id → the step of its current version. */
export function tableAfter(last: number): Map<string, number> {
  const table = new Map<string, number>();
  for (let step = 0; step <= last; step++) {
    const ops = stepOps(step);
    for (const id of ops.upsert ?? []) table.set(id, step);
    for (const id of ops.delete ?? []) table.delete(id);
  }
  return table;
}

if (process.argv[1]?.endsWith('index-writer.js')) {
  const [dir, ackPath, first] = process.argv.slice(2);
  const index = await EmbeddedVectorIndex.open(dir, WRITER_OPTIONS);
  const ack = openSync(ackPath, 'a');
  for (let step = Number(first); ; step++) {
    await applyStep(index, step);
    appendFileSync(ack, `${step}\n`);
    fsyncSync(ack);
  }
  closeSync(ack);
}
