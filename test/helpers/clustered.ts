/**
 * Clustered unit vectors: points scattered around random centres, as embeddings of real text
 * are. Recall of an approximate index means something only on data like this: uniformly
 * random vectors in many dimensions are all about equally far apart, so no index (and no
 * user) can tell their neighbours from the rest.
 */
import { unit } from './vector-index-contract.js';

/** Mulberry32: deterministic numbers in [-0.5, 0.5) with a period long enough for millions of vectors. */
export function mulberry(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  };
}

/** `n` unit vectors of `dims` dimensions around `clusters` centres, row after row in one array. */
export function clusteredVectors(n: number, dims: number, options: { clusters?: number; spread?: number; seed?: number } = {}): Float32Array {
  const { clusters = Math.max(1, Math.round(Math.sqrt(n))), spread = 0.35, seed = 1 } = options;
  const next = mulberry(seed);
  const centres = Array.from({ length: clusters }, () => unit(Array.from({ length: dims }, next)));
  const out = new Float32Array(n * dims);
  for (let i = 0; i < n; i++) {
    const centre = centres[Math.floor((next() + 0.5) * clusters) % clusters];
    let norm = 0;
    for (let j = 0; j < dims; j++) {
      const v = centre[j] + (next() * spread * 2) / Math.sqrt(dims);
      out[i * dims + j] = v;
      norm += v * v;
    }
    norm = Math.sqrt(norm);
    for (let j = 0; j < dims; j++) out[i * dims + j] /= norm;
  }
  return out;
}

/** The ids of the exact top `k` of `query` among `count` row-major unit vectors (ids are `prefix + row`). */
export function exactTop(vectors: Float32Array, dims: number, query: Float32Array, k: number, prefix = 'r'): string[] {
  const n = vectors.length / dims;
  const scores: Array<[number, number]> = [];
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < dims; j++) s += vectors[i * dims + j] * query[j];
    scores.push([i, s]);
  }
  return scores
    .sort((a, b) => b[1] - a[1])
    .slice(0, k)
    .map(([i]) => prefix + i);
}

/**
 * Point `i` (deterministic) of clustered data on a low-dimensional manifold, as text embeddings
 * are (their intrinsic dimension is a few tens): a latent point of `latentDims` dimensions near
 * one of `clusters` latent centres, mapped into `dims` dimensions by a fixed random linear map,
 * plus a little isotropic noise, unit length. Unlike `clusteredVectors` at a million points,
 * whose ~1,000 members of a cluster are all within 0.001 of each other in cosine (a top 10
 * there is a tie-break), a point's nearest neighbours here are nearer by a real margin.
 */
export function manifoldPoints(dims: number, options: { clusters: number; latentDims?: number; seed?: number }): (i: number) => Float32Array {
  const { clusters, latentDims = 16, seed = 1 } = options;
  const next = mulberry(seed);
  const map = Float32Array.from({ length: dims * latentDims }, () => next());
  const centres = Array.from({ length: clusters }, () => Float32Array.from({ length: latentDims }, () => 4 * next()));
  return (i) => {
    const own = mulberry(1_000_003 * i + seed);
    const centre = centres[Math.floor((own() + 0.5) * clusters) % clusters];
    const latent = centre.map((c) => c + own() + own() + own());
    const out = new Float32Array(dims);
    let norm = 0;
    for (let j = 0; j < dims; j++) {
      let v = 0.02 * own();
      for (let k = 0; k < latentDims; k++) v += map[j * latentDims + k] * latent[k];
      out[j] = v;
      norm += v * v;
    }
    norm = Math.sqrt(norm);
    for (let j = 0; j < dims; j++) out[j] /= norm;
    return out;
  };
}
