/**
 * Exact cosine search: the embedded index's answer for small lenses and when exact search is
 * asked for. Vectors are unit length, so cosine is a dot product.
 */

/** Keeps the best `k` (slot, score) pairs seen, in a min-heap on score. */
export class TopK {
  private readonly scores: Float64Array;
  private readonly slots: Float64Array;
  private size = 0;

  constructor(private readonly k: number) {
    this.scores = new Float64Array(Math.max(k, 0));
    this.slots = new Float64Array(Math.max(k, 0));
  }

  /** The score a newcomer must beat once the heap is full; -Infinity until then. */
  get floor(): number {
    return this.size < this.k ? -Infinity : this.scores[0];
  }

  offer(slot: number, score: number): void {
    if (this.k === 0) return;
    if (this.size < this.k) {
      let i = this.size++;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (this.scores[parent] <= score) break;
        this.scores[i] = this.scores[parent];
        this.slots[i] = this.slots[parent];
        i = parent;
      }
      this.scores[i] = score;
      this.slots[i] = slot;
      return;
    }
    if (score <= this.scores[0]) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= this.k) break;
      const right = left + 1;
      const child = right < this.k && this.scores[right] < this.scores[left] ? right : left;
      if (this.scores[child] >= score) break;
      this.scores[i] = this.scores[child];
      this.slots[i] = this.slots[child];
      i = child;
    }
    this.scores[i] = score;
    this.slots[i] = slot;
  }

  /** The kept pairs, in no particular order. */
  entries(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    for (let i = 0; i < this.size; i++) out.push([this.slots[i], this.scores[i]]);
    return out;
  }
}

/** Cosine similarity of two unit vectors, clamped to [0, 1] as search scores are. */
export function score(a: Float32Array, aBase: number, b: Float32Array, dims: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let j = 0;
  const d4 = dims - (dims % 4);
  for (; j < d4; j += 4) {
    s0 += a[aBase + j] * b[j];
    s1 += a[aBase + j + 1] * b[j + 1];
    s2 += a[aBase + j + 2] * b[j + 2];
    s3 += a[aBase + j + 3] * b[j + 3];
  }
  for (; j < dims; j++) s0 += a[aBase + j] * b[j];
  const s = s0 + s1 + s2 + s3;
  return s > 1 ? 1 : s > 0 ? s : 0;
}

/** The best `k` slots of a row-major matrix of `count` vectors for `query`, `excludeSlot` left out. */
export function scanMatrix(matrix: Float32Array, dims: number, count: number, query: Float32Array, k: number, excludeSlot: number): TopK {
  const top = new TopK(k);
  for (let s = 0; s < count; s++) {
    if (s === excludeSlot) continue;
    const value = score(matrix, s * dims, query, dims);
    if (value > top.floor) top.offer(s, value);
  }
  return top;
}

/** The vector itself if it is (about) unit length, else a normalised copy. */
export function unitLength(vector: Float32Array): Float32Array {
  let sum = 0;
  for (let i = 0; i < vector.length; i++) sum += vector[i] * vector[i];
  const norm = Math.sqrt(sum);
  if (norm === 0 || Math.abs(norm - 1) < 1e-4) return vector;
  const out = new Float32Array(vector.length);
  for (let i = 0; i < vector.length; i++) out[i] = vector[i] / norm;
  return out;
}
