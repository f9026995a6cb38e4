/**
 * The HNSW graphs of an embedded index, on a thread of their own (./hnsw.ts is the main
 * thread's side and documents the messages). usearch's calls are synchronous and an insert
 * costs about a millisecond per vector per core at 384 dimensions; here they hold up neither
 * writes nor the HTTP API.
 *
 * Each graph has a queue of vectors waiting for it, inserted in slices of GRAPH_SLICE with a
 * turn of the event loop between slices (searches and saves are answered between them). While
 * vectors keep arriving, inserts use one core, leaving the other to the writer; once they stop
 * (or someone waits for the queue to drain, or it nears its bound), ADD_THREADS.
 */
import { availableParallelism } from 'node:os';
import { parentPort } from 'node:worker_threads';
import usearch, { type Index, type ScalarKind } from 'usearch';
import { describeError } from '../../errors.js';
import { lowerThreadPriority, type ThreadReply } from '../thread.js';
import { TopK } from './exact.js';
import { toInt8, type GraphProgress, type GraphRequest } from './hnsw.js';

const GRAPH_SLICE = 128;
const ADD_THREADS = Math.min(2, availableParallelism());
/** Vectors arrived this recently: the writer is busy, insert on one core... */
const ARRIVING_MS = 500;
/** ...unless the queue is this near its bound (writes about to wait for the graph). */
const CATCH_UP = 0.9;

/** Vectors as they came in one batch, row after row, and their keys. */
interface Batch {
  keys: number[];
  vectors: Float32Array | Int8Array;
}

interface Graph {
  index: Index;
  dims: number;
  i8: boolean;
  /** Vectors waiting, by key, in arrival order: views into their batches. */
  queue: Map<number, Float32Array | Int8Array>;
  /** The batches that still hold a waiting vector (some may hold none), oldest first. */
  waiting: Batch[];
  /** Writes wait once this many are waiting: near it, insert on every core to catch up. */
  backlogMax: number;
  arrivedAt: number;
  /** Batches taken since the graph was opened. */
  batchesTaken: number;
  /** Why the last insert failed; inserts wait for the next batch or drain to try again. */
  failure?: string;
  /** Drain requests waiting for the queue to empty. */
  drains: number[];
}

// Inserting is background work (usearch's threads inherit the priority): writes, searches'
// other steps and the database get the cores first.
lowerThreadPriority(10);

const graphs = new Map<number, Graph>();
let working = false;

const port = parentPort!;
port.on('message', (request: GraphRequest) => {
  try {
    const result = handle(request);
    if ('id' in request && result !== undefined) reply({ id: request.id, result });
  } catch (err) {
    if ('id' in request) reply({ id: request.id, error: describeError(err) });
  }
  workSoon();
});

function reply(message: ThreadReply | GraphProgress): void {
  port.postMessage(message);
}

/** Answers a request; undefined: no answer yet (a drain) or none wanted. */
function handle(request: GraphRequest): unknown {
  switch (request.op) {
    case 'open': {
      const { settings, dims } = request;
      const index = new usearch.Index({
        dimensions: dims,
        metric: usearch.MetricKind.Cos,
        quantization: settings.quantization as ScalarKind,
        connectivity: settings.connectivity,
        expansion_add: settings.expansionAdd,
        expansion_search: settings.expansionSearch,
        multi: false,
      });
      if (request.path) index.load(request.path);
      graphs.set(request.graph, { index, dims, i8: settings.quantization === 'i8', queue: new Map(), waiting: [], backlogMax: request.backlogMax, arrivedAt: 0, batchesTaken: 0, drains: [] });
      return { size: index.size() };
    }
    case 'batch': {
      const g = graph(request.graph);
      const rows = new Float32Array(request.vectors);
      const vectors = g.i8 ? int8Rows(rows, g.dims) : rows;
      request.keys.forEach((key, i) => g.queue.set(key, vectors.subarray(i * g.dims, (i + 1) * g.dims)));
      if (request.keys.length) {
        g.waiting.push({ keys: request.keys, vectors });
        g.arrivedAt = performance.now();
      }
      for (const key of request.drops) g.queue.delete(key);
      g.batchesTaken++;
      g.failure = undefined;
      report(request.graph, g);
      return undefined;
    }
    case 'search': {
      const g = graph(request.graph);
      return { graph: searchGraph(g, request.query, request.k), queued: searchQueue(g, request.query, request.k) };
    }
    case 'save': {
      const g = graph(request.graph);
      g.index.save(request.path);
      return [...g.queue.keys()];
    }
    case 'drain': {
      const g = graph(request.graph);
      g.failure = undefined;
      g.drains.push(request.id);
      return undefined;
    }
    case 'close':
      graphs.delete(request.graph);
      return true;
    case 'shutdown':
      graphs.clear();
      return true;
  }
}

/** f32 rows as i8 rows (`toInt8`): an i8 graph's waiting vectors, a quarter of f32's memory. */
function int8Rows(rows: Float32Array, dims: number): Int8Array {
  const out = new Int8Array(rows.length);
  for (let at = 0; at < rows.length; at += dims) toInt8(rows.subarray(at, at + dims), out, at);
  return out;
}

function graph(id: number): Graph {
  const g = graphs.get(id);
  if (!g) throw new Error(`graph ${id} is not open`);
  return g;
}

/** The keys of the (about) `k` nearest vectors in the graph. */
function searchGraph(g: Graph, query: Float32Array, k: number): number[] {
  const size = g.index.size();
  if (k < 1 || size === 0) return [];
  const found = g.index.search(query, Math.min(k, size), 1);
  const keys: number[] = [];
  // Unused places are padded; usearch marks them with the largest key.
  for (let i = 0; i < found.keys.length; i++) if (found.keys[i] !== 0xffffffffffffffffn) keys.push(Number(found.keys[i]));
  return keys;
}

/** The keys of the `k` queued vectors nearest the query: an exact scan of their batches, natively. */
function searchQueue(g: Graph, query: Float32Array, k: number): number[] {
  const top = new TopK(k);
  const asked = g.i8 ? new Int8Array(query.length) : query;
  if (asked instanceof Int8Array) toInt8(query, asked, 0);
  for (const batch of g.waiting) {
    const found = usearch.exactSearch(batch.vectors, asked, g.dims, Math.min(k, batch.keys.length), usearch.MetricKind.Cos, 1);
    for (let i = 0; i < found.keys.length; i++) {
      const key = batch.keys[Number(found.keys[i])];
      if (key !== undefined && g.queue.has(key) && -found.distances[i] > top.floor) top.offer(key, -found.distances[i]);
    }
  }
  return top.entries().map(([key]) => key);
}

function workSoon(): void {
  if (working) return;
  working = true;
  setImmediate(work);
}

/** One slice into each graph with a queue, then again after the event loop had its turn. */
function work(): void {
  working = false;
  let more = false;
  for (const [id, g] of graphs) {
    if (g.queue.size > 0 && !g.failure) insertSlice(id, g);
    if (g.queue.size === 0 || g.failure) answerDrains(g);
    more ||= g.queue.size > 0 && !g.failure;
  }
  if (more) workSoon();
}

function insertSlice(id: number, g: Graph): void {
  const keys: number[] = [];
  for (const key of g.queue.keys()) {
    if (keys.length === GRAPH_SLICE) break;
    keys.push(key);
  }
  const vectors = g.i8 ? new Int8Array(keys.length * g.dims) : new Float32Array(keys.length * g.dims);
  keys.forEach((key, i) => vectors.set(g.queue.get(key)!, i * g.dims));
  // usearch sizes its per-thread contexts when it grows: a slice that makes it grow uses them all.
  const grows = g.index.size() + keys.length >= g.index.capacity();
  const busy = performance.now() - g.arrivedAt < ARRIVING_MS && g.queue.size < CATCH_UP * g.backlogMax && g.drains.length === 0 && !grows;
  try {
    g.index.add(BigUint64Array.from(keys, (k) => BigInt(k)), vectors, busy ? 1 : ADD_THREADS);
  } catch (err) {
    g.failure = describeError(err);
    report(id, g);
    return;
  }
  for (const key of keys) g.queue.delete(key);
  while (g.waiting.length && !g.waiting[0].keys.some((key) => g.queue.has(key))) g.waiting.shift();
  report(id, g);
}

function report(id: number, g: Graph): void {
  reply({ graph: id, size: g.index.size(), batches: g.batchesTaken, queued: g.queue.size, failure: g.failure });
}

function answerDrains(g: Graph): void {
  for (const id of g.drains.splice(0)) reply(g.failure ? { id, error: g.failure } : { id, result: true });
}
