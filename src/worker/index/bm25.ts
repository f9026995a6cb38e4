/**
 * An in-memory BM25 (Okapi, k1 = 1.2, b = 0.75) inverted index with top-k retrieval: the
 * keyword ranking of the embedded vector index. Words are the hash embedder's tokens
 * (lowercased, Unicode-aware). A query scores only the postings of its own words into one
 * reusable array, then keeps the best `limit` documents, so a search at 100,000 documents
 * allocates little and never sorts every match.
 */
import { tokenize } from '../embedders/hash.js';

const K1 = 1.2;
const B = 0.75;

export class Bm25Index {
  /** Word → (document number → term frequency). */
  private readonly postings = new Map<string, Map<number, number>>();
  private readonly numberOf = new Map<string, number>();
  /** By document number: its id, its length in words and its distinct words (for removal). */
  private readonly ids: (string | undefined)[] = [];
  private readonly lengths: number[] = [];
  private readonly words: (string[] | undefined)[] = [];
  private readonly free: number[] = [];
  private totalLength = 0;
  private scores = new Float64Array(0);

  get size(): number {
    return this.numberOf.size;
  }

  /** Adds or replaces the text of a document. */
  set(id: string, text: string): void {
    const tokens = tokenize(text);
    const counts = new Map<string, number>();
    for (const t of tokens) counts.set(t, (counts.get(t) ?? 0) + 1);
    this.put(id, tokens.length, counts);
  }

  /**
   * Every document as `[id, length, word, tf, word, tf, …]`: what `restore` takes back without
   * tokenizing again (the embedded index persists it with its checkpoints).
   */
  snapshot(): Array<Array<string | number>> {
    const out: Array<Array<string | number>> = [];
    for (const [id, doc] of this.numberOf) {
      const row: Array<string | number> = [id, this.lengths[doc]];
      for (const word of this.words[doc]!) row.push(word, this.postings.get(word)!.get(doc)!);
      out.push(row);
    }
    return out;
  }

  serialize(): Buffer[] {
    return [Buffer.from(JSON.stringify(this.snapshot()))];
  }

  static deserialize(bytes: Buffer): Bm25Index {
    return Bm25Index.restore(JSON.parse(bytes.toString('utf8')) as Array<Array<string | number>>);
  }

  static restore(rows: Array<Array<string | number>>): Bm25Index {
    const index = new Bm25Index();
    for (const row of rows) {
      const counts = new Map<string, number>();
      for (let i = 2; i < row.length; i += 2) counts.set(row[i] as string, row[i + 1] as number);
      index.put(row[0] as string, row[1] as number, counts);
    }
    return index;
  }

  private put(id: string, length: number, counts: Map<string, number>): void {
    this.remove(id);
    const doc = this.free.pop() ?? this.ids.length;
    this.ids[doc] = id;
    this.lengths[doc] = length;
    this.words[doc] = [...counts.keys()];
    this.numberOf.set(id, doc);
    this.totalLength += length;
    for (const [word, tf] of counts) {
      let list = this.postings.get(word);
      if (!list) this.postings.set(word, (list = new Map()));
      list.set(doc, tf);
    }
  }

  remove(id: string): void {
    const doc = this.numberOf.get(id);
    if (doc === undefined) return;
    for (const word of this.words[doc]!) {
      const list = this.postings.get(word)!;
      list.delete(doc);
      if (list.size === 0) this.postings.delete(word);
    }
    this.totalLength -= this.lengths[doc];
    this.ids[doc] = undefined;
    this.words[doc] = undefined;
    this.numberOf.delete(id);
    this.free.push(doc);
  }

  /** The best `limit` documents for `query`, best first, with their raw BM25 scores. */
  search(query: string, limit: number): Array<{ id: string; score: number }> {
    const n = this.numberOf.size;
    if (n === 0 || limit < 1) return [];
    if (this.scores.length < this.ids.length) this.scores = new Float64Array(Math.max(this.ids.length, this.scores.length * 2));
    const scores = this.scores;
    const touched: number[] = [];
    const averageLength = this.totalLength / n || 1;
    for (const word of new Set(tokenize(query))) {
      const list = this.postings.get(word);
      if (!list) continue;
      const idf = Math.log(1 + (n - list.size + 0.5) / (list.size + 0.5));
      for (const [doc, tf] of list) {
        if (scores[doc] === 0) touched.push(doc);
        scores[doc] += (idf * tf * (K1 + 1)) / (tf + K1 * (1 - B + (B * this.lengths[doc]) / averageLength));
      }
    }
    // Keep the best `limit` in a small array sorted best first; reset the scores as we go.
    const best: Array<{ doc: number; score: number }> = [];
    for (const doc of touched) {
      const score = scores[doc];
      scores[doc] = 0;
      if (best.length === limit && score <= best[limit - 1].score) continue;
      let at = best.length;
      while (at > 0 && best[at - 1].score < score) at--;
      best.splice(at, 0, { doc, score });
      if (best.length > limit) best.pop();
    }
    return best.map(({ doc, score }) => ({ id: this.ids[doc]!, score }));
  }
}
