/**
 * The embedded vector index: every lens in memory, made durable by one append-only log file
 * per lens in a local directory.
 *
 * - `<lens>.log`: JSON lines, `{"op":"upsert","id","contentHash","content","metadata","vector"}`
 *   (the vector is base64 of its little-endian float32 bytes) or `{"op":"delete","id"}`.
 *   Replayed in order on open; compacted into a snapshot of the live records when it holds
 *   more than twice as many operations as live records.
 * - `index.lock`: the pid of the one process allowed to write the directory.
 */
import { endianness } from 'node:os';
import { mkdir, open, readdir, realpath, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { describeError, TributaryError } from '../../errors.js';
import { lockDirectory, syncDirectory } from '../../files.js';

const LOCK = { file: 'index.lock', kind: 'the vector index directory', owner: 'Tributary worker', setting: 'worker.index.path' };
import type { Logger } from '../../types.js';
import type { IndexRecord, SearchHit, VectorIndex } from '../types.js';
import { checkLensName, checkMetadataUpdate, checkUpsert, LENS_NAME } from './checks.js';
import { Bm25Index } from './bm25.js';

const LOG_SUFFIX = '.log';
/** Records added to the keyword index between two yields to the event loop. */
const KEYWORD_BUILD_SLICE = 2000;
const TMP_SUFFIX = '.log.tmp';
/** A log is compacted when it holds more than this many operations and more than 2× the live records. */
const COMPACT_MIN_OPS = 1_000;
const READ_CHUNK_BYTES = 4 << 20;
const WRITE_CHUNK_CHARS = 4 << 20;


export interface EmbeddedIndexOptions {
  /** Where compaction failures are reported (they are retried later; writes carry on). */
  logger?: Logger;
}

/** The text keyword search sees: the content and the metadata's string values. */
function keywordText(content: string, metadataJson: string): string {
  const strings = Object.values(JSON.parse(metadataJson) as Record<string, unknown>).filter((v): v is string => typeof v === 'string');
  return strings.length ? `${content} ${strings.join(' ')}` : content;
}

/** One parsed log line. */
type LogOp =
  | { op: 'upsert'; id: string; contentHash: string; content: string; metadata: Record<string, unknown>; vector: string }
  | { op: 'delete'; id: string };

/**
 * The records of one lens. Slots are dense: slot `s` holds `ids[s]`, its vector at
 * `vectors[s * dims …]` and its texts; a delete moves the last slot into the freed one.
 */
class LensData {
  dims = 0;
  count = 0;
  vectors = new Float32Array(0);
  readonly ids: string[] = [];
  readonly contents: string[] = [];
  /** Metadata as JSON text: compact, and every read returns a fresh copy. */
  readonly metadata: string[] = [];
  readonly hashes: string[] = [];
  readonly slotOf = new Map<string, number>();
  /**
   * The keyword index: built from the records on the first keyword search (so a restart or a
   * semantic-only lens does not pay for it), then kept in step with every put and remove.
   */
  private keywordIndex: Bm25Index | undefined;
  private keywordBuild: Promise<Bm25Index> | undefined;

  /** Ids in ascending order, maybe with deleted ones (skipped when read); see `sortedIds`. */
  private sorted: string[] = [];
  /** Ids inserted since `sorted` was last merged; undefined: rebuild `sorted` from scratch. */
  private added: string[] | undefined = undefined;

  // The log file.
  file: FileHandle | undefined;
  logBytes = 0;
  logOps = 0;
  /** No compaction before the log holds this many operations (raised after a failed one). */
  compactAfter = COMPACT_MIN_OPS;
  /** Writes of this lens, one at a time, in call order. */
  queue: Promise<unknown> = Promise.resolve();

  constructor(readonly name: string) {}

  /** Inserts or replaces a record; `vector` is its `dims` floats, or their bytes (from the log). */
  put(id: string, contentHash: string, content: string, metadataJson: string, vector: Float32Array | Uint8Array): void {
    const floats = vector instanceof Float32Array ? vector.length : vector.byteLength / 4;
    if (this.count === 0 && floats !== this.dims) {
      this.dims = floats;
      this.vectors = new Float32Array(0);
    }
    let slot = this.slotOf.get(id);
    let keywordChanged = true;
    if (slot === undefined) {
      slot = this.count++;
      this.grow(this.count);
      this.slotOf.set(id, slot);
      this.ids.push(id);
      this.contents.push(content);
      this.metadata.push(metadataJson);
      this.hashes.push(contentHash);
      this.noteAdded(id);
    } else {
      keywordChanged = this.contents[slot] !== content || this.metadata[slot] !== metadataJson;
      this.contents[slot] = content;
      this.metadata[slot] = metadataJson;
      this.hashes[slot] = contentHash;
    }
    this.writeVector(slot, vector);
    if (keywordChanged) this.keywordIndex?.set(id, keywordText(content, metadataJson));
  }

  /** Removes a record; false if it was not there. */
  remove(id: string): boolean {
    const slot = this.slotOf.get(id);
    if (slot === undefined) return false;
    const last = this.count - 1;
    if (slot !== last) {
      const d = this.dims;
      this.vectors.copyWithin(slot * d, last * d, last * d + d);
      const moved = this.ids[last];
      this.ids[slot] = moved;
      this.contents[slot] = this.contents[last];
      this.metadata[slot] = this.metadata[last];
      this.hashes[slot] = this.hashes[last];
      this.slotOf.set(moved, slot);
    }
    this.ids.pop();
    this.contents.pop();
    this.metadata.pop();
    this.hashes.pop();
    this.slotOf.delete(id);
    this.count = last;
    this.keywordIndex?.remove(id);
    this.shrink();
    return true;
  }

  /**
   * The keyword index, built on first use in slices that yield to the event loop (a lens of
   * 100,000 records takes over a second), so other requests go on meanwhile. Writes during
   * the build apply to it directly; the build re-adds only ids still present.
   */
  keyword(): Promise<Bm25Index> {
    this.keywordBuild ??= (async () => {
      const index = (this.keywordIndex = new Bm25Index());
      const ids = this.ids.slice(0, this.count);
      for (let i = 0; i < ids.length; i++) {
        const slot = this.slotOf.get(ids[i]);
        if (slot !== undefined) index.set(ids[i], keywordText(this.contents[slot], this.metadata[slot]));
        if (i % KEYWORD_BUILD_SLICE === KEYWORD_BUILD_SLICE - 1) await new Promise((resolve) => setImmediate(resolve));
      }
      return index;
    })();
    return this.keywordBuild;
  }

  record(slot: number): IndexRecord {
    const d = this.dims;
    return {
      id: this.ids[slot],
      content: this.contents[slot],
      metadata: JSON.parse(this.metadata[slot]) as Record<string, unknown>,
      vector: this.vectors.slice(slot * d, slot * d + d),
      contentHash: this.hashes[slot],
    };
  }

  hit(slot: number, score: number): SearchHit {
    return {
      id: this.ids[slot],
      content: this.contents[slot],
      metadata: JSON.parse(this.metadata[slot]) as Record<string, unknown>,
      score,
    };
  }

  /**
   * Exact cosine search: one dot product per stored vector (all are unit length), keeping
   * the best `limit` in a min-heap. Returns [slot, score] pairs, best first.
   */
  nearest(query: Float32Array, limit: number, minScore: number, excludeSlot: number): Array<[number, number]> {
    const k = Math.min(limit, this.count);
    if (k <= 0) return [];
    const d = this.dims;
    const n = this.count;
    const v = this.vectors;
    const heapScore = new Float64Array(k);
    const heapSlot = new Int32Array(k);
    let size = 0;
    // A score must reach `floor` to enter: minScore until the heap is full, then beat its worst.
    let floor = minScore;
    let strict = false;
    const d4 = d - (d % 4);
    for (let s = 0, base = 0; s < n; s++, base += d) {
      if (s === excludeSlot) continue;
      let a0 = 0;
      let a1 = 0;
      let a2 = 0;
      let a3 = 0;
      let j = 0;
      for (; j < d4; j += 4) {
        const b = base + j;
        a0 += v[b] * query[j];
        a1 += v[b + 1] * query[j + 1];
        a2 += v[b + 2] * query[j + 2];
        a3 += v[b + 3] * query[j + 3];
      }
      for (; j < d; j++) a0 += v[base + j] * query[j];
      let score = a0 + a1 + a2 + a3;
      score = score > 1 ? 1 : score > 0 ? score : 0;
      if (score < floor || (strict && score === floor)) continue;
      if (size < k) {
        // Sift up.
        let i = size++;
        while (i > 0) {
          const parent = (i - 1) >> 1;
          if (heapScore[parent] <= score) break;
          heapScore[i] = heapScore[parent];
          heapSlot[i] = heapSlot[parent];
          i = parent;
        }
        heapScore[i] = score;
        heapSlot[i] = s;
        if (size === k) {
          floor = heapScore[0];
          strict = true;
        }
      } else {
        // Replace the worst (the root) and sift down.
        let i = 0;
        for (;;) {
          const left = 2 * i + 1;
          if (left >= k) break;
          const right = left + 1;
          const child = right < k && heapScore[right] < heapScore[left] ? right : left;
          if (heapScore[child] >= score) break;
          heapScore[i] = heapScore[child];
          heapSlot[i] = heapSlot[child];
          i = child;
        }
        heapScore[i] = score;
        heapSlot[i] = s;
        floor = heapScore[0];
      }
    }
    const out: Array<[number, number]> = [];
    for (let i = 0; i < size; i++) out.push([heapSlot[i], heapScore[i]]);
    const ids = this.ids;
    return out.sort((x, y) => y[1] - x[1] || (ids[x[0]] < ids[y[0]] ? -1 : 1));
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

  private writeVector(slot: number, vector: Float32Array | Uint8Array): void {
    if (vector instanceof Float32Array) this.vectors.set(vector, slot * this.dims);
    else new Uint8Array(this.vectors.buffer, slot * this.dims * 4, this.dims * 4).set(vector);
  }

  /** Makes room for `n` vectors, doubling the capacity. */
  private grow(n: number): void {
    const d = this.dims;
    if (n * d <= this.vectors.length) return;
    let capacity = Math.max(1024, this.vectors.length / Math.max(d, 1));
    while (capacity < n) capacity *= 2;
    const next = new Float32Array(capacity * d);
    next.set(this.vectors);
    this.vectors = next;
  }

  /** Gives memory back after many deletes. */
  private shrink(): void {
    const d = this.dims;
    const capacity = d === 0 ? 0 : this.vectors.length / d;
    if (capacity <= 4096 || this.count * 4 > capacity) return;
    this.vectors = this.vectors.slice(0, (capacity / 2) * d);
  }
}


/**
 * The `embedded` vector index (`worker.index: { type: embedded, path }`): exact search over
 * vectors held in memory, one durable append-only log per lens in `dir`.
 *
 * Every lens's records live in memory (vectors in one contiguous Float32Array, dimensions
 * fixed by the lens's first record), so searches are plain scans: exact cosine for semantic
 * search (about 43 ms for 100,000 × 384 on this project's 2-core machines), a BM25 inverted index
 * for keyword search (./bm25.ts, built on a lens's first keyword search without blocking other requests).
 * Each `upsert`/`delete` call appends its operations to `<dir>/<lens>.log` in one write and
 * fsyncs it before resolving; writes of one lens apply one at a time, in call order. Opening
 * replays the logs (dropping a last line torn by a crash) and takes `index.lock`, so only
 * one process writes a directory.
 */
export class EmbeddedVectorIndex implements VectorIndex {
  private readonly lenses = new Map<string, LensData>();
  private closed = false;

  private constructor(
    /** The index directory, absolute. */
    readonly dir: string,
    private readonly logger: Logger | undefined,
  ) {}

  /** Releases the directory lock. */
  private unlock: () => Promise<void> = async () => {};

  /** Opens (creating if missing) the directory `dir` and replays every lens's log in it. */
  static async open(dir: string, options: EmbeddedIndexOptions = {}): Promise<EmbeddedVectorIndex> {
    if (endianness() !== 'LE') throw new TributaryError('The embedded vector index needs a little-endian machine');
    await mkdir(dir, { recursive: true });
    const index = new EmbeddedVectorIndex(await realpath(dir), options.logger);
    index.unlock = await lockDirectory(index.dir, LOCK);
    try {
      await index.load();
    } catch (err) {
      await index.closeFiles();
      await index.unlock();
      throw err;
    }
    return index;
  }

  async upsert(lens: string, records: IndexRecord[]): Promise<void> {
    this.assertOpen();
    const dims = checkUpsert(lens, records);
    if (records.length === 0) return;
    const encoded = encodeUpserts(records);
    const data = this.lensFor(lens);
    await this.onLens(data, async () => {
      if (data.count > 0 && dims !== data.dims) {
        throw new TributaryError(
          `Lens ${lens} stores ${data.dims}-dimensional vectors but record ${records[0].id} has ${dims}: the embedder changed. ` +
            `Rebuild the lens: stop Tributary, delete ${join(this.dir, lens + LOG_SUFFIX)}, start it again and run ` +
            `\`tributary ingest ${lens} --mode full\`.`,
        );
      }
      await this.write(data, records, encoded);
    });
  }

  async updateMetadata(lens: string, records: Array<{ id: string; metadata: Record<string, unknown> }>): Promise<void> {
    this.assertOpen();
    checkMetadataUpdate(lens, records);
    const data = this.lenses.get(lens);
    if (!data || records.length === 0) return;
    // On the lens's queue: the records as the writes called before this one left them.
    await this.onLens(data, async () => {
      const updated: IndexRecord[] = [];
      for (const { id, metadata } of records) {
        const slot = data.slotOf.get(id);
        if (slot !== undefined) updated.push({ ...data.record(slot), metadata });
      }
      if (updated.length > 0) await this.write(data, updated, encodeUpserts(updated));
    });
  }

  async delete(lens: string, ids: string[]): Promise<number> {
    this.assertOpen();
    checkLensName(lens);
    const data = this.lenses.get(lens);
    if (!data || ids.length === 0) return 0;
    return this.onLens(data, async () => {
      const present = [...new Set(ids)].filter((id) => data.slotOf.has(id));
      if (present.length === 0) return 0;
      await this.append(data, present.map((id) => JSON.stringify({ op: 'delete', id }) + '\n').join(''), present.length);
      for (const id of present) data.remove(id);
      await this.maybeCompact(data);
      return present.length;
    });
  }

  async hashes(lens: string, ids: string[]): Promise<Map<string, string>> {
    const data = this.peek(lens);
    const out = new Map<string, string>();
    if (!data) return out;
    for (const id of ids) {
      const slot = data.slotOf.get(id);
      if (slot !== undefined) out.set(id, data.hashes[slot]);
    }
    return out;
  }

  async get(lens: string, id: string): Promise<IndexRecord | undefined> {
    const data = this.peek(lens);
    const slot = data?.slotOf.get(id);
    return slot === undefined ? undefined : data!.record(slot);
  }

  async searchVector(
    lens: string,
    vector: Float32Array,
    options: { limit: number; minScore: number; excludeId?: string },
  ): Promise<SearchHit[]> {
    const data = this.peek(lens);
    if (!data || data.count === 0) return [];
    if (vector.length !== data.dims) {
      throw new TributaryError(
        `Lens ${lens} stores ${data.dims}-dimensional vectors but the query vector has ${vector.length}: the embedder changed. ` +
          `Rebuild the lens (delete ${join(this.dir, lens + LOG_SUFFIX)} while Tributary is stopped, then ingest it in full).`,
      );
    }
    const exclude = options.excludeId === undefined ? -1 : (data.slotOf.get(options.excludeId) ?? -1);
    const limit = Math.floor(options.limit);
    return data.nearest(unitLength(vector), limit, options.minScore, exclude).map(([slot, score]) => data.hit(slot, score));
  }

  async searchKeyword(lens: string, query: string, options: { limit: number; minScore: number }): Promise<SearchHit[]> {
    const data = this.peek(lens);
    if (!data || data.count === 0 || query.trim() === '' || options.limit < 1) return [];
    const results = (await data.keyword()).search(query, Math.floor(options.limit));
    if (results.length === 0) return [];
    const best = results[0].score;
    const hits: SearchHit[] = [];
    for (const result of results) {
      const score = best > 0 ? Math.min(1, result.score / best) : 0;
      if (score < options.minScore) break;
      const slot = data.slotOf.get(result.id as string);
      if (slot !== undefined) hits.push(data.hit(slot, score));
      if (hits.length >= options.limit) break;
    }
    return hits;
  }

  async count(lens: string): Promise<number> {
    return this.peek(lens)?.count ?? 0;
  }

  async idsAfter(lens: string, after: string | undefined, limit: number): Promise<string[]> {
    const data = this.peek(lens);
    if (!data || limit < 1) return [];
    return data.idsAfter(after, limit);
  }

  /** Waits for writes in progress, closes the log files and releases the lock. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.lenses.values()].map((data) => data.queue));
    await this.closeFiles();
    await this.unlock();
  }

  /** Replays every `<lens>.log` in the directory; removes leftovers of interrupted compactions. */
  private async load(): Promise<void> {
    for (const name of await readdir(this.dir)) {
      if (name.endsWith(TMP_SUFFIX)) {
        await rm(join(this.dir, name), { force: true });
        continue;
      }
      if (!name.endsWith(LOG_SUFFIX)) continue;
      const lens = name.slice(0, -LOG_SUFFIX.length);
      if (!LENS_NAME.test(lens)) continue;
      const data = new LensData(lens);
      await this.replay(data);
      this.lenses.set(lens, data);
      await this.maybeCompact(data);
    }
  }

  /**
   * Applies a lens's log to `data`. A last line without its newline, or a damaged last line,
   * is a write a crash interrupted (its call never resolved): it is cut off the file.
   */
  private async replay(data: LensData): Promise<void> {
    const path = this.logPath(data.name);
    const file = await open(path, 'r');
    let good = 0; // Bytes of the file up to the end of the last line applied.
    let damaged: { line: number; error: string } | undefined;
    let lineNo = 0;
    try {
      let offset = 0;
      let rest = Buffer.alloc(0);
      const chunk = Buffer.alloc(READ_CHUNK_BYTES);
      for (;;) {
        const { bytesRead } = await file.read(chunk, 0, chunk.length, offset);
        if (bytesRead === 0) break;
        offset += bytesRead;
        const buf = rest.length > 0 ? Buffer.concat([rest, chunk.subarray(0, bytesRead)]) : chunk.subarray(0, bytesRead);
        let start = 0;
        for (let nl = buf.indexOf(10, start); nl !== -1; nl = buf.indexOf(10, start)) {
          lineNo++;
          if (damaged) {
            throw new TributaryError(
              `${path}, line ${damaged.line} is damaged (${damaged.error}). The index is derived from the source: ` +
                `stop Tributary, delete ${path}, start it again and run \`tributary ingest ${data.name} --mode full\`.`,
            );
          }
          const text = buf.toString('utf8', start, nl);
          try {
            if (text.trim() !== '') applyLine(data, text);
            good += nl + 1 - start;
          } catch (err) {
            damaged = { line: lineNo, error: describeError(err) };
          }
          start = nl + 1;
        }
        rest = Buffer.from(buf.subarray(start));
      }
    } finally {
      await file.close();
    }
    const size = (await stat(path)).size;
    if (good < size) {
      // Cut the torn tail, so the next append starts on a line of its own.
      const writable = await open(path, 'r+');
      try {
        await writable.truncate(good);
        await writable.sync();
      } finally {
        await writable.close();
      }
      this.logger?.warn({ lens: data.name, path, bytes: size - good }, 'dropped an incomplete last write from the vector index log');
    }
    data.logBytes = good;
    data.logOps = lineNo - (damaged ? 1 : 0);
  }

  /** Logs and applies upserts of `data`'s lens; runs on its queue. */
  private async write(data: LensData, records: IndexRecord[], encoded: { text: string; metadataJson: string[] }): Promise<void> {
    await this.append(data, encoded.text, records.length);
    records.forEach((r, i) => data.put(r.id, r.contentHash, r.content, encoded.metadataJson[i], r.vector));
    await this.maybeCompact(data);
  }

  /** Appends `text` (`ops` lines) to the lens's log and fsyncs it; on failure, cuts it back. */
  private async append(data: LensData, text: string, ops: number): Promise<void> {
    const file = await this.logFile(data);
    const bytes = Buffer.from(text, 'utf8');
    try {
      for (let done = 0; done < bytes.length; ) done += (await file.write(bytes, done, bytes.length - done)).bytesWritten;
      await file.datasync();
    } catch (err) {
      try {
        await file.truncate(data.logBytes);
      } catch {
        // Reopening the log cuts the partial line off anyway.
      }
      throw new TributaryError(`Could not write ${this.logPath(data.name)}: ${describeError(err)}`, { retriable: true, cause: err });
    }
    data.logBytes += bytes.length;
    data.logOps += ops;
  }

  /** The lens's log, opened for appending; a new file's directory entry is fsynced. */
  private async logFile(data: LensData): Promise<FileHandle> {
    if (data.file) return data.file;
    const path = this.logPath(data.name);
    const file = await open(path, 'a');
    if ((await file.stat()).size === 0) await syncDirectory(this.dir);
    data.file = file;
    return file;
  }

  /** Compacts the log when it holds more than twice the live records (and enough to matter). */
  private async maybeCompact(data: LensData): Promise<void> {
    if (data.logOps <= data.compactAfter || data.logOps <= 2 * data.count) return;
    try {
      await this.compact(data);
      data.compactAfter = COMPACT_MIN_OPS;
    } catch (err) {
      // The log is still whole and appended to; try again once it has doubled.
      data.compactAfter = data.logOps * 2;
      this.logger?.warn({ lens: data.name, err: describeError(err) }, 'could not compact the vector index log; will retry later');
    }
  }

  /** Writes the live records to a temp file, fsyncs it and renames it over the log. */
  private async compact(data: LensData): Promise<void> {
    const path = this.logPath(data.name);
    const tmp = join(this.dir, data.name + TMP_SUFFIX);
    const out = await open(tmp, 'w');
    let bytes = 0;
    try {
      let chunk = '';
      const d = data.dims;
      for (let s = 0; s < data.count; s++) {
        const vector = new Uint8Array(data.vectors.buffer, s * d * 4, d * 4);
        chunk += upsertLine(data.ids[s], data.hashes[s], data.contents[s], data.metadata[s], vector);
        if (chunk.length >= WRITE_CHUNK_CHARS || s === data.count - 1) {
          const buf = Buffer.from(chunk, 'utf8');
          await out.writeFile(buf);
          bytes += buf.length;
          chunk = '';
        }
      }
      await out.sync();
    } catch (err) {
      await out.close();
      await rm(tmp, { force: true });
      throw err;
    }
    await out.close();
    await data.file?.close();
    data.file = undefined;
    await rename(tmp, path);
    data.logBytes = bytes;
    data.logOps = data.count;
    await syncDirectory(this.dir);
  }

  private onLens<T>(data: LensData, fn: () => Promise<T>): Promise<T> {
    const result = data.queue.then(() => {
      this.assertOpen();
      return fn();
    });
    data.queue = result.catch(() => undefined);
    return result;
  }

  /** The lens's data for reading, or undefined when it holds nothing. */
  private peek(lens: string): LensData | undefined {
    this.assertOpen();
    checkLensName(lens);
    return this.lenses.get(lens);
  }

  private lensFor(lens: string): LensData {
    let data = this.lenses.get(lens);
    if (!data) {
      data = new LensData(lens);
      this.lenses.set(lens, data);
    }
    return data;
  }

  private logPath(lens: string): string {
    return join(this.dir, lens + LOG_SUFFIX);
  }

  private async closeFiles(): Promise<void> {
    for (const data of this.lenses.values()) {
      await data.file?.close().catch(() => undefined);
      data.file = undefined;
    }
  }

  private assertOpen(): void {
    if (this.closed) throw new TributaryError(`The vector index in ${this.dir} is closed`);
  }
}



function vectorBytes(vector: Float32Array): Uint8Array {
  return new Uint8Array(vector.buffer, vector.byteOffset, vector.byteLength);
}

/** The log lines of upserts and their metadata as JSON. */
function encodeUpserts(records: IndexRecord[]): { text: string; metadataJson: string[] } {
  let text = '';
  const metadataJson: string[] = [];
  for (const r of records) {
    const json = JSON.stringify(r.metadata);
    metadataJson.push(json);
    text += upsertLine(r.id, r.contentHash, r.content, json, vectorBytes(r.vector));
  }
  return { text, metadataJson };
}

/** One upsert log line; `metadataJson` is already JSON. */
function upsertLine(id: string, contentHash: string, content: string, metadataJson: string, vector: Uint8Array): string {
  const b64 = Buffer.from(vector.buffer, vector.byteOffset, vector.byteLength).toString('base64');
  return (
    `{"op":"upsert","id":${JSON.stringify(id)},"contentHash":${JSON.stringify(contentHash)},` +
    `"content":${JSON.stringify(content)},"metadata":${metadataJson},"vector":"${b64}"}\n`
  );
}

/** Applies one log line; throws on anything that is not a well-formed operation. */
function applyLine(data: LensData, text: string): void {
  const op = JSON.parse(text) as LogOp;
  if (op.op === 'delete' && typeof op.id === 'string') {
    data.remove(op.id);
    return;
  }
  if (
    op.op !== 'upsert' ||
    typeof op.id !== 'string' ||
    typeof op.content !== 'string' ||
    typeof op.contentHash !== 'string' ||
    typeof op.vector !== 'string' ||
    op.metadata === null ||
    typeof op.metadata !== 'object'
  ) {
    throw new Error('not an upsert or delete operation');
  }
  const bytes = Buffer.from(op.vector, 'base64');
  if (bytes.length === 0 || bytes.length % 4 !== 0 || (data.count > 0 && bytes.length !== data.dims * 4)) {
    throw new Error(`vector of ${bytes.length} bytes where ${data.dims * 4} were expected`);
  }
  data.put(op.id, op.contentHash, op.content, JSON.stringify(op.metadata), bytes);
}

/** The vector itself if it is (about) unit length, else a normalised copy. */
function unitLength(vector: Float32Array): Float32Array {
  let sum = 0;
  for (let i = 0; i < vector.length; i++) sum += vector[i] * vector[i];
  const norm = Math.sqrt(sum);
  if (norm === 0 || Math.abs(norm - 1) < 1e-4) return vector;
  const out = new Float32Array(vector.length);
  for (let i = 0; i < vector.length; i++) out[i] = vector[i] / norm;
  return out;
}






