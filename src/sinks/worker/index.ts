/**
 * The `worker` sink: batches go straight into the bundled worker's durable queue in this
 * process. A batch is accepted once its journal entry is on disk, or with `worker.acknowledge:
 * indexed` once it was indexed (worker replicas on a kafka bus: the source then commits its
 * offsets only for indexed changes, and a killed replica's share is read again by another);
 * a full queue is a 429.
 *
 * The worker is one per process: the first worker sink starts it for the lenses of every
 * worker sink (and its HTTP API, when `worker.listen` is set); the last one closed stops it.
 */
import type { Config } from '../../config/types.js';
import { QueueFullError, SinkError, describeError } from '../../errors.js';
import { isRetriable } from '../../retry.js';
import type { SinkContext } from '../../plugins.js';
import type { RecordChange, Sink } from '../../types.js';
import type { RunningWorker } from '../../worker/start.js';
import type { WorkerEngine } from '../../worker/types.js';

const running = new WeakMap<Config, { worker: Promise<RunningWorker>; users: number }>();

export async function createWorkerSink(ctx: SinkContext): Promise<Sink> {
  let shared = running.get(ctx.config);
  if (!shared) {
    // Loaded only when configured: a pipeline to a hosted sink does not pay for the worker's modules.
    const worker = import('../../worker/start.js').then(({ startWorker }) => startWorker(ctx));
    running.set(ctx.config, (shared = { worker, users: 0 }));
  }
  shared.users++;
  const { engine } = await shared.worker;
  const submit = async (lens: string, request: Parameters<WorkerEngine['submit']>[1], committedAt?: number) => {
    try {
      const { seq } = await engine.submit(lens, request, committedAt);
      if (ctx.config.worker?.acknowledge === 'indexed' && !(await engine.indexed(lens, seq))) throw new SinkError(`worker sink, lens "${lens}": the worker stopped before the batch was indexed`, 'transient');
    } catch (err) {
      if (err instanceof SinkError) throw err;
      const where = `worker sink, lens "${lens}"`;
      if (err instanceof QueueFullError) throw new SinkError(`${where}: ${err.message}`, 'rate-limited', { status: 429, retryAfterMs: err.retryAfterSeconds * 1000 }, err);
      // Anything the queue cannot say is worth retrying soon (a full disk, a bug) holds the lens in error.
      throw new SinkError(`${where}: ${describeError(err)}`, isRetriable(err) ? 'transient' : 'fatal', {}, err);
    }
  };
  let closed = false;
  return {
    write: (lens, changes) => submit(lens, { mode: 'records', changes: changes.map(({ id, action }) => ({ id, action })) }, oldestCommit(changes)),
    requestFullSync: (lens) => submit(lens, { mode: 'full' }),
    requestIncrementalSync: (lens) => submit(lens, { mode: 'incremental' }),
    lensStatus: (lens) => engine.status(lens)[0],
    async close() {
      if (closed) return;
      closed = true;
      if (--shared.users > 0) return;
      running.delete(ctx.config);
      await (await shared.worker).stop();
    },
  };
}

function oldestCommit(changes: RecordChange[]): number | undefined {
  let min = Infinity;
  for (const c of changes) if (c.committedAt !== undefined && c.committedAt < min) min = c.committedAt;
  return min === Infinity ? undefined : min;
}
