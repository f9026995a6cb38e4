/**
 * One lens's approximate-nearest-neighbour graph: a usearch HNSW index
 * (https://unum-cloud.github.io/usearch/javascript/) over cosine distance, its vectors held
 * as f32, f16 or i8 (`worker.index.quantization`). Keys are the `key`s of the record log
 * (./frames.ts); the log, not the graph, is the source of truth: the graph is saved with the
 * lens's checkpoints and brought up to date from the log on open.
 */
import usearch, { type Index, type ScalarKind } from 'usearch';

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

/** Threads usearch may use for a batch insert (the machine's cores are shared with the daemon). */
const ADD_THREADS = 2;

export class HnswGraph {
  private readonly index: Index;

  constructor(
    readonly dims: number,
    settings: HnswSettings,
  ) {
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

  /** Adds vectors (`keys.length` × dims floats, row after row). */
  add(keys: number[], vectors: Float32Array): void {
    if (keys.length === 0) return;
    this.index.add(BigUint64Array.from(keys, (k) => BigInt(k)), vectors, ADD_THREADS);
  }

  remove(keys: number[]): void {
    if (keys.length > 0) this.index.remove(BigUint64Array.from(keys, (k) => BigInt(k)));
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

  save(path: string): void {
    this.index.save(path);
  }

  load(path: string): void {
    this.index.load(path);
  }
}
