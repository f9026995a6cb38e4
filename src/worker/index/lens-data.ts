/**
 * What the embedded index holds in memory for one lens: the slot table (id, content hash,
 * place of its latest frame in the record log, graph key), the HNSW graph, the keyword index,
 * and for small lenses a matrix of the vectors for exact search. Texts, metadata and full
 * vectors stay in the record log (./frames.ts) and are read back by position.
 *
 * Every change goes through `apply(frame, offset)`, for a write and for a replay alike. A new
 * vector is queued for the graph, which takes it on its own thread (./hnsw.ts), so writes go at
 * the log's pace; searches scan the queue exactly.
 */
import { Bm25Index } from './bm25.js';
import { OP_DELETE, type Frame, type UpsertFrame } from './frames.js';
import type { GraphListener, GraphThread, HnswGraph, HnswSettings } from './hnsw.js';

/** The text keyword search sees: the content and the metadata's string values. */
export function keywordText(content: string, metadata: Record<string, unknown>): string {
  const strings = Object.values(metadata).filter((v): v is string => typeof v === 'string');
  return strings.length ? `${content} ${strings.join(' ')}` : content;
}

/** The slot table as a checkpoint stores it (./checkpoint.ts). */
export interface SlotTable {
  dims: number;
  ids: string[];
  hashes: string[];
  offsets: number[];
  keys: number[];
  /** The keyword index's bytes (`Bm25Index.serialize`), in chunks. */
  bm25: Iterable<Buffer>;
}

export class LensData {
  dims = 0;
  /** Slots are dense: slot `s` is `ids[s]`; a delete moves the last slot into the freed one. */
  ids: string[] = [];
  hashes: string[] = [];
  /** Byte offset of the slot's latest upsert frame in the current log. */
  offsets: number[] = [];
  /** The slot's key in the graph. */
  keys: number[] = [];
  readonly slotOf = new Map<string, number>();
  readonly slotOfKey = new Map<number, number>();
  graph: HnswGraph | undefined;
  keyword = new Bm25Index();
  /** Row-major unit vectors by slot, kept while the lens has at most `exactBelow` records. */
  matrix: Float32Array | undefined;

  /** Ids in ascending order, maybe with deleted ones (skipped when read); see `sortedIds`. */
  private sorted: string[] = [];
  /** Ids inserted since `sorted` was last merged; undefined: rebuild `sorted` from scratch. */
  private added: string[] | undefined = undefined;

  constructor(
    readonly name: string,
    private readonly graphs: GraphThread,
    private readonly settings: HnswSettings,
    /** Lenses up to this many records are searched exactly, from `matrix`. */
    readonly exactBelow: number,
    /** Writes wait while this many vectors wait for the graph. */
    private readonly graphBacklogMax: number,
    private readonly graphListener: GraphListener,
  ) {}

  get count(): number {
    return this.ids.length;
  }

  /** Applies one logged operation; `offset` is the frame's place in the current log. */
  apply(frame: Frame, offset: number, withGraph = true): void {
    if (frame.op === OP_DELETE) this.remove(frame.id, withGraph);
    else this.put(frame, offset, withGraph);
  }

  /** Nodes of the graph no record holds any more (replaced or deleted; ./hnsw.ts says why they stay). */
  get deadInGraph(): number {
    return this.graph ? this.graph.size - (this.count - this.graph.backlog) : 0;
  }

  /** A new, empty graph for this lens's dimensions (filled by the caller), or one loaded from `path`. */
  newGraph(path?: string): HnswGraph {
    void this.graph?.close();
    this.graph = this.graphs.open(this.dims, this.settings, this.graphBacklogMax, this.graphListener, path);
    return this.graph;
  }

  private put(frame: UpsertFrame, offset: number, withGraph: boolean): void {
    const { id, key, vector } = frame;
    if (this.count === 0 && vector.length !== this.dims) this.reset(vector.length);
    let slot = this.slotOf.get(id);
    if (slot === undefined) {
      slot = this.count;
      this.ids.push(id);
      this.hashes.push(frame.contentHash);
      this.offsets.push(offset);
      this.keys.push(key);
      this.slotOf.set(id, slot);
      this.slotOfKey.set(key, slot);
      this.noteAdded(id);
      if (withGraph) this.graph!.add(key, vector);
    } else {
      const old = this.keys[slot];
      if (old !== key) {
        this.slotOfKey.delete(old);
        this.slotOfKey.set(key, slot);
        if (withGraph) {
          this.graph!.drop(old);
          this.graph!.add(key, vector);
        }
      }
      this.hashes[slot] = frame.contentHash;
      this.offsets[slot] = offset;
      this.keys[slot] = key;
    }
    this.matrixPut(slot, vector);
    this.keyword.set(id, keywordText(frame.content, frame.metadata ?? (JSON.parse(frame.metadataJson) as Record<string, unknown>)));
  }

  private remove(id: string, withGraph: boolean): void {
    const slot = this.slotOf.get(id);
    if (slot === undefined) return;
    const key = this.keys[slot];
    if (withGraph) this.graph!.drop(key);
    const last = this.count - 1;
    if (slot !== last) {
      const moved = this.ids[last];
      this.ids[slot] = moved;
      this.hashes[slot] = this.hashes[last];
      this.offsets[slot] = this.offsets[last];
      this.keys[slot] = this.keys[last];
      this.slotOf.set(moved, slot);
      this.slotOfKey.set(this.keys[slot], slot);
      this.matrix?.copyWithin(slot * this.dims, last * this.dims, last * this.dims + this.dims);
    }
    this.ids.pop();
    this.hashes.pop();
    this.offsets.pop();
    this.keys.pop();
    this.slotOf.delete(id);
    this.slotOfKey.delete(key);
    this.keyword.remove(id);
  }

  private reset(dims: number): void {
    this.dims = dims;
    this.matrix = this.exactBelow > 0 ? new Float32Array(0) : undefined;
    this.newGraph();
  }

  /** Writes a slot's vector into the matrix, growing it; drops the matrix past `exactBelow`. */
  private matrixPut(slot: number, vector: Float32Array): void {
    if (!this.matrix) return;
    if (this.count > this.exactBelow) {
      this.matrix = undefined;
      return;
    }
    const d = this.dims;
    if ((slot + 1) * d > this.matrix.length) {
      const grown = new Float32Array(Math.min(Math.max(1024, 2 * this.count), this.exactBelow) * d);
      grown.set(this.matrix.subarray(0, Math.min(this.matrix.length, grown.length)));
      this.matrix = grown;
    }
    this.matrix.set(vector, slot * d);
  }

  /** The slot table for a checkpoint. */
  table(): SlotTable {
    const { dims, ids, hashes, offsets, keys } = this;
    return { dims, ids, hashes, offsets, keys, bm25: this.keyword.serialize() };
  }

  /** Takes a checkpoint's slot table (the graph is loaded by the caller). */
  restore(table: SlotTable): void {
    this.dims = table.dims;
    this.ids = table.ids;
    this.hashes = table.hashes;
    this.offsets = table.offsets;
    this.keys = table.keys;
    this.ids.forEach((id, slot) => {
      this.slotOf.set(id, slot);
      this.slotOfKey.set(this.keys[slot], slot);
    });
    const parts = [...table.bm25];
    this.keyword = Bm25Index.deserialize(parts.length === 1 ? parts[0] : Buffer.concat(parts));
    this.added = undefined;
  }

  /** Live ids after `after` in ascending string order, at most `limit`. */
  idsAfter(after: string | undefined, limit: number): string[] {
    const sorted = this.sortedIds();
    let lo = 0;
    if (after !== undefined) {
      let hi = sorted.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (sorted[mid] <= after) lo = mid + 1;
        else hi = mid;
      }
    }
    const out: string[] = [];
    for (let i = lo; i < sorted.length && out.length < limit; i++) {
      if (this.slotOf.has(sorted[i])) out.push(sorted[i]);
    }
    return out;
  }

  /** The sorted id list, merged with the ids added since the last call. */
  private sortedIds(): string[] {
    if (this.added === undefined) {
      this.sorted = Array.from(this.slotOf.keys()).sort();
      this.added = [];
    } else if (this.added.length > 0) {
      const added = this.added.sort();
      const merged: string[] = [];
      const old = this.sorted;
      let i = 0;
      let j = 0;
      while (i < old.length || j < added.length) {
        const next = j >= added.length || (i < old.length && old[i] <= added[j]) ? old[i++] : added[j++];
        // Both lists may hold an id more than once (deleted, then inserted again).
        if (merged.length === 0 || merged[merged.length - 1] !== next) merged.push(next);
      }
      this.sorted = merged;
      this.added = [];
    }
    // Too many deleted ids left in the list: drop them.
    if (this.sorted.length > 2 * this.count + 1024) this.sorted = this.sorted.filter((id) => this.slotOf.has(id));
    return this.sorted;
  }

  private noteAdded(id: string): void {
    if (this.added === undefined) return;
    this.added.push(id);
    // Many inserts and no sweep to merge them: rebuild from scratch when next asked.
    if (this.added.length > this.count + 1024) {
      this.added = undefined;
      this.sorted = [];
    }
  }
}
