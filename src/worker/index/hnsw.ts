/**
 * One lens's approximate-nearest-neighbour graph: a usearch HNSW index
 * (https://unum-cloud.github.io/usearch/javascript/) over cosine distance, its vectors held
 * as f32, f16 or i8 (`worker.index.quantization`). Keys are the `key`s of the record log
 * (./frames.ts); the log, not the graph, is the source of truth: the graph is saved with the
 * lens's checkpoints and brought up to date from the log on open.
 *
 * Nothing is ever removed from a graph: usearch 2.25 corrupts its heap when it loads a graph
 * saved with removed entries whose places were not taken again (reproduced: add 256, remove
 * them, add 128, save, load). A replaced or deleted record's node stays, unreachable by key
 * (searches skip keys the slot table does not hold), until the lens's graph is rebuilt.
 */
import usearch, { type Index, type ScalarKind } from 'usearch';

export type Quantization = 'f32' | 'f16' | 'i8';

/** Vectors as a graph holds them: i8 for an i8 graph (see `HnswGraph.encode`), else f32. */
export type GraphVectors = Float32Array | Int8Array;

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

/** Threads usearch may use for a batch insert (the machine's cores are shared with the daemon). */
const ADD_THREADS = 2;

export class HnswGraph {
  private readonly index: Index;

  private readonly quantization: Quantization;

  constructor(
    readonly dims: number,
    settings: HnswSettings,
  ) {
    this.quantization = settings.quantization;
    this.index = new usearch.Index({
      dimensions: dims,
      metric: usearch.MetricKind.Cos,
      quantization: settings.quantization as ScalarKind,
      connectivity: settings.connectivity,
      expansion_add: settings.expansionAdd,
      expansion_search: settings.expansionSearch,
      multi: false,
    });
  }

  get size(): number {
    return this.index.size();
  }

  /** Adds vectors (`keys.length` vectors, row after row, as floats or as `encode` gave them). */
  add(keys: number[], vectors: GraphVectors): void {
    if (keys.length === 0) return;
    this.index.add(BigUint64Array.from(keys, (k) => BigInt(k)), vectors, ADD_THREADS);
  }

  /** The keys of the (about) `k` nearest vectors to a unit-length query, nearest first. */
  search(query: Float32Array, k: number): number[] {
    if (k < 1 || this.size === 0) return [];
    const found = this.index.search(query, Math.min(k, this.size), 1);
    const keys: number[] = [];
    // Unused places are padded; usearch marks them with the largest key.
    for (let i = 0; i < found.keys.length; i++) if (found.keys[i] !== 0xffffffffffffffffn) keys.push(Number(found.keys[i]));
    return keys;
  }

  /**
   * A vector as the graph holds it, for keeping it compactly until it is added: for i8, scaled
   * so its largest component is ±127 and rounded (the scale of a vector does not change its
   * cosine; usearch scales what it is given by its norm and casts it to i8 again), else as is.
   */
  encode(vectors: Float32Array): GraphVectors {
    if (this.quantization !== 'i8') return vectors;
    return toInt8(vectors, this.dims);
  }

  save(path: string): void {
    this.index.save(path);
  }

  load(path: string): void {
    this.index.load(path);
  }
}

/** Row-major vectors of `dims` as i8, each scaled so its largest |component| is 127, rounded. */
export function toInt8(vectors: Float32Array, dims: number): Int8Array {
  const out = new Int8Array(vectors.length);
  for (let row = 0; row < vectors.length; row += dims) {
    let max = 0;
    for (let j = row; j < row + dims; j++) max = Math.max(max, Math.abs(vectors[j]));
    if (max === 0) continue;
    const scale = 127 / max;
    for (let j = row; j < row + dims; j++) out[j] = Math.round(vectors[j] * scale);
  }
  return out;
}
