/**
 * linkedAbort (src/abort.ts): a request's or a wait's abort controller tied to a long-lived
 * signal, and unlinked from it afterwards, so the long-lived signal holds nothing per request.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { linkedAbort } from '../src/abort.js';
import { HostedClient } from '../src/hosted.js';

test("a linked controller aborts with its parent's reason, alone, or at once when the parent already did", () => {
  const parent = new AbortController();
  const child = linkedAbort(parent.signal);
  const sibling = linkedAbort(parent.signal);
  child.abort(new Error('this request only'));
  assert.equal(parent.signal.aborted, false, 'a child does not abort its parent');
  assert.equal(sibling.signal.aborted, false);
  parent.abort(new Error('closing'));
  assert.equal((sibling.signal.reason as Error).message, 'closing');
  assert.equal((linkedAbort(parent.signal).signal.reason as Error).message, 'closing', 'a parent aborted before');
  assert.equal(linkedAbort().signal.aborted, false, 'no parent: a plain controller');
});

test('a timeout aborts with a TimeoutError; a release first cancels it', async () => {
  const timed = linkedAbort(new AbortController().signal);
  timed.timeout(10);
  const released = linkedAbort();
  released.timeout(10);
  released.release();
  await new Promise((resolve) => setTimeout(resolve, 40));
  assert.equal((timed.signal.reason as DOMException).name, 'TimeoutError');
  assert.equal(released.signal.aborted, false);
});

test('released, a linked controller no longer follows its parent, which keeps no listener for it', () => {
  const parent = new AbortController();
  const children = Array.from({ length: 1000 }, () => linkedAbort(parent.signal));
  assert.equal(getEventListeners(parent.signal, 'abort').length, 1000);
  for (const child of children) child.release();
  assert.equal(getEventListeners(parent.signal, 'abort').length, 0);
  parent.abort();
  assert.ok(children.every((child) => !child.signal.aborted));
});

test("a hosted sink's requests leave nothing on the sink's long-lived closing signal", async (t) => {
  const server = http.createServer((req, res) => req.resume().on('end', () => res.writeHead(202).end('{}')));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = new HostedClient({
    label: 'test sink',
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    key: 'k',
    timeoutMs: 5000,
    fatal: {},
    errorText: () => undefined,
  });
  t.after(() => {
    client.close();
    server.close();
  });
  for (let i = 0; i < 20; i++) await client.post({ where: 'lens "l"', path: '/v1/ingest', headers: {}, body: '{}' });
  const closing = (client as unknown as { closing: AbortController }).closing.signal;
  assert.equal(getEventListeners(closing, 'abort').length, 0);
});
