/** The plumbing both fake vendor servers share: a loopback HTTP server and JSON answers. */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** An answer: a string body is sent as is, anything else as JSON, undefined as no body. */
export interface Answer {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

export type Handler = (raw: Buffer, method: string, url: string, headers: IncomingHttpHeaders, res: ServerResponse) => Promise<void>;

/**
 * Serves `handle` on 127.0.0.1 (a free port) with each request's whole body; a handler that
 * throws is answered with `failure(err)`.
 */
export async function serveLoopback(handle: Handler, failure: (err: unknown) => Answer): Promise<{ port: number; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('error', () => undefined);
    req.on('end', () => {
      handle(Buffer.concat(chunks), req.method ?? 'GET', req.url ?? '/', req.headers, res).catch((err: unknown) => send(res, failure(err)));
    });
  });
  server.keepAliveTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export function send(res: ServerResponse, answer: Answer): void {
  if (res.headersSent || res.destroyed) return;
  const payload = answer.body === undefined ? '' : typeof answer.body === 'string' ? answer.body : JSON.stringify(answer.body);
  const headers: Record<string, string | number> = { 'content-length': Buffer.byteLength(payload) };
  if (answer.body !== undefined && typeof answer.body !== 'string') headers['content-type'] = 'application/json';
  res.writeHead(answer.status, { ...headers, ...answer.headers });
  res.end(payload);
}
