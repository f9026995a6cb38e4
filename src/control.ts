/**
 * Operator requests (`tributary pause|resume|ingest|dlq`) reach the running daemon through the
 * state store. The replica that reads a lens's source takes the lens's requests (a standby
 * leaves them for it), applies them, and writes a reply under `replies/<request id>` that the
 * CLI waits for and prints: a request is reported done only once it took effect (changes
 * queued by `ingest --mode records` or `dlq replay`: once the sink accepted them).
 *
 * A source every replica reads (a Kafka consumer group) has its requests taken by one of them.
 * The others follow what it stored, every second: a lens's pause (so pause and resume hold on
 * every replica) and the lens's dead-letter count (the queue is one, in the store).
 */
import type { DeadLetters } from './dead-letters.js';
import { describeError } from './errors.js';
import type { Pipeline } from './pipeline.js';
import { isExpired, type ControlReply, type ControlRequest, type Logger, type StateStore } from './types.js';

/** How often the daemon takes requests. */
const CONTROL_INTERVAL_MS = 1000;
/** Replies nobody read are removed after this long. */
const REPLY_TTL_MS = 3600_000;

export const replyKey = (requestId: string) => `replies/${requestId}`;

export interface ControlOptions {
  state: StateStore;
  /** The pipelines this process reads now (it holds their sources' leases). */
  active: () => Pipeline[];
  deadLetters: DeadLetters;
  log: Logger;
}

/** Takes and applies requests every second until `stop`. */
export function startControl(options: ControlOptions): { stop(): void } {
  let busy = false;
  let prunedAt = 0;
  const tick = async () => {
    const pipelines = options.active();
    if (busy || pipelines.length === 0) return;
    busy = true;
    try {
      await followReplicas(pipelines.filter((p) => p.sharedReading), options.deadLetters);
      const lenses = pipelines.flatMap((p) => [...p.lenses.keys()]);
      for (const { id, request } of await options.state.takeRequests(lenses)) {
        if (isExpired(request)) {
          options.log.warn({ lens: request.lens, request: request.kind }, 'operator request expired before the daemon saw it (the CLI gave up); ignored');
          continue;
        }
        const pipeline = pipelines.find((p) => p.lenses.has(request.lens))!;
        void answer(options, id, apply(pipeline, request, options.deadLetters, options.log));
      }
      if (Date.now() - prunedAt > REPLY_TTL_MS / 4) prunedAt = await pruneReplies(options.state);
    } catch (err) {
      options.log.warn({ err: describeError(err) }, 'cannot read operator requests');
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void tick(), CONTROL_INTERVAL_MS);
  return { stop: () => clearInterval(timer) };
}

/** Applies what other replicas reading these sources stored: pauses, dead letters. */
async function followReplicas(shared: Pipeline[], deadLetters: DeadLetters): Promise<void> {
  if (shared.length === 0) return;
  for (const p of shared) await p.followPause();
  await deadLetters.load(shared.flatMap((p) => [...p.lenses.keys()]));
}

/** Applies one request to the pipeline that reads its lens; resolves with what to tell the operator. */
async function apply(pipeline: Pipeline, request: ControlRequest, deadLetters: DeadLetters, log: Logger): Promise<string> {
  const lens = request.lens;
  log.info({ lens, request: request.kind, mode: 'mode' in request ? request.mode : undefined }, 'operator request');
  switch (request.kind) {
    case 'pause':
    case 'resume':
      await pipeline.setPaused(lens, request.kind === 'pause');
      return `${request.kind === 'pause' ? 'paused' : 'resumed'} lens ${lens}`;
    case 'ingest':
      if (request.mode !== 'records') {
        pipeline.requestSync(lens, request.mode);
        return `requested ${request.mode === 'full' ? 'a full' : 'an incremental'} sync of lens ${lens}`;
      }
      if (!(await pipeline.enqueue(lens, request.changes))) throw new Error(`the daemon stopped before the ${request.changes.length} change(s) were delivered; send them again`);
      return `delivered ${request.changes.length} change(s) of lens ${lens}`;
    case 'dlq':
      if (request.action === 'drop') return `dropped ${await deadLetters.drop(lens, request.ids)} dead letter(s) of lens ${lens}`;
      return `delivered ${await deadLetters.replay(lens, request.ids, (changes) => pipeline.enqueue(lens, changes))} dead letter(s) of lens ${lens} again`;
  }
}

async function answer(options: ControlOptions, id: string, outcome: Promise<string>): Promise<void> {
  const reply: ControlReply = await outcome.then(
    (message) => ({ ok: true, message, at: new Date().toISOString() }),
    (err) => ({ ok: false, message: describeError(err), at: new Date().toISOString() }),
  );
  if (!reply.ok) options.log.error({ request: id, err: reply.message }, 'operator request failed');
  await options.state.put(replyKey(id), reply).catch((err) => options.log.warn({ err: describeError(err) }, 'cannot write the reply to an operator request'));
}

/** Removes replies older than REPLY_TTL_MS; returns when it ran. */
async function pruneReplies(state: StateStore): Promise<number> {
  for (const key of await state.keys('replies/')) {
    const reply = await state.get<ControlReply>(key);
    if (!reply || Date.now() - Date.parse(reply.at) > REPLY_TTL_MS) await state.delete(key);
  }
  return Date.now();
}
