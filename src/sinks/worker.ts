/**
 * The `worker` sink: batches go straight into the bundled worker's durable queue in this
 * process. A batch is accepted once its journal entry is on disk; a full queue is a 429.
 */
import { QueueFullError, SinkError } from '../errors.js';
import type { Sink } from '../types.js';
import type { WorkerEngine } from '../worker/types.js';

export function createWorkerSink(engine: WorkerEngine): Sink {
  const submit = async (lens: string, request: Parameters<WorkerEngine['submit']>[1], committedAt?: number) => {
    try {
      await engine.submit(lens, request, committedAt);
    } catch (err) {
      if (err instanceof QueueFullError) {
        throw new SinkError(`worker sink, lens "${lens}": ${err.message}`, 'rate-limited', { status: 429, retryAfterMs: err.retryAfterSeconds * 1000 }, err);
      }
      throw new SinkError(`worker sink, lens "${lens}": ${(err as Error).message}`, 'transient', {}, err);
    }
  };
  return {
    write: (lens, changes, committedAt) => submit(lens, { mode: 'records', changes }, committedAt),
    requestFullSync: (lens) => submit(lens, { mode: 'full' }),
    requestIncrementalSync: (lens) => submit(lens, { mode: 'incremental' }),
    async close() {},
  };
}
