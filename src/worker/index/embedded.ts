/**
 * The embedded vector index (`worker.index: { type: embedded }`): per lens, a binary record
 * log on disk (./frames.ts), an HNSW graph in memory (./hnsw.ts, usearch), a BM25 keyword
 * index (./bm25.ts) and the slot table that ties them together (./lens-data.ts); checkpoints
 * of the graph, the table and the keyword index (./checkpoint.ts) make a restart a load, not a
 * rebuild.
 *
 * - Writes of one lens apply one at a time, in call order: each call appends its frames to the
 *   log in one write and fsyncs it, then applies them in memory, so what a resolved call wrote
 *   survives a crash at any instant (docs/architecture.md, delivery guarantee 1).
 * - Semantic search is exact (a scan of every vector) for lenses of at most `exactBelow`
 *   records, for more than `EXACT_LIMIT` results, and when asked; otherwise the graph proposes
 *   candidates, which are scored again exactly from the full-precision vectors in the log, and
 *   the vectors not yet in the graph (its thread inserts them in the background) are scanned.
 * - Texts, metadata and vectors are read back from the log by position (page-cached reads), so
 *   memory holds per record only its id, hash, place and its quantized vector in the graph.
 * - `index.lock` holds the pid of the one process allowed to write the directory.
 */
import { endianness } from 'node:os';
import { mkdir, open, readdir, realpath, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeError, TributaryError } from '../../errors.js';
import { lockDirectory, syncDirectory } from '../../files.js';
import type { Logger } from '../../types.js';
import type { IndexRecord, SearchHit, VectorIndex } from '../types.js';
import { checkLensName, checkMetadataUpdate, checkUpsert } from './checks.js';
import { graphName, lensFiles, logName, readCheckpoint, removeOthers, writeCheckpoint, type LensFiles } from './checkpoint.js';
import { scanMatrix, score, TopK, unitLength } from './exact.js';
import { decodePayload, encodeFrames, OP_DELETE, OP_UPSERT, payloadId, payloadVector, readFrameSync, readVectorSync, scanFrames, ScratchBuffer, type Frame, type UpsertFrame } from './frames.js';
import { DEFAULT_HNSW, GraphThread, type HnswSettings } from './hnsw.js';
import { LensData } from './lens-data.js';

const LOCK = { file: 'index.lock', kind: 'the vector index directory', owner: 'Tributary worker', setting: 'worker.index.path' };
/** A log is compacted when it holds more than this many frames and more than 2× the live records. */
const COMPACT_MIN_FRAMES = 1_000;
/** Graph (and pending) candidates rescored exactly per result asked for. */
const CANDIDATES_PER_RESULT = 8;
/** A graph with more dead nodes than this and than live records is rebuilt when the index opens. */
const DEAD_REBUILD_MIN = 1_000;
/** A graph search whose nearest keys are mostly dead nodes is widened up to this many times. */
const DEAD_WIDENING = 16;
/** Searches for more results than this are exact (a graph search that wide costs as much). */
const EXACT_LIMIT = 1_000;
/**
 * Vectors waiting for the graph are held in memory and scanned by every search: past
 * GRAPH_BACKLOG_MAX of them, upserts wait for the graph (checked every GRAPH_WAIT_MS).
 */
const GRAPH_BACKLOG_MAX = 100_000;
const GRAPH_WAIT_MS = 5;

export interface EmbeddedIndexOptions {
  /** Where compaction and checkpoint failures are reported (they are retried later; writes carry on). */
  logger?: Logger;
  /** The graph's settings (`worker.index`); defaults in DEFAULT_HNSW. */
  hnsw?: Partial<HnswSettings>;
  /** Lenses of at most this many records are searched exactly (default 10,000; 0: never, unless asked). */
  exactBelow?: number;
  /** Upserts wait while this many written records are not yet in the lens's graph (default GRAPH_BACKLOG_MAX). */
  graphBacklogMax?: number;
  /**
   * A checkpoint is written once this many frames (or a tenth of the lens, if more) were logged
   * since the last (default 20,000), and `checkpointIntervalMs` passed (default 10 s: a
   * checkpoint of a large lens takes a while, and a bulk load would otherwise spend much of its
   * time on them; a crash replays at most that long's writes).
   */
  checkpointFrames?: number;
  checkpointIntervalMs?: number;
}

/** A lens's in-memory data and its files. */
interface Lens {
  data: LensData;
  gen: number;
  /** The log, open for appending, and the descriptor reads use. */
  log: FileHandle | undefined;
  logBytes: number;
  /** Frames in the log, and frames since the last checkpoint. */
  frames: number;
  sinceCheckpoint: number;
  /** When the last checkpoint was written (performance.now()). */
  checkpointedAt: number;
  nextSeq: number;
  /** No compaction before the log holds this many frames (raised after a failed one). */
  compactAfter: number;
  /** Writes of this lens, one at a time, in call order. */
  queue: Promise<unknown>;
  /** Where each write is encoded. */
  scratch: ScratchBuffer;
  /** Vectors the graph took since the last checkpoint. */
  graphedSinceCheckpoint: number;
}

export class EmbeddedVectorIndex implements VectorIndex {
  private readonly lenses = new Map<string, Lens>();
  private closed = false;
  /** Started once the directory is locked. */
  private graphs!: GraphThread;
  private readonly hnsw: HnswSettings;
  private readonly exactBelow: number;
  private readonly graphBacklogMax: number;
  /** Releases the directory lock. */
  private unlock: () => Promise<void> = async () => {};

  private constructor(
    /** The index directory, absolute. */
    readonly dir: string,
    private readonly options: EmbeddedIndexOptions,
  ) {
    this.hnsw = { ...DEFAULT_HNSW, ...options.hnsw };
    this.exactBelow = options.exactBelow ?? 10_000;
    this.graphBacklogMax = options.graphBacklogMax ?? GRAPH_BACKLOG_MAX;
  }

  /** Opens (creating if missing) the directory `dir` and loads every lens in it. */
  static async open(dir: string, options: EmbeddedIndexOptions = {}): Promise<EmbeddedVectorIndex> {
    if (endianness() !== 'LE') throw new TributaryError('The embedded vector index needs a little-endian machine');
    await mkdir(dir, { recursive: true });
    const index = new EmbeddedVectorIndex(await realpath(dir), options);
    index.unlock = await lockDirectory(index.dir, LOCK);
    index.graphs = new GraphThread();
    try {
      await index.load();
    } catch (err) {
      await index.closeFiles();
      await index.graphs.close();
      await index.unlock();
      throw err;
    }
    return index;
  }

  async upsert(lens: string, records: IndexRecord[]): Promise<void> {
    this.assertOpen();
    const { dims, metadataJson } = checkUpsert(lens, records);
    if (records.length === 0) return;
    const l = this.lensFor(lens);
    await this.onLens(l, async () => {
      await this.graphRoom(l);
      if (l.data.count > 0 && dims !== l.data.dims) {
        throw new TributaryError(
          `Lens ${lens} stores ${l.data.dims}-dimensional vectors but record ${records[0].id} has ${dims}: the embedder changed. ` +
            `Rebuild the lens: stop Tributary, delete ${join(this.dir, lens)}.* (its files), start it again and run ` +
            `\`tributary ingest ${lens} --mode full\`.`,
        );
      }
      const frames = records.map((r, i): UpsertFrame => {
        const seq = l.nextSeq++;
        const { id, contentHash, content, vector } = r;
        return { op: OP_UPSERT, seq, key: seq, id, contentHash, content, metadataJson: metadataJson[i], metadata: r.metadata, vector };
      });
      await this.write(l, frames);
    });
  }

  async updateMetadata(lens: string, records: Array<{ id: string; metadata: Record<string, unknown> }>): Promise<void> {
    this.assertOpen();
    const metadataJson = checkMetadataUpdate(lens, records);
    const l = this.lenses.get(lens);
    if (!l || records.length === 0) return;
    // On the lens's queue: the records as the writes called before this one left them. The
    // graph key stays: the vector did not change.
    await this.onLens(l, async () => {
      const frames: UpsertFrame[] = [];
      const latest = new Map<string, UpsertFrame>();
      for (const [i, { id }] of records.entries()) {
        const stored = latest.get(id) ?? this.storedFrame(l, id);
        if (!stored) continue;
        const frame = { ...stored, seq: l.nextSeq++, metadataJson: metadataJson[i], metadata: records[i].metadata };
        latest.set(id, frame);
        frames.push(frame);
      }
      if (frames.length > 0) await this.write(l, frames);
    });
  }

  async delete(lens: string, ids: string[]): Promise<number> {
    this.assertOpen();
    checkLensName(lens);
    const l = this.lenses.get(lens);
    if (!l || ids.length === 0) return 0;
    return this.onLens(l, async () => {
      const present = [...new Set(ids)].filter((id) => l.data.slotOf.has(id));
      if (present.length === 0) return 0;
      await this.write(
        l,
        present.map((id): Frame => ({ op: OP_DELETE, seq: l.nextSeq++, key: l.data.keys[l.data.slotOf.get(id)!], id })),
      );
      return present.length;
    });
  }

  async hashes(lens: string, ids: string[]): Promise<Map<string, string>> {
    const data = this.peek(lens)?.data;
    const out = new Map<string, string>();
    if (!data) return out;
    for (const id of ids) {
      const slot = data.slotOf.get(id);
      if (slot !== undefined) out.set(id, data.hashes[slot]);
    }
    return out;
  }

  async get(lens: string, id: string): Promise<IndexRecord | undefined> {
    const l = this.peek(lens);
    const frame = l && this.storedFrame(l, id);
    if (!frame) return undefined;
    return { id, content: frame.content, metadata: JSON.parse(frame.metadataJson) as Record<string, unknown>, vector: frame.vector, contentHash: frame.contentHash };
  }

  async searchVector(
    lens: string,
    vector: Float32Array,
    options: { limit: number; minScore: number; excludeId?: string; exact?: boolean },
  ): Promise<SearchHit[]> {
    const l = this.peek(lens);
    const limit = Math.floor(options.limit);
    if (!l || l.data.count === 0 || !(limit >= 1)) return [];
    const data = l.data;
    if (vector.length !== data.dims) {
      throw new TributaryError(
        `Lens ${lens} stores ${data.dims}-dimensional vectors but the query vector has ${vector.length}: the embedder changed. ` +
          `Rebuild the lens (delete ${join(this.dir, lens)}.* while Tributary is stopped, then ingest it in full).`,
      );
    }
    const query = unitLength(vector);
    const excludeSlot = () => (options.excludeId === undefined ? -1 : (data.slotOf.get(options.excludeId) ?? -1));
    let scored: Array<[number, number]>;
    if (data.matrix) scored = scanMatrix(data.matrix, data.dims, data.count, query, limit, excludeSlot()).entries();
    else if (options.exact || limit > EXACT_LIMIT) return this.scanLog(l, query, limit, options.minScore, options.excludeId);
    else scored = await this.graphCandidates(l, query, limit, excludeSlot);
    const hits = scored
      .filter(([, s]) => s >= options.minScore)
      .map(([slot, s]) => ({ id: data.ids[slot], slot, score: s }))
      .sort((x, y) => y.score - x.score || (x.id < y.id ? -1 : 1))
      .slice(0, limit);
    return hits.map(({ slot, score: s }) => this.hit(l, slot, s));
  }

  async searchKeyword(lens: string, query: string, options: { limit: number; minScore: number }): Promise<SearchHit[]> {
    const l = this.peek(lens);
    if (!l || l.data.count === 0 || query.trim() === '' || options.limit < 1) return [];
    const results = l.data.keyword.search(query, Math.floor(options.limit));
    const best = results[0]?.score ?? 0;
    const hits: SearchHit[] = [];
    for (const result of results) {
      const s = best > 0 ? Math.min(1, result.score / best) : 0;
      if (s < options.minScore) break;
      const slot = l.data.slotOf.get(result.id);
      if (slot !== undefined) hits.push(this.hit(l, slot, s));
    }
    return hits;
  }

  async count(lens: string): Promise<number> {
    return this.peek(lens)?.data.count ?? 0;
  }

  async idsAfter(lens: string, after: string | undefined, limit: number): Promise<string[]> {
    const data = this.peek(lens)?.data;
    if (!data || limit < 1) return [];
    return data.idsAfter(after, limit);
  }

  /** Records of a lens written but not yet in its graph (searched exactly meanwhile). */
  graphBacklog(lens: string): number {
    return this.peek(lens)?.data.graph?.backlog ?? 0;
  }

  /** Resolves once every written vector is in its lens's graph (for tests and benchmarks). */
  async graphBuilt(): Promise<void> {
    for (const l of this.lenses.values()) {
      await l.queue;
      await l.data.graph?.drained();
    }
  }

  /** Waits for writes in progress, checkpoints lenses written since their last, closes files, releases the lock. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const l of this.lenses.values()) {
      await l.queue;
      if (l.sinceCheckpoint > 0 || l.graphedSinceCheckpoint > 0) await this.checkpoint(l).catch((err) => this.warn(l, 'checkpoint', err));
    }
    await this.closeFiles();
    await this.graphs.close();
    await this.unlock();
  }

  /**
   * The graph's candidates for `query` and the nearest pending records, scored again exactly
   * from the log's vectors. A quantized graph ranks roughly: a wider candidate list, rescored,
   * restores the order (bench/ann.ts measures recall against exact search).
   */
  private async graphCandidates(l: Lens, query: Float32Array, limit: number, excludeSlot: () => number): Promise<Array<[number, number]>> {
    const data = l.data;
    const fetch = limit + 1; // one may be the excluded record
    const want = Math.max(CANDIDATES_PER_RESULT * fetch, this.hnsw.expansionSearch);
    // Dead nodes (replaced records: ./hnsw.ts) may crowd the graph's nearest keys: ask for more,
    // up to DEAD_WIDENING times, while fewer than `fetch` of them are live.
    let keys: number[] = [];
    for (let asked = want; data.graph && asked <= want * DEAD_WIDENING; asked *= 4) {
      const found = await data.graph.search(query, asked);
      keys = [...found.graph, ...found.queued];
      const live = found.graph.filter((key) => data.slotOfKey.has(key)).length;
      if (live >= fetch || found.graph.length < asked || data.deadInGraph === 0) break;
    }
    // Slots as they are now (a write may have moved some while the graph searched).
    const exclude = excludeSlot();
    const slots = new Set<number>();
    for (const key of keys) {
      const slot = data.slotOfKey.get(key);
      if (slot !== undefined && slot !== exclude) slots.add(slot);
    }
    const vector = new Float32Array(data.dims);
    return [...slots].map((slot) => [slot, score(readVectorSync(this.fd(l), data.offsets[slot], vector), 0, query, data.dims)]);
  }

  /** Exact search over a large lens: one pass over its log, keeping each id's live frame only. */
  private async scanLog(l: Lens, query: Float32Array, limit: number, minScore: number, excludeId?: string): Promise<SearchHit[]> {
    const gen = l.gen;
    const file = await open(join(this.dir, logName(l.data.name, gen)), 'r');
    const found: Array<{ frame: UpsertFrame; score: number }> = [];
    const top = new TopK(limit);
    const vector = new Float32Array(l.data.dims);
    try {
      await scanFrames(file, 0, (payload, offset) => {
        if (payload[0] !== OP_UPSERT) return;
        // Only the id's live frame counts (not older versions, not deleted ids).
        const id = payloadId(payload);
        const slot = l.data.slotOf.get(id);
        if (id === excludeId || slot === undefined || l.data.offsets[slot] !== offset || l.gen !== gen) return;
        const s = score(payloadVector(payload, vector), 0, query, l.data.dims);
        if (s < minScore || s <= top.floor) return;
        top.offer(found.length, s);
        found.push({ frame: decodePayload(payload) as UpsertFrame, score: s });
      });
    } finally {
      await file.close();
    }
    // A compaction moved every frame while we read: read the new log.
    if (l.gen !== gen) return this.scanLog(l, query, limit, minScore, excludeId);
    return top
      .entries()
      .map(([i]) => found[i])
      .sort((x, y) => y.score - x.score || (x.frame.id < y.frame.id ? -1 : 1))
      .map(({ frame, score: s }) => ({ id: frame.id, content: frame.content, metadata: JSON.parse(frame.metadataJson) as Record<string, unknown>, score: s }));
  }

  private hit(l: Lens, slot: number, s: number): SearchHit {
    const frame = readFrameSync(this.fd(l), l.data.offsets[slot]) as UpsertFrame;
    return { id: frame.id, content: frame.content, metadata: JSON.parse(frame.metadataJson) as Record<string, unknown>, score: s };
  }

  /** The latest upsert frame of a stored id, read from the log. */
  private storedFrame(l: Lens, id: string): UpsertFrame | undefined {
    const slot = l.data.slotOf.get(id);
    return slot === undefined ? undefined : (readFrameSync(this.fd(l), l.data.offsets[slot]) as UpsertFrame);
  }

  private fd(l: Lens): number {
    return l.log!.fd;
  }

  /** Waits while the lens's graph backlog is at its bound (the graph meanwhile takes all the time it needs). */
  private async graphRoom(l: Lens): Promise<void> {
    const graph = l.data.graph;
    while (!this.closed && graph && graph.backlog >= this.graphBacklogMax) {
      if (graph.failure) {
        throw new TributaryError(`The HNSW graph of lens ${l.data.name} is ${this.graphBacklogMax} records behind and could not take more (${graph.failure}); the write is retried`, { retriable: true });
      }
      await sleep(GRAPH_WAIT_MS);
    }
  }

  /** The graph took `count` vectors: once it caught up with a large backlog, save it, so a restart does not insert them again. */
  private graphInserted(l: Lens, count: number): void {
    l.graphedSinceCheckpoint += count;
    if (this.closed || l.data.graph?.backlog !== 0 || l.graphedSinceCheckpoint < this.checkpointFrames(l)) return;
    l.graphedSinceCheckpoint = 0; // not twice
    void this.onLens(l, () => this.checkpoint(l)).catch((err) => this.warn(l, 'checkpoint', err));
  }

  /** Logs frames (one write, fsynced), applies them, then compacts or checkpoints if due; runs on the lens's queue. */
  private async write(l: Lens, frames: Frame[]): Promise<void> {
    const { bytes, offsets } = encodeFrames(frames, l.scratch.take);
    const base = await this.append(l, bytes);
    frames.forEach((frame, i) => l.data.apply(frame, base + offsets[i]));
    l.frames += frames.length;
    l.sinceCheckpoint += frames.length;
    await this.maintain(l);
  }

  /** Appends to the lens's log and fsyncs it; on failure, cuts it back. Returns where the bytes start. */
  private async append(l: Lens, bytes: Buffer): Promise<number> {
    const file = await this.logFile(l);
    const base = l.logBytes;
    try {
      for (let done = 0; done < bytes.length; ) done += (await file.write(bytes, done, bytes.length - done, base + done)).bytesWritten;
      await file.datasync();
    } catch (err) {
      await file.truncate(base).catch(() => undefined);
      throw new TributaryError(`Could not write ${join(this.dir, logName(l.data.name, l.gen))}: ${describeError(err)}`, { retriable: true, cause: err });
    }
    l.logBytes += bytes.length;
    return base;
  }

  /** The lens's log, opened for reading and writing; a new file's directory entry is fsynced. */
  private async logFile(l: Lens): Promise<FileHandle> {
    if (l.log) return l.log;
    l.log = await open(join(this.dir, logName(l.data.name, l.gen)), 'a+');
    if ((await l.log.stat()).size === 0) await syncDirectory(this.dir);
    return l.log;
  }

  /** Compacts the log when it holds more than twice the live records, else checkpoints when due. */
  private async maintain(l: Lens): Promise<void> {
    try {
      if (l.frames > l.compactAfter && l.frames > 2 * l.data.count) {
        await this.compact(l);
        l.compactAfter = COMPACT_MIN_FRAMES;
      } else if (l.sinceCheckpoint >= this.checkpointFrames(l) && performance.now() - l.checkpointedAt >= (this.options.checkpointIntervalMs ?? 10_000)) {
        await this.checkpoint(l);
      }
    } catch (err) {
      // The log is whole and appended to; try again once it has doubled.
      l.compactAfter = l.frames * 2;
      l.sinceCheckpoint = 0;
      this.warn(l, 'compact or checkpoint', err);
    }
  }

  /** Frames written (or vectors put into the graph) after which a checkpoint is due. */
  private checkpointFrames(l: Lens): number {
    return Math.max(this.options.checkpointFrames ?? 20_000, l.data.count / 10);
  }

  /** Commits a checkpoint of the lens as it is now, then deletes the older files. */
  private async checkpoint(l: Lens): Promise<void> {
    const seq = l.nextSeq - 1;
    const data = l.data;
    const state = { gen: l.gen, logBytes: l.logBytes, frames: l.frames, nextSeq: l.nextSeq, hnsw: this.hnsw, ...data.table() };
    const graph = data.graph;
    await writeCheckpoint(this.dir, data.name, seq, state, graph && ((path) => graph.save(path)));
    l.sinceCheckpoint = 0;
    l.graphedSinceCheckpoint = 0;
    l.checkpointedAt = performance.now();
    await removeOthers(this.dir, await this.filesOf(data.name), l.gen, seq);
  }

  /** Writes the live frames to the log's next generation, switches to it and checkpoints. */
  private async compact(l: Lens): Promise<void> {
    const data = l.data;
    const path = join(this.dir, logName(data.name, l.gen + 1));
    const out = await open(path, 'w');
    const offsets: number[] = [];
    let bytes = 0;
    try {
      for (let from = 0; from < data.count; from += 1000) {
        const frames = data.offsets.slice(from, from + 1000).map((offset) => readFrameSync(this.fd(l), offset));
        const encoded = encodeFrames(frames);
        encoded.offsets.forEach((o) => offsets.push(bytes + o));
        await out.write(encoded.bytes, 0, encoded.bytes.length, bytes);
        bytes += encoded.bytes.length;
      }
      await out.sync();
    } catch (err) {
      await out.close();
      await rm(path, { force: true });
      throw err;
    }
    await out.close();
    await l.log?.close();
    Object.assign(l, { log: await open(path, 'a+'), gen: l.gen + 1, logBytes: bytes, frames: data.count });
    data.offsets = offsets;
    await this.checkpoint(l);
  }

  /** Loads every lens of the directory. */
  private async load(): Promise<void> {
    const names = (await readdir(this.dir)).filter((name) => name !== LOCK.file);
    const legacy = names.find((name) => /^[A-Za-z0-9_-]+\.log$/.test(name));
    if (legacy) {
      throw new TributaryError(
        `${join(this.dir, legacy)} is an index log of an older Tributary (JSON lines). The index is derived from the source: stop Tributary, ` +
          `delete it, start again and run \`tributary ingest ${legacy.slice(0, -4)} --mode full\`.`,
      );
    }
    for (const [lens, files] of lensFiles(names)) {
      try {
        this.lenses.set(lens, await this.loadLens(lens, files));
      } catch (err) {
        if (err instanceof TributaryError) throw err;
        throw new TributaryError(
          `The vector index files of lens ${lens} in ${this.dir} are damaged (${describeError(err)}). The index is derived from the source: ` +
            `stop Tributary, delete ${join(this.dir, lens)}.*, start it again and run \`tributary ingest ${lens} --mode full\`.`,
          { cause: err },
        );
      }
    }
  }

  /** Loads a lens: its newest checkpoint, then the log written after it. */
  private async loadLens(lens: string, files: LensFiles): Promise<Lens> {
    const checkpoint = await readCheckpoint(this.dir, files);
    const l = this.newLens(lens);
    let rebuild = false;
    if (checkpoint) {
      const { state, seq } = checkpoint;
      Object.assign(l, { gen: state.gen, logBytes: state.logBytes, frames: state.frames, nextSeq: state.nextSeq });
      l.data.restore(state);
      rebuild = state.dims > 0 && (!files.checkpoints.get(seq)!.hnsw || JSON.stringify(state.hnsw) !== JSON.stringify(this.hnsw));
      if (state.dims > 0 && !rebuild) await l.data.newGraph(join(this.dir, graphName(lens, seq))).ready;
    }
    if (!files.logs.has(l.gen) && l.logBytes > 0) throw new Error(`its log ${logName(lens, l.gen)} is missing`);
    if (checkpoint && !rebuild) {
      await this.logFile(l);
      this.restorePending(l, checkpoint.state.pending ?? []);
    }
    await this.replay(l, rebuild).catch(async (err: unknown) => {
      await l.log?.close();
      throw err;
    });
    await removeOthers(this.dir, files, l.gen, checkpoint?.seq);
    if (rebuild || l.data.deadInGraph > Math.max(DEAD_REBUILD_MIN, l.data.count)) await this.rebuildGraph(l);
    if (l.data.count <= this.exactBelow) this.fillMatrix(l);
    return l;
  }

  /** The checkpoint's records not yet in its graph: pending again, their vectors from the log. */
  private restorePending(l: Lens, keys: number[]): void {
    const data = l.data;
    for (const key of keys) {
      const slot = data.slotOfKey.get(key);
      if (slot !== undefined) data.graph!.add(key, readVectorSync(this.fd(l), data.offsets[slot], new Float32Array(data.dims)));
    }
  }

  /** Applies the log after the checkpoint; cuts off a write torn by a crash. */
  private async replay(l: Lens, rebuild: boolean): Promise<void> {
    const file = await this.logFile(l);
    const end = await scanFrames(file, l.logBytes, (payload, offset) => {
      const frame = decodePayload(payload);
      l.data.apply(frame, offset, !rebuild);
      l.nextSeq = Math.max(l.nextSeq, frame.seq + 1);
      l.sinceCheckpoint++;
      l.frames++;
    });
    const size = (await file.stat()).size;
    if (end < size) {
      await file.truncate(end);
      await file.sync();
      this.options.logger?.warn({ lens: l.data.name, bytes: size - end }, 'dropped an incomplete last write from the vector index log');
    }
    l.logBytes = end;
  }

  /** A new graph from the log's vectors (the checkpoint's graph is missing, has other settings or too many dead nodes). */
  private async rebuildGraph(l: Lens): Promise<void> {
    const data = l.data;
    const graph = data.newGraph();
    const vector = new Float32Array(data.dims);
    data.offsets.forEach((offset, slot) => graph.add(data.keys[slot], readVectorSync(this.fd(l), offset, vector)));
    await graph.drained();
    l.sinceCheckpoint = Math.max(l.sinceCheckpoint, 1);
  }

  /** The exact-search matrix of a small lens, from the log's vectors. */
  private fillMatrix(l: Lens): void {
    const data = l.data;
    data.matrix = new Float32Array(Math.max(data.count, 1024) * data.dims);
    data.offsets.forEach((offset, slot) => readVectorSync(this.fd(l), offset, data.matrix!.subarray(slot * data.dims, (slot + 1) * data.dims)));
  }

  private newLens(name: string): Lens {
    const l: Lens = {
      data: new LensData(name, this.graphs, this.hnsw, this.exactBelow, this.graphBacklogMax, {
        inserted: (count) => this.graphInserted(l, count),
        failed: (why) => this.warn(l, 'insert into the graph of', why),
      }),
      gen: 0,
      log: undefined,
      logBytes: 0,
      frames: 0,
      sinceCheckpoint: 0,
      checkpointedAt: performance.now(),
      nextSeq: 1,
      compactAfter: COMPACT_MIN_FRAMES,
      queue: Promise.resolve(),
      scratch: new ScratchBuffer(),
      graphedSinceCheckpoint: 0,
    };
    return l;
  }

  private async filesOf(lens: string): Promise<LensFiles> {
    return lensFiles((await readdir(this.dir)).filter((name) => name.startsWith(`${lens}.`))).get(lens)!;
  }

  private warn(l: Lens, what: string, err: unknown): void {
    this.options.logger?.warn({ lens: l.data.name, err: describeError(err) }, `could not ${what} the vector index; will retry later`);
  }

  private onLens<T>(l: Lens, fn: () => Promise<T>): Promise<T> {
    const result = l.queue.then(() => {
      this.assertOpen();
      return fn();
    });
    l.queue = result.catch(() => undefined);
    return result;
  }

  /** The lens for reading, or undefined when it holds nothing. */
  private peek(lens: string): Lens | undefined {
    this.assertOpen();
    checkLensName(lens);
    return this.lenses.get(lens);
  }

  private lensFor(lens: string): Lens {
    let l = this.lenses.get(lens);
    if (!l) this.lenses.set(lens, (l = this.newLens(lens)));
    return l;
  }

  private async closeFiles(): Promise<void> {
    for (const l of this.lenses.values()) {
      await l.log?.close().catch(() => undefined);
      l.log = undefined;
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new TributaryError(`The vector index in ${this.dir} is closed`);
  }
}
