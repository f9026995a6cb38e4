/** The HTTP client of the hosted sinks and the embedders (src/http-client.ts) against real loopback servers. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { keepAliveAgent, post, readText } from '../src/http-client.js';

async function serve(handler: http.RequestListener): Promise<{ url: URL; connections: () => number; close: () => Promise<void> }> {
  const server = http.createServer(handler);
  let connections = 0;
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/ingest`);
  return { url, connections: () => connections, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

test('whole bodies go with their Content-Length over one kept-alive connection', async (t) => {
  const lengths: string[] = [];
  const server = await serve((req, res) => {
    lengths.push(String(req.headers['content-length']));
    req.resume().on('end', () => res.writeHead(202, { 'content-type': 'application/json' }).end('{"ok":true}'));
  });
  const agent = keepAliveAgent(server.url);
  t.after(async () => {
    agent.destroy();
    await server.close();
  });
  for (const body of ['{"a":1}', new Uint8Array(100_000)]) {
    const res = await post(server.url, { headers: { 'content-type': 'application/json' }, body, signal: new AbortController().signal, agent });
    assert.equal(res.statusCode, 202);
    assert.equal(await readText(res), '{"ok":true}');
  }
  assert.deepEqual(lengths, ['7', '100000']);
  assert.equal(server.connections(), 1);
});

test('a streamed body answered before it was all sent: the answer comes back and the rest is not sent', async (t) => {
  // The server answers at once but goes on reading (and discarding) whatever is sent.
  const server = await serve((req, res) => {
    req.resume();
    res.writeHead(413, { 'content-type': 'application/json' }).end('{"error":"payload_too_large"}');
  });
  const agent = keepAliveAgent(server.url);
  t.after(async () => {
    agent.destroy();
    await server.close();
  });
  let pulled = 0;
  async function* body() {
    for (; pulled < 1000; pulled++) yield new Uint8Array(1 << 20);
  }
  const res = await post(server.url, { headers: {}, body: body(), signal: new AbortController().signal, agent });
  assert.equal(res.statusCode, 413);
  assert.equal(await readText(res, 16 * 1024), '{"error":"payload_too_large"}');
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.ok(pulled < 1000, `${pulled} MB of 1000 pulled from the stream`);
});

test("a body stream that fails rejects the request with the stream's error; an abort rejects it too", async (t) => {
  const server = await serve((req, res) => req.resume().on('end', () => res.writeHead(202).end()));
  const agent = keepAliveAgent(server.url);
  t.after(async () => {
    agent.destroy();
    await server.close();
  });
  async function* failing() {
    yield new Uint8Array(10);
    throw new Error('the table read failed');
  }
  await assert.rejects(post(server.url, { headers: {}, body: failing(), signal: new AbortController().signal, agent }), /the table read failed/);
  const aborted = AbortSignal.abort(new DOMException('timeout', 'TimeoutError'));
  await assert.rejects(post(server.url, { headers: {}, body: 'x', signal: aborted, agent }), (err: Error) => err.name === 'AbortError');
});
