/**
 * One lens's approximate-nearest-neighbour graph: a usearch HNSW index
 * (https://unum-cloud.github.io/usearch/javascript/) over cosine distance, its vectors held
 * as f32, f16 or i8 (`worker.index.quantization`). Keys are the `key`s of the record log
 * (./frames.ts); the log, not the graph, is the source of truth: the graph is saved with the
 * lens's checkpoints and brought up to date from the log on open.
 *
 * The graphs of an index live on one thread of their own (`GraphThread`, ./graph-thread.ts):
 * `add` queues vectors there and returns at once; the thread inserts them in the background.
 * A search answers from the graph and from an exact scan of the queue, so a written vector is
 * found at once. Messages between the threads are the `GraphRequest`s and their replies, and
 * a `GraphProgress` after each slice the thread inserted.
 *
 * Nothing is ever removed from a graph: usearch 2.25 corrupts its heap when it loads a graph
 * saved with removed entries whose places were not taken again (reproduced: add 256, remove
 * them, add 128, save, load). A replaced or deleted record's node stays, unreachable by key
 * (searches skip keys the slot table does not hold), until the lens's graph is rebuilt.
 */
import { RequestThread } from '../thread.js';

export type Quantization = 'f32' | 'f16' | 'i8';

/** The HNSW settings of `worker.index` (embedded). */
export interface HnswSettings {
  quantization: Quantization;
  /** Links per node (usearch `connectivity`, HNSW's M). */
  connectivity: number;
  /** Candidates kept while inserting (usearch `expansion_add`, HNSW's ef_construction). */
  expansionAdd: number;
  /** Candidates kept while searching (usearch `expansion_search`, HNSW's ef); a search for more results uses that many. */
  expansionSearch: number;
}

/**
 * i8 by default: a quarter of f32's memory and several times faster to insert into, and, since
 * results are scored again from the f32 vectors in the record log, the same scores (recall@10
 * 0.98–1.00 on clustered vectors in bench/ann.ts).
 */
export const DEFAULT_HNSW: HnswSettings = { quantization: 'i8', connectivity: 16, expansionAdd: 64, expansionSearch: 64 };

/** Messages to the graph thread; those with an `id` are answered with a `GraphReply`. */
export type GraphRequest =
  | { op: 'open'; id: number; graph: number; dims: number; settings: HnswSettings; backlogMax: number; path?: string }
  /**
   * Vectors (f32, row after row, one a key) to queue for the graph, and keys to take out of its
   * queue. An i8 graph's vectors wait as i8, a quarter of f32's memory (the thread makes them
   * with `toInt8`, off the main thread).
   */
  | { op: 'batch'; graph: number; keys: number[]; vectors: ArrayBuffer; drops: number[] }
  /** Answers `GraphFound`. */
  | { op: 'search'; id: number; graph: number; query: Float32Array; k: number }
  /** Saves the graph to `path`; answers the keys still queued (not in the saved graph). */
  | { op: 'save'; id: number; graph: number; path: string }
  /** Answered once the graph's queue is empty (inserting on every core meanwhile). */
  | { op: 'drain'; id: number; graph: number }
  | { op: 'close'; id: number; graph: number }
  /** Drops every graph and does no more work: the thread may be terminated once this is answered. */
  | { op: 'shutdown'; id: number };
/** A request as its sender writes it: the thread's side adds the id. */
type Asking<T> = T extends { id: number } ? Omit<T, 'id'> : never;
/** The keys of the about `k` nearest vectors in the graph, and of the `k` nearest waiting for it. */
export interface GraphFound {
  graph: number[];
  queued: number[];
}

/** Sent after each batch the thread took and each slice it inserted (or failed to). */
export interface GraphProgress {
  graph: number;
  size: number;
  /** Batches taken since the graph was opened, and vectors queued after them. */
  batches: number;
  queued: number;
  failure?: string;
}

/** What a graph tells its owner as the thread works. */
export interface GraphListener {
  /** The graph took `count` more vectors. */
  inserted(count: number): void;
  /** Inserting failed (it is tried again with the next vectors, or when drained). */
  failed(why: string): void;
}

/** A batch is sent to the thread once it holds this many vectors (else at the end of the current task). */
const BATCH_MAX = 1024;

/** The thread holding an embedded index's graphs. */
export class GraphThread {
  private readonly thread: RequestThread;
  private readonly graphs = new Map<number, HnswGraph>();
  private nextGraph = 1;

  constructor() {
    this.thread = new RequestThread(
      new URL('./graph-thread.js', import.meta.url),
      'the HNSW graph thread',
      (progress: GraphProgress) => this.graphs.get(progress.graph)?.progress(progress),
      (err) => {
        for (const graph of this.graphs.values()) graph.progress({ ...graph.lastReport, failure: err.message });
      },
    );
  }

  /** A new graph on the thread: empty, or loaded from `path` (once `ready` resolves). */
  open(dims: number, settings: HnswSettings, backlogMax: number, listener: GraphListener, path?: string): HnswGraph {
    const id = this.nextGraph++;
    const opened = this.request<{ size: number }>({ op: 'open', graph: id, dims, settings, backlogMax, path });
    const graph = new HnswGraph(this, id, dims, opened, listener);
    this.graphs.set(id, graph);
    return graph;
  }

  request<T>(message: Asking<GraphRequest>, transfer: ArrayBuffer[] = []): Promise<T> {
    return this.thread.request<T>(message, transfer);
  }

  post(message: GraphRequest, transfer: ArrayBuffer[] = []): void {
    this.thread.post(message, transfer);
  }

  forget(graph: HnswGraph): void {
    this.graphs.delete(graph.id);
  }

  close(): Promise<void> {
    return this.thread.close({ op: 'shutdown' });
  }
}

/** One lens's graph, on its index's `GraphThread`. */
export class HnswGraph {
  /** What the thread last said of the graph (its size when it opened, until its first report). */
  lastReport: GraphProgress;
  /** Vectors in each batch sent and not yet reported taken, and their sum. */
  private unreported: number[] = [];
  private unreportedVectors = 0;
  private keys: number[] = [];
  /** The vectors of `keys`, row after row, as the thread takes them. */
  private readonly vectors: Float32Array;
  private drops: number[] = [];

  /** Resolves once the graph is open (loaded, if it was opened from a file). */
  readonly ready: Promise<void>;

  constructor(
    private readonly thread: GraphThread,
    readonly id: number,
    readonly dims: number,
    opened: Promise<{ size: number }>,
    private readonly listener: GraphListener,
  ) {
    this.lastReport = { graph: id, size: 0, batches: 0, queued: 0 };
    this.vectors = new Float32Array(BATCH_MAX * dims);
    this.ready = opened.then(({ size }) => {
      this.lastReport = { ...this.lastReport, size };
    });
    this.ready.catch(() => undefined); // observed by whoever waits for it; a batch after a failed open fails in turn
  }

  /** Nodes in the graph, as last reported. */
  get size(): number {
    return this.lastReport.size;
  }

  /** Why inserting failed, until a slice succeeds. */
  get failure(): string | undefined {
    return this.lastReport.failure;
  }

  /** Vectors queued for the graph but not yet in it (searched exactly meanwhile). */
  get backlog(): number {
    return this.lastReport.queued + this.unreportedVectors + this.keys.length;
  }

  /** Queues (a copy of) a vector for the graph. */
  add(key: number, vector: Float32Array): void {
    this.vectors.set(vector, this.keys.length * this.dims);
    this.keys.push(key);
    this.sendSoon();
  }

  /** Takes a key out of the queue, if it is still there (a replaced or deleted record). */
  drop(key: number): void {
    this.drops.push(key);
    this.sendSoon();
  }

  /** The keys of the (about) `k` nearest vectors in the graph and of the `k` nearest queued, to a unit-length query. */
  search(query: Float32Array, k: number): Promise<GraphFound> {
    this.send();
    return this.thread.request({ op: 'search', graph: this.id, query, k });
  }

  /** Saves the graph to `path`; resolves to the keys still queued, which the saved graph lacks. */
  save(path: string): Promise<number[]> {
    this.send();
    return this.thread.request({ op: 'save', graph: this.id, path });
  }

  /** Resolves once every queued vector is in the graph (rejects if inserting fails). */
  drained(): Promise<void> {
    this.send();
    return this.thread.request({ op: 'drain', graph: this.id });
  }

  async close(): Promise<void> {
    this.thread.forget(this);
    await this.thread.request({ op: 'close', graph: this.id }).catch(() => undefined);
  }

  progress(report: GraphProgress): void {
    const last = this.lastReport;
    for (let b = last.batches; b < report.batches; b++) this.unreportedVectors -= this.unreported.shift() ?? 0;
    this.lastReport = report;
    if (report.failure && report.failure !== last.failure) this.listener.failed(report.failure);
    if (report.size > last.size) this.listener.inserted(report.size - last.size);
  }

  private sendSoon(): void {
    if (this.keys.length >= BATCH_MAX) this.send();
    else if (this.keys.length + this.drops.length === 1) queueMicrotask(() => this.send());
  }

  private send(): void {
    if (this.keys.length === 0 && this.drops.length === 0) return;
    const vectors = this.vectors.slice(0, this.keys.length * this.dims);
    this.thread.post({ op: 'batch', graph: this.id, keys: this.keys, vectors: vectors.buffer, drops: this.drops }, [vectors.buffer]);
    this.unreported.push(this.keys.length);
    this.unreportedVectors += this.keys.length;
    this.keys = [];
    this.drops = [];
  }
}

/**
 * A vector as i8 into `out` at `at`, scaled so its largest |component| is 127 and rounded (the
 * scale does not change a cosine; usearch scales what it is given by its norm and casts again).
 */
export function toInt8(vector: Float32Array, out: Int8Array, at: number): void {
  let max = 0;
  for (let j = 0; j < vector.length; j++) max = Math.max(max, Math.abs(vector[j]));
  const scale = max === 0 ? 0 : 127 / max;
  // Math.floor(x + 0.5) rounds as Math.round does, several times faster in V8 here.
  for (let j = 0; j < vector.length; j++) out[at + j] = Math.floor(vector[j] * scale + 0.5);
}
