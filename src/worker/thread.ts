/**
 * A worker thread that answers requests: the main thread's side. `request` posts a message with
 * a fresh `id`; the thread answers `{ id, result }` or `{ id, error }`. Any other message from the
 * thread goes to `onMessage`. The thread keeps the process up only while a request waits for
 * its answer, and when it dies every waiting request fails.
 */
import { setPriority } from 'node:os';
import { Worker } from 'node:worker_threads';
import { TributaryError } from '../errors.js';

/**
 * Called on a thread: lowers its scheduling priority (and that of threads it starts) by `nice`,
 * so the main thread it works for keeps its core on a small machine (waking a helper thread of
 * equal priority often takes the waker's core). Linux only: there setpriority on "this process"
 * means the calling thread; elsewhere it would lower the whole process.
 */
export function lowerThreadPriority(nice: number): void {
  if (process.platform === 'linux') setPriority(0, nice);
}

export type ThreadReply = { id: number; result: unknown } | { id: number; error: string };

export class RequestThread {
  private readonly worker: Worker;
  private readonly waiting = new Map<number, { resolve: (value: any) => void; reject: (err: Error) => void }>();
  private nextId = 1;
  /** Why the thread can no longer answer (it died, or was closed). */
  broken: Error | undefined;

  constructor(
    script: URL,
    /** Names the thread in errors ("the HNSW graph thread"). */
    private readonly name: string,
    private readonly onMessage: (message: any) => void = () => {},
    private readonly onFail: (err: Error) => void = () => {},
  ) {
    this.worker = new Worker(script);
    this.worker.on('message', (message: ThreadReply | object) => {
      if (!('id' in message)) return this.onMessage(message);
      const waiter = this.waiting.get(message.id);
      this.waiting.delete(message.id);
      if (this.waiting.size === 0) this.worker.unref();
      if ('error' in message) waiter?.reject(new TributaryError(`${this.name}: ${message.error}`));
      else waiter?.resolve(message.result);
    });
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => this.fail(new Error(`exited (${code})`)));
    this.worker.unref(); // after the listeners: adding a 'message' listener refs the worker again
  }

  request<T>(message: object, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.broken) return Promise.reject(this.broken);
    const id = this.nextId++;
    const answer = new Promise<T>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    this.worker.ref(); // a request waiting keeps the process up
    this.worker.postMessage({ ...message, id }, transfer);
    return answer;
  }

  /** Posts a message no answer is expected to. */
  post(message: object, transfer: ArrayBuffer[] = []): void {
    if (!this.broken) this.worker.postMessage(message, transfer);
  }

  /**
   * Stops the thread: first sends `goodbye` (if given) and waits for its answer, so a thread
   * running native code stops between two calls of it rather than in one (a worker terminated
   * inside an addon's call can abort the process).
   */
  async close(goodbye?: object): Promise<void> {
    if (goodbye) await this.request(goodbye).catch(() => undefined);
    this.broken ??= new TributaryError(`${this.name} is closed`);
    await this.worker.terminate();
  }

  private fail(err: Error): void {
    const first = !this.broken;
    this.broken ??= new TributaryError(`${this.name} stopped: ${err.message}`);
    for (const { reject } of this.waiting.values()) reject(this.broken);
    this.waiting.clear();
    if (first) this.onFail(this.broken);
  }
}
