/**
 * An in-memory BM25 (Okapi, k1 = 1.2, b = 0.75) inverted index with top-k retrieval: the
 * keyword ranking of the embedded vector index. Words are the hash embedder's tokens
 * (lowercased, Unicode-aware). A query scores only the postings of its own words into one
 * reusable array, then keeps the best `limit` documents, so a search allocates little and never
 * sorts every match. Scores are exact BM25 over the live documents; equal scores rank the
 * document set earlier first. A term frequency counts up to 65,535.
 *
 * Memory is a few typed arrays, not objects per word or document: documents and words are
 * numbered through open-addressing string tables; a word's postings (document numbers and term
 * frequencies) are a block of one shared arena, or typed arrays of their own once longer than
 * `SMALL_LIST`; each document's distinct word numbers lie in a second arena, so removal needs no
 * tokenizing. Removal only marks the document dead (word document frequencies stay exact);
 * once dead postings and abandoned blocks outweigh half the live ones, everything is rebuilt
 * from the live documents, which keeps updates amortised O(words of the document).
 *
 * `serialize` / `deserialize` are a compact little-endian binary form (see `FORMAT_VERSION`).
 */
import { tokenize } from '../embedders/hash.js';

const K1 = 1.2;
const B = 0.75;
const MAX_TF = 0xffff;
/** Longer posting lists leave the shared arena for typed arrays of their own. */
const SMALL_LIST = 256;
/** `wordCap` of a word whose postings have arrays of their own. */
const OWN = 0xffffffff;
/** Garbage below this many postings and documents is never worth a rebuild. */
const MIN_GARBAGE = 1024;
const MAGIC = 0x35324d42; // "BM25"
const FORMAT_VERSION = 1;
/** Chunks of the binary form: small, so a checkpoint adds little to the process's peak memory. */
const CHUNK_BYTES = 1 << 20;
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The live state, renumbered densely: what a rebuild and the binary form hold. */
interface Flat {
  ids: string[];
  lengths: Uint32Array;
  words: string[];
  /** Postings per word; word `w`'s follow word `w - 1`'s in `docs` / `tfs`. */
  df: Uint32Array;
  docs: Uint32Array;
  tfs: Uint16Array;
}

/** Where a word's postings are: `docs[from .. to)` and `tfs[from .. to)`. */
interface Span {
  docs: Uint32Array;
  tfs: Uint16Array;
  from: number;
  to: number;
}

export class Bm25Index {
  /** Document numbers by id; `ids.keys[doc]` is undefined once the document is removed. */
  private ids = new StringTable();
  private lengths: Uint32Array = new Uint32Array(0);
  /** Document `doc`'s distinct word numbers are `docWords[wordsStart[doc] .. wordsStart[doc + 1])`. */
  private wordsStart = new Uint32Array(1);
  private docWords = new Uint32Array(0);
  private words = new StringTable();
  /** By word: live document frequency; postings (dead ones too); block start and capacity. */
  private wordDf: Uint32Array = new Uint32Array(0);
  private wordLen = new Uint32Array(0);
  private wordStart = new Uint32Array(0);
  private wordCap = new Uint32Array(0);
  private arenaDocs = new Uint32Array(0);
  private arenaTfs = new Uint16Array(0);
  private arenaUsed = 0;
  /** Posting arrays of long lists; such a word's `wordStart` indexes these. */
  private ownDocs: Uint32Array[] = [];
  private ownTfs: Uint16Array[] = [];
  private live = 0;
  private totalLength = 0;
  private livePostings = 0;
  /** Postings of removed documents, removed documents and abandoned arena slots. */
  private garbage = 0;
  private scores = new Float64Array(0);
  private scratchWords = new Uint32Array(64);
  private scratchTfs = new Uint16Array(64);

  /** The number of documents. */
  get size(): number {
    return this.live;
  }

  /** Adds or replaces the text of a document. */
  set(id: string, text: string): void {
    const tokens = tokenize(text);
    this.remove(id);
    this.add(id, tokens.length, this.countWords(tokens));
    this.collect();
  }

  /** Removes a document; unknown ids are ignored. */
  remove(id: string): void {
    const doc = this.ids.find(id);
    if (doc < 0) return;
    this.ids.retire(doc);
    this.live--;
    this.totalLength -= this.lengths[doc];
    const from = this.wordsStart[doc];
    const to = this.wordsStart[doc + 1];
    for (let i = from; i < to; i++) this.wordDf[this.docWords[i]]--;
    this.livePostings -= to - from;
    this.garbage += to - from + 1;
    this.collect();
  }

  /** The best `limit` documents for `query`, best first, with their raw BM25 scores. */
  search(query: string, limit: number): Array<{ id: string; score: number }> {
    const n = this.live;
    if (n === 0 || limit < 1) return [];
    const docCount = this.ids.keys.length;
    if (this.scores.length < docCount) this.scores = new Float64Array(Math.max(docCount, this.scores.length * 2));
    const words = [...new Set(tokenize(query))]
      .map((token) => this.words.find(token))
      .filter((word) => word >= 0 && this.wordDf[word] > 0);
    const postings = words.reduce((sum, word) => sum + this.wordLen[word], 0);
    // Scores of many documents are collected by scanning them all, of few from a list of those touched.
    const touched = postings * 8 < docCount ? [] : undefined;
    const averageLength = this.totalLength / n || 1;
    for (const word of words) this.score(word, n, averageLength, touched);
    return this.best(touched, limit);
  }

  /**
   * The live documents as little-endian binary chunks of at most 1 MB, made as they are taken
   * (write them in order, before the index changes; their concatenation is what `deserialize`
   * takes). Layout, all u32 unless said: "BM25",
   * version, documents, words, postings; each id, then each word, as a byte length and UTF-8;
   * document lengths; postings per word; the postings' document numbers, word after word; their
   * term frequencies (u16).
   */
  *serialize(): Generator<Buffer> {
    requireLittleEndian();
    const out = new ChunkWriter();
    const docCount = this.ids.keys.length;
    const words = this.liveWords();
    for (const value of [MAGIC, FORMAT_VERSION, this.live, words.length, this.livePostings]) out.u32(value);
    const renumber = new Uint32Array(docCount);
    for (let doc = 0, n = 0; doc < docCount; doc++) {
      const id = this.ids.keys[doc];
      if (id === undefined) continue;
      renumber[doc] = n++;
      out.string(id);
      yield* out.take();
    }
    for (const word of words) {
      out.string(this.words.keys[word]!);
      yield* out.take();
    }
    for (let doc = 0; doc < docCount; doc++) if (this.ids.keys[doc] !== undefined) out.u32(this.lengths[doc]);
    for (const word of words) out.u32(this.wordDf[word]);
    yield* out.take();
    for (const write of [(i: number, span: Span) => out.u32(renumber[span.docs[i]]), (i: number, span: Span) => out.u16(span.tfs[i])]) {
      for (const word of words) {
        const span = this.span(word);
        for (let i = span.from; i < span.to; i++) if (this.ids.keys[span.docs[i]] !== undefined) write(i, span);
        yield* out.take();
      }
    }
    yield* out.finish();
  }

  /** The words with live postings, in word-number order. */
  private liveWords(): Uint32Array {
    const total = this.words.keys.length;
    let live = 0;
    for (let word = 0; word < total; word++) if (this.wordDf[word] > 0) live++;
    const words = new Uint32Array(live);
    for (let word = 0, n = 0; word < total; word++) if (this.wordDf[word] > 0) words[n++] = word;
    return words;
  }

  /** Loads what `serialize` wrote; throws if the bytes are not that format or version. */
  static deserialize(bytes: Buffer): Bm25Index {
    requireLittleEndian();
    const input = new Reader(bytes);
    if (bytes.length < 8 || input.u32() !== MAGIC) throw new Error('Bm25Index.deserialize: not a serialized BM25 index');
    const version = input.u32();
    if (version !== FORMAT_VERSION) {
      throw new Error(`Bm25Index.deserialize: format version ${version}, this build reads version ${FORMAT_VERSION}`);
    }
    const [docCount, wordCount, postingCount] = [input.u32(), input.u32(), input.u32()];
    const ids = input.strings(docCount);
    const words = input.strings(wordCount);
    const flat: Flat = {
      ids,
      words,
      lengths: input.u32s(docCount),
      df: input.u32s(wordCount),
      docs: input.u32s(postingCount),
      tfs: input.u16s(postingCount),
    };
    input.end();
    if (flat.df.reduce((sum, count) => sum + count, 0) !== postingCount || flat.docs.some((doc) => doc >= docCount)) {
      throw new Error('Bm25Index.deserialize: inconsistent postings');
    }
    const index = new Bm25Index();
    index.load(flat);
    return index;
  }

  /** Adds a document whose distinct words and frequencies are the first `distinct` scratch entries. */
  private add(id: string, length: number, distinct: number): void {
    const doc = this.ids.add(id);
    this.live++;
    this.totalLength += length;
    this.livePostings += distinct;
    if (this.lengths.length <= doc) this.lengths = grow(this.lengths, doc + 1);
    if (this.wordsStart.length <= doc + 1) this.wordsStart = grow(this.wordsStart, doc + 2);
    const from = this.wordsStart[doc];
    if (this.docWords.length < from + distinct) this.docWords = grow(this.docWords, from + distinct);
    this.lengths[doc] = length;
    this.wordsStart[doc + 1] = from + distinct;
    for (let i = 0; i < distinct; i++) {
      const word = this.scratchWords[i];
      this.docWords[from + i] = word;
      this.wordDf[word]++;
      this.append(word, doc, this.scratchTfs[i]);
    }
  }

  /** Puts the distinct words of `tokens` and their frequencies in scratch; returns how many. */
  private countWords(tokens: string[]): number {
    const n = tokens.length;
    if (this.scratchWords.length < n) {
      this.scratchWords = new Uint32Array(n * 2);
      this.scratchTfs = new Uint16Array(n * 2);
    }
    const words = this.scratchWords.subarray(0, n);
    for (let i = 0; i < n; i++) words[i] = this.wordNumber(tokens[i]);
    words.sort();
    let distinct = 0;
    for (let i = 0; i < n; i++) {
      if (i > 0 && words[i] === words[i - 1]) {
        this.scratchTfs[distinct - 1] = Math.min(MAX_TF, this.scratchTfs[distinct - 1] + 1);
      } else {
        words[distinct] = words[i];
        this.scratchTfs[distinct++] = 1;
      }
    }
    return distinct;
  }

  private wordNumber(token: string): number {
    const known = this.words.find(token);
    if (known >= 0) return known;
    // A long regex match is a slice of the whole text; keep a copy, not the text.
    const word = this.words.add(token.length < 13 ? token : Buffer.from(token).toString());
    if (this.wordDf.length <= word) {
      this.wordDf = grow(this.wordDf, word + 1);
      this.wordLen = grow(this.wordLen, word + 1);
      this.wordStart = grow(this.wordStart, word + 1);
      this.wordCap = grow(this.wordCap, word + 1);
    }
    this.wordDf[word] = this.wordLen[word] = this.wordCap[word] = 0;
    return word;
  }

  private append(word: number, doc: number, tf: number): void {
    const len = this.wordLen[word];
    if (this.wordCap[word] === OWN) {
      const at = this.wordStart[word];
      if (len === this.ownDocs[at].length) {
        this.ownDocs[at] = grow(this.ownDocs[at], len + 1);
        this.ownTfs[at] = grow(this.ownTfs[at], len + 1);
      }
      this.ownDocs[at][len] = doc;
      this.ownTfs[at][len] = tf;
    } else {
      if (len === this.wordCap[word]) this.growBlock(word);
      if (this.wordCap[word] === OWN) return this.append(word, doc, tf);
      this.arenaDocs[this.wordStart[word] + len] = doc;
      this.arenaTfs[this.wordStart[word] + len] = tf;
    }
    this.wordLen[word] = len + 1;
  }

  /** Doubles a full arena block: in place at the arena's end, else moved there or to arrays of its own. */
  private growBlock(word: number): void {
    const [start, cap] = [this.wordStart[word], this.wordCap[word]];
    const atEnd = cap > 0 && start + cap === this.arenaUsed;
    const next = Math.max(1, cap * 2);
    if (next > SMALL_LIST) {
      this.wordStart[word] = this.ownDocs.length;
      this.wordCap[word] = OWN;
      this.ownDocs.push(this.arenaDocs.slice(start, start + cap));
      this.ownTfs.push(this.arenaTfs.slice(start, start + cap));
    } else {
      const to = atEnd ? start : this.arenaUsed;
      if (this.arenaDocs.length < to + next) {
        this.arenaDocs = grow(this.arenaDocs, to + next);
        this.arenaTfs = grow(this.arenaTfs, to + next);
      }
      if (!atEnd) {
        this.arenaDocs.copyWithin(to, start, start + cap);
        this.arenaTfs.copyWithin(to, start, start + cap);
      }
      this.wordStart[word] = to;
      this.wordCap[word] = next;
      this.arenaUsed = to + next;
    }
    if (!atEnd) this.garbage += cap;
  }

  private span(word: number): Span {
    const [start, to] = [this.wordStart[word], this.wordLen[word]];
    if (this.wordCap[word] === OWN) return { docs: this.ownDocs[start], tfs: this.ownTfs[start], from: 0, to };
    return { docs: this.arenaDocs, tfs: this.arenaTfs, from: start, to: start + to };
  }

  /** Adds one query word's BM25 contribution to the score of each live document holding it. */
  private score(word: number, n: number, averageLength: number, touched: number[] | undefined): void {
    const df = this.wordDf[word];
    const idf = Math.log(1 + (n - df + 0.5) / (df + 0.5));
    const { docs, tfs, from, to } = this.span(word);
    const [ids, lengths, scores] = [this.ids.keys, this.lengths, this.scores];
    for (let i = from; i < to; i++) {
      const doc = docs[i];
      if (ids[doc] === undefined) continue;
      const tf = tfs[i];
      if (touched && scores[doc] === 0) touched.push(doc);
      scores[doc] += (idf * tf * (K1 + 1)) / (tf + K1 * (1 - B + (B * lengths[doc]) / averageLength));
    }
  }

  /**
   * The best `limit` scored documents, `touched` or all (higher score, then lower number, first);
   * resets their scores.
   */
  private best(touched: number[] | undefined, limit: number): Array<{ id: string; score: number }> {
    const scores = this.scores;
    const docs: number[] = [];
    const tops: number[] = [];
    const count = touched ? touched.length : this.ids.keys.length;
    for (let i = 0; i < count; i++) {
      const doc = touched ? touched[i] : i;
      const score = scores[doc];
      if (score === 0) continue;
      scores[doc] = 0;
      let at = docs.length;
      while (at > 0 && (tops[at - 1] < score || (tops[at - 1] === score && docs[at - 1] > doc))) at--;
      if (at >= limit) continue;
      docs.splice(at, 0, doc);
      tops.splice(at, 0, score);
      if (docs.length > limit) {
        docs.pop();
        tops.pop();
      }
    }
    return docs.map((doc, i) => ({ id: this.ids.keys[doc]!, score: tops[i] }));
  }

  /** Rebuilds from the live documents once garbage outweighs half the live entries. */
  private collect(): void {
    if (this.garbage > MIN_GARBAGE && this.garbage * 2 > this.livePostings + this.live) this.load(this.flat());
  }

  /** The live documents and words, renumbered in order, with their postings. */
  private flat(): Flat {
    const docCount = this.ids.keys.length;
    const renumber = new Uint32Array(docCount);
    const ids: string[] = [];
    const lengths = new Uint32Array(this.live);
    for (let doc = 0; doc < docCount; doc++) {
      const id = this.ids.keys[doc];
      if (id === undefined) continue;
      renumber[doc] = ids.length;
      lengths[ids.length] = this.lengths[doc];
      ids.push(id);
    }
    const words: string[] = [];
    const df: number[] = [];
    const docs = new Uint32Array(this.livePostings);
    const tfs = new Uint16Array(this.livePostings);
    let at = 0;
    for (let word = 0; word < this.words.keys.length; word++) {
      if (this.wordDf[word] === 0) continue;
      words.push(this.words.keys[word]!);
      df.push(this.wordDf[word]);
      const span = this.span(word);
      for (let i = span.from; i < span.to; i++) {
        if (this.ids.keys[span.docs[i]] === undefined) continue;
        docs[at] = renumber[span.docs[i]];
        tfs[at++] = span.tfs[i];
      }
    }
    return { ids, lengths, words, df: Uint32Array.from(df), docs, tfs };
  }

  /** Replaces the whole state with `flat`; small lists get power-of-two blocks to grow in. */
  private load(flat: Flat): void {
    const { ids, lengths, words, df, docs, tfs } = flat;
    this.ids = new StringTable(ids);
    this.words = new StringTable(words);
    this.lengths = lengths;
    this.live = ids.length;
    this.totalLength = lengths.reduce((sum, length) => sum + length, 0);
    this.livePostings = docs.length;
    this.garbage = 0;
    this.wordDf = df;
    this.wordLen = df.slice();
    this.wordStart = new Uint32Array(words.length);
    this.wordCap = new Uint32Array(words.length);
    this.loadPostings(df, docs, tfs);
    this.loadDocWords(ids.length, df, docs);
  }

  private loadPostings(df: Uint32Array, docs: Uint32Array, tfs: Uint16Array): void {
    const blockOf = (count: number) => (count < 2 ? count : 2 ** (32 - Math.clz32(count - 1)));
    let arenaSize = 0;
    for (const count of df) if (count <= SMALL_LIST) arenaSize += blockOf(count);
    this.arenaDocs = new Uint32Array(arenaSize);
    this.arenaTfs = new Uint16Array(arenaSize);
    this.ownDocs = [];
    this.ownTfs = [];
    let [from, used] = [0, 0];
    for (let word = 0; word < df.length; word++) {
      const count = df[word];
      if (count > SMALL_LIST) {
        this.wordStart[word] = this.ownDocs.length;
        this.wordCap[word] = OWN;
        this.ownDocs.push(docs.slice(from, from + count));
        this.ownTfs.push(tfs.slice(from, from + count));
      } else {
        this.wordStart[word] = used;
        this.wordCap[word] = blockOf(count);
        for (let i = 0; i < count; i++) {
          this.arenaDocs[used + i] = docs[from + i];
          this.arenaTfs[used + i] = tfs[from + i];
        }
        used += this.wordCap[word];
      }
      from += count;
    }
    this.arenaUsed = used;
  }

  /** Fills the per-document word lists from the postings (a counting sort by document). */
  private loadDocWords(docCount: number, df: Uint32Array, docs: Uint32Array): void {
    const start = new Uint32Array(docCount + 1);
    for (const doc of docs) start[doc + 1]++;
    for (let doc = 0; doc < docCount; doc++) start[doc + 1] += start[doc];
    const fill = start.slice(0, docCount);
    const docWords = new Uint32Array(docs.length);
    let at = 0;
    df.forEach((count, word) => {
      for (const end = at + count; at < end; at++) docWords[fill[docs[at]]++] = word;
    });
    this.wordsStart = start;
    this.docWords = docWords;
  }
}

/**
 * Strings numbered 0, 1, 2, … in order of `add`, found by an open-addressing hash table of
 * numbers (far smaller than a Map). A retired string keeps its number but is no longer found.
 */
class StringTable {
  /** Number + 1 per slot, 0 for an empty slot. */
  private slots = new Uint32Array(16);

  /** `keys`: the string of each number (distinct), undefined once retired; the table keeps the array. */
  constructor(readonly keys: (string | undefined)[] = []) {
    this.resize(keys.length);
  }

  /** The number of `s`, or -1. */
  find(s: string): number {
    const mask = this.slots.length - 1;
    for (let slot = hash(s) & mask; ; slot = (slot + 1) & mask) {
      const entry = this.slots[slot];
      if (entry === 0) return -1;
      if (this.keys[entry - 1] === s) return entry - 1;
    }
  }

  /** Numbers `s`, which must not be found already. */
  add(s: string): number {
    if ((this.keys.length + 1) * 2 > this.slots.length) this.resize(this.keys.length + 1);
    const number = this.keys.push(s) - 1;
    this.place(s, number);
    return number;
  }

  retire(number: number): void {
    this.keys[number] = undefined;
  }

  /** Rehashes the found strings into a table for `count` of them at most half full. */
  private resize(count: number): void {
    this.slots = new Uint32Array(Math.max(16, 2 ** Math.ceil(Math.log2(count * 2))));
    for (let number = 0; number < this.keys.length; number++) {
      const s = this.keys[number];
      if (s !== undefined) this.place(s, number);
    }
  }

  private place(s: string, number: number): void {
    const mask = this.slots.length - 1;
    let slot = hash(s) & mask;
    while (this.slots[slot] !== 0) slot = (slot + 1) & mask;
    this.slots[slot] = number + 1;
  }
}

/** FNV-1a over UTF-16 code units, with a final avalanche so linear probing sees mixed low bits. */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  return (h ^ (h >>> 13)) >>> 0;
}

/** A copy of `array` with room for at least `need` elements (half as much again to spare). */
function grow<T extends Uint32Array | Uint16Array>(array: T, need: number): T {
  const bigger = new (array.constructor as new (length: number) => T)(Math.max(need, Math.ceil(array.length * 1.5), 16));
  bigger.set(array);
  return bigger;
}

function requireLittleEndian(): void {
  if (!LITTLE_ENDIAN) throw new Error('Bm25Index: the binary form needs a little-endian host');
}

/** Appends values to chunks of at most `CHUNK_BYTES`. */
class ChunkWriter {
  private readonly chunks: Buffer[] = [];
  private chunk = Buffer.allocUnsafe(CHUNK_BYTES);
  private at = 0;

  u32(value: number): void {
    this.room(4);
    this.at = this.chunk.writeUInt32LE(value, this.at);
  }

  u16(value: number): void {
    this.room(2);
    this.at = this.chunk.writeUInt16LE(value, this.at);
  }

  /** A string as its UTF-8 byte length (u32) and bytes. */
  string(s: string): void {
    if (4 + 3 * s.length > CHUNK_BYTES) {
      const bytes = Buffer.from(s);
      this.u32(bytes.length);
      return this.bytes(bytes);
    }
    this.room(4 + 3 * s.length);
    const length = this.chunk.write(s, this.at + 4);
    this.chunk.writeUInt32LE(length, this.at);
    this.at += 4 + length;
  }

  /** The chunks filled so far (each handed out once). */
  take(): Buffer[] {
    return this.chunks.splice(0);
  }

  /** The chunks not yet taken, the last one cut to what was written. */
  finish(): Buffer[] {
    if (this.at > 0) this.chunks.push(Buffer.from(this.chunk.subarray(0, this.at)));
    return this.take();
  }

  private bytes(bytes: Uint8Array): void {
    for (let from = 0; from < bytes.length; ) {
      this.room(1);
      const n = Math.min(bytes.length - from, CHUNK_BYTES - this.at);
      this.chunk.set(bytes.subarray(from, from + n), this.at);
      [this.at, from] = [this.at + n, from + n];
    }
  }

  private room(bytes: number): void {
    if (this.at + bytes <= CHUNK_BYTES) return;
    this.chunks.push(this.chunk.subarray(0, this.at));
    this.chunk = Buffer.allocUnsafe(CHUNK_BYTES);
    this.at = 0;
  }
}

/** Reads what `ChunkWriter` wrote, throwing on truncated or trailing bytes. */
class Reader {
  private at = 0;

  constructor(private readonly bytes: Buffer) {}

  u32(): number {
    this.need(4);
    const value = this.bytes.readUInt32LE(this.at);
    this.at += 4;
    return value;
  }

  strings(count: number): string[] {
    const out = new Array<string>(count);
    for (let i = 0; i < count; i++) {
      const length = this.u32();
      this.need(length);
      out[i] = this.bytes.toString('utf8', this.at, this.at + length);
      this.at += length;
    }
    return out;
  }

  u32s(count: number): Uint32Array {
    const out = new Uint32Array(count);
    this.copy(out);
    return out;
  }

  u16s(count: number): Uint16Array {
    const out = new Uint16Array(count);
    this.copy(out);
    return out;
  }

  end(): void {
    if (this.at !== this.bytes.length) throw new Error('Bm25Index.deserialize: trailing bytes');
  }

  private copy(out: Uint32Array | Uint16Array): void {
    this.need(out.byteLength);
    new Uint8Array(out.buffer).set(this.bytes.subarray(this.at, this.at + out.byteLength));
    this.at += out.byteLength;
  }

  private need(bytes: number): void {
    if (this.at + bytes > this.bytes.length) throw new Error('Bm25Index.deserialize: truncated');
  }
}
