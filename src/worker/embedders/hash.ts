/**
 * The `hash` embedder: Tributary's offline, deterministic default. No model, no network, no
 * key: a text becomes a vector by feature hashing ("the hashing trick").
 *
 * It is LEXICAL, not semantic. Texts score as similar when they share words, word pairs or
 * spelling (`running shoe` ~ `running shoes`, `lightweight` ~ `light`), never because they mean
 * the same thing (`sofa` and `couch` share nothing). It is a good default for trying Tributary
 * out, for tests, and for catalogues where the words people search for are the words in the
 * rows; use the `openai` embedder (any OpenAI-compatible API) for meaning.
 *
 * How a text is embedded:
 * 1. NFKC-normalised, lowercased and split into Unicode word tokens: a letter or digit followed
 *    by letters, digits and combining marks (`\p{L}\p{N}\p{M}`), so `Größe`, `naïve`, `東京`
 *    and `हिन्दी` are words, and punctuation separates them.
 * 2. Features: each word (weight 1.0), each pair of consecutive words (0.5), and each character
 *    3-gram of each word with boundary markers, `<shoe>` → `<sh sho hoe oe>` (0.25).
 * 3. Each feature is hashed (FNV-1a, then murmur3's finaliser to spread the bits) to a bucket in
 *    `[0, dimensions)` and a sign; a feature seen `tf` times adds `±weight * (1 + ln tf)`
 *    (sublinear term frequency, so a repeated word does not drown the rest).
 * 4. The vector is L2-normalised. A text without words gives the zero vector (never NaN).
 *
 * The vectors are a pure function of the text and `dimensions`: the id `hash:v1:<dimensions>`
 * changes whenever the recipe does.
 */
import { TributaryError } from '../../errors.js';
import { RequestThread } from '../thread.js';
import type { Embedder } from '../types.js';
import { estimateTokens } from './openai.js';

/** Feature weights by kind. */
const WORD_WEIGHT = 1.0;
const BIGRAM_WEIGHT = 0.5;
const CHARGRAM_WEIGHT = 0.25;

/** FNV-1a's offset basis, varied per feature kind so `ab` the word and `ab` the 3-gram differ. */
const FNV_OFFSET = 0x811c9dc5;
const WORD_SEED = FNV_OFFSET;
const BIGRAM_SEED = FNV_OFFSET ^ 0x9e3779b9;
const CHARGRAM_SEED = FNV_OFFSET ^ 0x85ebca6b;
const FNV_PRIME = 0x01000193;

/** A word: a letter or digit, then letters, digits and combining marks. */
const WORD = /[\p{L}\p{N}][\p{L}\p{N}\p{M}]*/gu;

/**
 * Batches of at least this many texts are embedded on a thread of their own (./hash-thread.ts),
 * so a full sync embeds one page while the main thread writes the last; a search's query is
 * embedded at once.
 */
const THREAD_MIN_TEXTS = 64;

export interface HashEmbedderOptions {
  /** Vector length: a positive integer (384 is the documented default). */
  dimensions: number;
}

/**
 * Creates the offline `hash` embedder (see the file comment: lexical, not semantic).
 * `tokensUsed` is the same estimate the OpenAI embedder uses (characters / 4), so used and
 * saved tokens are in one unit whatever the embedder. Throws a TributaryError when `dimensions` is not a
 * positive integer.
 */
export function createHashEmbedder(options: HashEmbedderOptions): Embedder {
  const { dimensions } = options;
  if (!Number.isInteger(dimensions) || dimensions < 1) {
    throw new TributaryError(`hash embedder: dimensions must be a positive integer (got ${String(dimensions)})`);
  }
  let tokensUsed = 0;
  let thread: RequestThread | undefined;
  return {
    id: `hash:v1:${dimensions}`,
    dimensions,
    get tokensUsed() {
      return tokensUsed;
    },
    async embed(texts, signal) {
      signal?.throwIfAborted();
      for (const text of texts) tokensUsed += estimateTokens(text);
      if (texts.length < THREAD_MIN_TEXTS) return texts.map((text) => hashVector(tokenize(text), dimensions));
      if (!thread || thread.broken) thread = new RequestThread(new URL('./hash-thread.js', import.meta.url), 'the hash embedder thread');
      const lengths = Uint32Array.from(texts, (text) => text.length);
      const vectors = await thread.request<Float32Array>({ joined: texts.join(''), lengths, dimensions }, [lengths.buffer]);
      return texts.map((_, i) => vectors.subarray(i * dimensions, (i + 1) * dimensions));
    },
  };
}

/** The word tokens of a text, as the hash embedder sees them. */
export function tokenize(text: string): string[] {
  return text.normalize('NFKC').toLowerCase().match(WORD) ?? [];
}

/**
 * Term frequencies of hashed features, in the order each was first seen (the order they are
 * added to the vector in, which fixes its float rounding): an open-addressing table reused for
 * every text, so embedding allocates nothing per feature.
 */
class FeatureCounts {
  /** Distinct hashes in first-seen order, and their counts. */
  hashes = new Uint32Array(64);
  counts = new Uint32Array(64);
  size = 0;
  /** Table slot → index into `hashes`; a slot is taken when its stamp is the current one. */
  private table = new Uint32Array(128);
  private stamps = new Uint32Array(128);
  private stamp = 1;

  clear(): void {
    this.size = 0;
    if (++this.stamp === 0xffffffff) {
      this.stamps.fill(0);
      this.stamp = 1;
    }
  }

  count(hash: number): void {
    if (2 * (this.size + 1) > this.table.length) this.grow();
    const mask = this.table.length - 1;
    for (let slot = hash & mask; ; slot = (slot + 1) & mask) {
      if (this.stamps[slot] !== this.stamp) {
        this.stamps[slot] = this.stamp;
        this.table[slot] = this.size;
        this.hashes[this.size] = hash;
        this.counts[this.size++] = 1;
        return;
      }
      if (this.hashes[this.table[slot]] === hash) {
        this.counts[this.table[slot]]++;
        return;
      }
    }
  }

  /** Adds `±weight * (1 + ln tf)` for each feature: low 31 bits pick the bucket, the top bit the sign. */
  addTo(vector: Float32Array, weight: number): void {
    for (let i = 0; i < this.size; i++) {
      const hash = this.hashes[i];
      const value = weight * (1 + Math.log(this.counts[i]));
      const bucket = (hash & 0x7fffffff) % vector.length;
      vector[bucket] += hash & 0x80000000 ? -value : value;
    }
  }

  private grow(): void {
    const size = this.size;
    const hashes = this.hashes;
    const counts = this.counts;
    this.hashes = new Uint32Array(hashes.length * 2);
    this.counts = new Uint32Array(counts.length * 2);
    this.table = new Uint32Array(this.table.length * 2);
    this.stamps = new Uint32Array(this.stamps.length * 2);
    this.clear();
    for (let i = 0; i < size; i++) {
      this.count(hashes[i]);
      this.counts[i] = counts[i];
    }
  }
}

const wordCounts = new FeatureCounts();
const bigramCounts = new FeatureCounts();
const gramCounts = new FeatureCounts();

/** The unit-length (or zero) feature-hashed vector of a text's words. */
export function hashVector(words: string[], dimensions: number): Float32Array {
  wordCounts.clear();
  bigramCounts.clear();
  gramCounts.clear();

  for (let i = 0; i < words.length; i++) {
    const word = words[i];
    wordCounts.count(finish(fnv1a(word, 0, word.length, WORD_SEED)));

    if (i > 0) {
      const previous = words[i - 1];
      let h = fnv1a(previous, 0, previous.length, BIGRAM_SEED);
      h = Math.imul(h ^ 0x20, FNV_PRIME); // a space between the two words
      bigramCounts.count(finish(fnv1a(word, 0, word.length, h)));
    }

    const padded = `<${word}>`;
    for (let start = 0; start + 3 <= padded.length; start++) {
      gramCounts.count(finish(fnv1a(padded, start, start + 3, CHARGRAM_SEED)));
    }
  }

  const vector = new Float32Array(dimensions);
  wordCounts.addTo(vector, WORD_WEIGHT);
  bigramCounts.addTo(vector, BIGRAM_WEIGHT);
  gramCounts.addTo(vector, CHARGRAM_WEIGHT);

  let sumOfSquares = 0;
  for (let i = 0; i < dimensions; i++) sumOfSquares += vector[i] * vector[i];
  if (sumOfSquares > 0) {
    const scale = 1 / Math.sqrt(sumOfSquares);
    for (let i = 0; i < dimensions; i++) vector[i] *= scale;
  }
  return vector;
}

/** 32-bit FNV-1a over the UTF-16 code units `text[start..end)`, continuing from `hash`. */
function fnv1a(text: string, start: number, end: number, hash: number): number {
  let h = hash;
  for (let i = start; i < end; i++) h = Math.imul(h ^ text.charCodeAt(i), FNV_PRIME);
  return h;
}

/** murmur3's 32-bit finaliser: every input bit affects every output bit. */
function finish(hash: number): number {
  let h = hash;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
