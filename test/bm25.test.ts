/**
 * The BM25 keyword index (src/worker/index/bm25.ts): rankings equal to a plain reference BM25
 * over random corpora under random set / remove / update sequences (rebuilds included), the
 * binary form's round trip and errors, and memory per document at 200,000 documents.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { Bm25Index } from '../src/worker/index/bm25.js';
import { tokenize } from '../src/worker/embedders/hash.js';

const K1 = 1.2;
const B = 0.75;

/** BM25 the obvious way; equal scores rank the document set earlier first. */
class ReferenceBm25 {
  private readonly docs = new Map<string, { seq: number; length: number; tf: Map<string, number> }>();
  private seq = 0;

  get size(): number {
    return this.docs.size;
  }

  set(id: string, text: string): void {
    const tokens = tokenize(text);
    const tf = new Map<string, number>();
    for (const t of tokens) tf.set(t, (tf.get(t) ?? 0) + 1);
    this.docs.delete(id);
    this.docs.set(id, { seq: this.seq++, length: tokens.length, tf });
  }

  remove(id: string): void {
    this.docs.delete(id);
  }

  search(query: string, limit: number): Array<{ id: string; score: number }> {
    const n = this.docs.size;
    if (n === 0 || limit < 1) return [];
    const docs = [...this.docs];
    const averageLength = docs.reduce((sum, [, d]) => sum + d.length, 0) / n || 1;
    const words = [...new Set(tokenize(query))].map((word) => {
      const df = docs.filter(([, d]) => d.tf.has(word)).length;
      return { word, idf: Math.log(1 + (n - df + 0.5) / (df + 0.5)) };
    });
    const scored: Array<{ id: string; score: number; seq: number }> = [];
    for (const [id, d] of docs) {
      let score = 0;
      for (const { word, idf } of words) {
        const tf = d.tf.get(word);
        if (tf) score += (idf * tf * (K1 + 1)) / (tf + K1 * (1 - B + (B * d.length) / averageLength));
      }
      if (score > 0) scored.push({ id, score, seq: d.seq });
    }
    scored.sort((a, b) => b.score - a.score || a.seq - b.seq);
    return scored.slice(0, limit).map(({ id, score }) => ({ id, score }));
  }
}

function seeded(seed: number): () => number {
  return () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
}

const VOCABULARY = [
  'shoe', 'blue', 'Blue', 'red', 'boot', 'café', 'CAFÉ', 'cafe\u0301', 'straße', 'ｆｕｌｌ', 'full', '日本', '東京',
  'naïve', 'Ωmega', '𝔘nicode', '42', '0042', 'sku-123', 'x', '🙂', '...', 'a-very-long-word-indeed',
];

function randomText(random: () => number, words = VOCABULARY): string {
  if (random() < 0.08) return random() < 0.5 ? '' : '— !! …';
  const count = 1 + Math.floor(random() * 12);
  return Array.from({ length: count }, () => words[Math.floor(random() * random() * words.length)]).join(' ');
}

function assertSameSearches(index: Bm25Index, reference: ReferenceBm25, random: () => number, label: string, words = VOCABULARY): void {
  assert.equal(index.size, reference.size, `${label}: size`);
  for (let q = 0; q < 8; q++) {
    const query = q === 0 ? 'nothing-matches' : randomText(random, words);
    const limit = [0, 1, 3, 10, 1000][Math.floor(random() * 5)];
    assert.deepEqual(index.search(query, limit), reference.search(query, limit), `${label}: ${JSON.stringify(query)} limit ${limit}`);
  }
}

/** Random sets (new ids, same ids again, same text again), removes (unknown ids too), checked as it goes. */
function runScenario(seed: number, ids: number, steps: number, words = VOCABULARY): { index: Bm25Index; reference: ReferenceBm25 } {
  const random = seeded(seed);
  let index = new Bm25Index();
  const reference = new ReferenceBm25();
  const texts = new Map<string, string>();
  for (let step = 1; step <= steps; step++) {
    const id = `doc-${Math.floor(random() * ids)}`;
    const r = random();
    if (r < 0.25) {
      index.remove(r < 0.03 ? `unknown-${step}` : id);
      reference.remove(r < 0.03 ? `unknown-${step}` : id);
    } else {
      const text = r < 0.3 && texts.has(id) ? texts.get(id)! : randomText(random, words);
      texts.set(id, text);
      index.set(id, text);
      reference.set(id, text);
    }
    if (step % 97 === 0) assertSameSearches(index, reference, random, `seed ${seed} step ${step}`, words);
    if (step % 1000 === 0) index = Bm25Index.deserialize(Buffer.concat([...index.serialize()]));
  }
  assertSameSearches(index, reference, random, `seed ${seed} end`, words);
  return { index, reference };
}

test('rankings equal a reference BM25 through random sets, updates and removes', () => {
  // 40 ids of ~5 postings churned thousands of times: the index rebuilds itself many times over.
  for (let seed = 1; seed <= 6; seed++) runScenario(seed, 40, 3000);
});

test('rankings stay exact when posting lists outgrow the shared arena and shrink back', () => {
  // Up to 900 documents over 6 words: lists pass 256 postings, then removals rebuild them small.
  const words = ['alpha', 'beta', 'gamma', 'delta', 'Ελλάδα', '7'];
  const { index, reference } = runScenario(11, 900, 4000, words);
  const random = seeded(12);
  for (let i = 0; i < 900; i++) {
    if (random() < 0.8) {
      index.remove(`doc-${i}`);
      reference.remove(`doc-${i}`);
    }
  }
  assertSameSearches(index, reference, random, 'after removing most', words);
});

test('ties rank the document set earlier first; re-setting an id makes it the latest', () => {
  const index = new Bm25Index();
  for (const id of ['c', 'a', 'b']) index.set(id, 'blue shoe');
  assert.deepEqual(index.search('shoe', 3).map((r) => r.id), ['c', 'a', 'b']);
  index.set('c', 'blue shoe');
  assert.deepEqual(index.search('shoe', 3).map((r) => r.id), ['a', 'b', 'c']);
});

test('the binary form round-trips searches, also after removals, and keeps working', () => {
  const { index, reference } = runScenario(21, 60, 1500);
  const restored = Bm25Index.deserialize(Buffer.concat([...index.serialize()]));
  const random = seeded(22);
  for (let q = 0; q < 50; q++) {
    const query = randomText(random);
    assert.deepEqual(restored.search(query, 10), index.search(query, 10), query);
  }
  restored.set('doc-new', 'blue blue shoe');
  reference.set('doc-new', 'blue blue shoe');
  restored.remove('doc-1');
  reference.remove('doc-1');
  assertSameSearches(restored, reference, random, 'restored, then changed');
  assert.deepEqual(Bm25Index.deserialize(Buffer.concat([...new Bm25Index().serialize()])).size, 0);
});

test('deserialize names a wrong format, a newer version and truncated bytes', () => {
  const index = new Bm25Index();
  index.set('1', 'blue shoe');
  const bytes = Buffer.concat([...index.serialize()]);
  assert.equal(bytes.subarray(0, 4).toString('latin1'), 'BM25');
  assert.throws(() => Bm25Index.deserialize(Buffer.from('{"json": true}')), /not a serialized BM25 index/);
  const newer = Buffer.from(bytes);
  newer.writeUInt32LE(2, 4);
  assert.throws(() => Bm25Index.deserialize(newer), /format version 2, this build reads version 1/);
  assert.throws(() => Bm25Index.deserialize(bytes.subarray(0, bytes.length - 1)), /truncated/);
  assert.throws(() => Bm25Index.deserialize(Buffer.concat([bytes, Buffer.alloc(1)])), /trailing bytes/);
});

/**
 * Measured in a child with --expose-gc: V8 heap plus array buffers after GC, per document, for
 * 200,000 documents `item <n> blue shoe` (4 postings each, one word per document seen once).
 * The ids are the caller's strings (the slot table holds them too), so they are not counted.
 * The Map-based index used ~580 bytes per document; this one ~150.
 */
const MEMORY_CHILD = `
  const { Bm25Index } = await import(process.argv[1]);
  const heap = () => { gc(); gc(); const m = process.memoryUsage(); return m.heapUsed + m.arrayBuffers; };
  const n = 200000;
  // Sequential strings, not concatenations that V8 would flatten (and shrink) after the baseline.
  const ids = Array.from({ length: n }, (_, i) => Buffer.from('product/' + String(i).padStart(72, '0')).toString());
  const base = heap();
  let index = new Bm25Index();
  for (let i = 0; i < n; i++) index.set(ids[i], 'item ' + i + ' blue shoe');
  index.search('blue shoe', 10);
  const perDoc = (heap() - base) / n;
  const chunks = [...index.serialize()];
  const restored = Bm25Index.deserialize(Buffer.concat(chunks));
  const same = ['blue shoe', 'item 77', 'shoe 199999'].every((q) => JSON.stringify(restored.search(q, 5)) === JSON.stringify(index.search(q, 5)));
  index = undefined;
  const before = heap();
  const long = new Bm25Index();
  for (let i = 0; i < 100; i++) long.set(String(i), '-'.repeat(200000) + ' unmistakablylongword' + i);
  const longTextRetained = heap() - before;
  console.log(JSON.stringify({ perDoc, chunks: chunks.map((c) => c.length), same, longTextRetained }));
`;

test('memory: under 250 bytes per document at 200,000 documents; no text kept alive by long words', () => {
  const module = new URL('../src/worker/index/bm25.js', import.meta.url).href;
  const out = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', MEMORY_CHILD, module], { encoding: 'utf8' });
  const { perDoc, chunks, same, longTextRetained } = JSON.parse(out);
  assert.ok(perDoc < 250, `${perDoc.toFixed(1)} bytes per document`);
  assert.ok(chunks.length >= 2 && Math.max(...chunks) <= 1 << 20, `chunks ${chunks}`);
  assert.ok(same, 'the deserialized index answers the same');
  assert.ok(longTextRetained < 2_000_000, `${longTextRetained} bytes kept for 100 texts of 200 KB`);
});
