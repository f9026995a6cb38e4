import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LensQueue } from '../src/worker/queue.js';

const dir = () => mkdtempSync(join(tmpdir(), 'tributary-queue-'));

test('accepted requests survive a crash; a torn last line (never acknowledged) is ignored', () => {
  const d = dir();
  const q = new LensQueue(d, 'products');
  q.add('j_1', 'records', [{ id: '1', action: 'upsert' }, { id: '2', action: 'upsert' }]);
  assert.equal(q.add('j_2', 'records', [{ id: '1', action: 'delete' }]).deduplicated, true);
  q.add('j_3', 'full');
  q.close(); // no done(): as if the process died
  appendFileSync(join(d, 'products.jsonl'), '{"seq":4,"jobId":"j_4","mode":"rec');
  const again = new LensQueue(d, 'products');
  assert.deepEqual([...again.queued!.work.changes], [['2', 'upsert'], ['1', 'delete']]);
  assert.equal(again.queued!.work.sweep, 'full');
  assert.equal(again.queued!.jobId, 'j_1');
  again.close();
});

test('the journal keeps only what is still queued, even while the worker never idles', () => {
  const d = dir();
  const q = new LensQueue(d, 'products');
  q.add('j_0', 'records', [{ id: '0', action: 'upsert' }]);
  for (let round = 0; round < 50; round++) {
    const running = q.take()!;
    q.add(`j_${round + 1}`, 'records', [{ id: String(round + 1), action: 'upsert' }]); // arrives while running
    q.done(running.lastSeq); // the next job is already queued: the queue is never idle
  }
  q.add('j_more', 'records', [{ id: 'last', action: 'delete' }]);
  const lines = readFileSync(join(d, 'products.jsonl'), 'utf8').trim().split('\n');
  assert.ok(lines.length <= 2, `the journal holds ${lines.length} lines, not every request ever made`);
  q.close();
  const again = new LensQueue(d, 'products');
  assert.deepEqual([...again.queued!.work.changes], [['50', 'upsert'], ['last', 'delete']]);
  again.close();
});
