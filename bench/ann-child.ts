/**
 * One phase of a measurement of the embedded index at one size, in a process of its own (so its
 * peak RSS is the index's): `node ann-child.js <rows> <dims> <quantization> <dir> build|serve`;
 * prints one JSON line. `build` writes the index and closes it; `serve`, a restart, reopens and
 * searches it.
 *
 * Clustered unit vectors (test/helpers/clustered.ts; random vectors say nothing about recall)
 * are generated batch by batch and written with `upsert` (the worker's write path, fsynced),
 * then the index is closed (checkpoint), reopened, and searched: the HNSW graph (limit 10)
 * against exact search of the same stored vectors (`exact: true`, a scan of the record log),
 * recall@10 of one against the other; and the brute force of the previous embedded index (an
 * in-memory scan of every vector) on the same queries.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { EmbeddedVectorIndex } from '../src/worker/index/embedded.js';
import { scanMatrix } from '../src/worker/index/exact.js';
import type { Quantization } from '../src/worker/index/hnsw.js';
import { manifoldPoints, mulberry } from '../test/helpers/clustered.js';
import { unit } from '../test/helpers/vector-index-contract.js';

const [rows, dims] = [Number(process.argv[2]), Number(process.argv[3])];
const quantization = process.argv[4] as Quantization;
const dir = process.argv[5];
/** Records a write, as the worker writes them (its readBatch, 1000 by default). */
const BATCH = 1000;
const QUERIES = 200;
/** Exact searches are slow at a million rows: recall and the brute-force figure use this many. */
const EXACT_QUERIES = rows > 200_000 ? 20 : 100;

/**
 * BENCH_ANN_DATA: `manifold` (default: clusters on a 16-dimensional manifold, as text
 * embeddings are) or `flat` (clusters with isotropic noise in every dimension: at a million
 * points a cluster's ~1,000 members are within 0.001 of each other in cosine, so recall@10
 * there measures tie-breaks more than the index).
 */
const DATA = process.env.BENCH_ANN_DATA ?? 'manifold';
const clusters = Math.round(Math.sqrt(rows));
const point = DATA === 'flat' ? flatPoints() : manifoldPoints(dims, { clusters, seed: 5 });

function flatPoints(): (i: number) => Float32Array {
  const next = mulberry(5);
  const centres = Array.from({ length: clusters }, () => unit(Array.from({ length: dims }, next)));
  return (i) => {
    const own = mulberry(1_000_003 * i + 17);
    const centre = centres[Math.floor((own() + 0.5) * centres.length) % centres.length];
    return unit(Array.from(centre, (c) => c + (own() * 0.7) / Math.sqrt(dims)));
  };
}

/** Points `from` … `from + count - 1`, row after row. */
function makePoints(from: number, count: number): Float32Array {
  const out = new Float32Array(count * dims);
  for (let n = 0; n < count; n++) out.set(point(from + n), n * dims);
  return out;
}

function peakRssMb(): number {
  const line = readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith('VmHWM'))!;
  return Number(line.replace(/\D+/g, '')) / 1024;
}

function p(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

/** BENCH_ANN_HNSW: other graph settings as JSON, e.g. `{"expansionSearch":128}`. */
const options = { exactBelow: 0, hnsw: { quantization, ...(JSON.parse(process.env.BENCH_ANN_HNSW ?? '{}') as object) } };
const phase = process.argv[6];
if (phase === 'build') {
  const index = await EmbeddedVectorIndex.open(dir, options);
  const started = performance.now();
  for (let from = 0; from < rows; from += BATCH) {
    const count = Math.min(BATCH, rows - from);
    const points = makePoints(from, count);
    await index.upsert(
      'p',
      Array.from({ length: count }, (_, i) => ({
        id: String(from + i),
        content: `item ${from + i}`,
        metadata: { n: from + i },
        vector: points.slice(i * dims, (i + 1) * dims),
        contentHash: `h${from + i}`,
      })),
    );
  }
  const indexSeconds = (performance.now() - started) / 1000;
  // Written records are searchable at once (exactly, while they wait); the graph takes them in the background.
  await index.graphBuilt();
  const graphSeconds = (performance.now() - started) / 1000;
  const t = performance.now();
  await index.close();
  const closeSeconds = (performance.now() - t) / 1000;
  console.log(JSON.stringify({ indexRowsPerSecond: rows / indexSeconds, graphRowsPerSecond: rows / graphSeconds, closeSeconds, buildPeakRssMb: peakRssMb() }));
  process.exit(0);
}

let t = performance.now();
const index = await EmbeddedVectorIndex.open(dir, options);
const reopenSeconds = (performance.now() - t) / 1000;
const bytes = readdirSync(dir).reduce((sum, name) => sum + statSync(join(dir, name)).size, 0);

const queries = makePoints(rows + 1_000_000, QUERIES);
const query = (q: number) => queries.slice(q * dims, (q + 1) * dims);
const graph: number[] = [];
const graphHits: string[][] = [];
for (let q = 0; q < QUERIES; q++) {
  const s = performance.now();
  const hits = await index.searchVector('p', query(q), { limit: 10, minScore: 0 });
  graph.push(performance.now() - s);
  graphHits.push(hits.map((h) => h.id));
}
// Read before the exact searches, whose scans of the log leave garbage behind.
const peak = peakRssMb();
const exact: number[] = [];
let found = 0;
for (let q = 0; q < EXACT_QUERIES; q++) {
  const s = performance.now();
  const truth = new Set((await index.searchVector('p', query(q), { limit: 10, minScore: 0, exact: true })).map((h) => h.id));
  exact.push(performance.now() - s);
  found += graphHits[q].filter((id) => truth.has(id)).length;
}
graph.sort((a, b) => a - b);
exact.sort((a, b) => a - b);
await index.close();

// The brute force of the index before this one: every vector in one Float32Array, scanned
// (after the peak RSS was read: this matrix is not the index's memory).
const matrix = new Float32Array(rows * dims);
for (let from = 0; from < rows; from += BATCH) matrix.set(makePoints(from, Math.min(BATCH, rows - from)), from * dims);
const brute: number[] = [];
for (let q = 0; q < EXACT_QUERIES; q++) {
  const s = performance.now();
  scanMatrix(matrix, dims, rows, queries.subarray(q * dims, (q + 1) * dims), 10, -1);
  brute.push(performance.now() - s);
}
brute.sort((a, b) => a - b);
console.log(
  JSON.stringify({
    reopenSeconds,
    bytesPerRecord: bytes / rows,
    graphP50: p(graph, 0.5),
    graphP99: p(graph, 0.99),
    bruteP50: p(brute, 0.5),
    bruteP99: p(brute, 0.99),
    exactP50: p(exact, 0.5),
    exactP99: p(exact, 0.99),
    recall: found / (EXACT_QUERIES * 10),
    servePeakRssMb: peak,
  }),
);
