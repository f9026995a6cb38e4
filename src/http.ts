/** The daemon's own HTTP endpoint: `/metrics`, `/healthz`, `/readyz`. */
import { createServer, type Server } from 'node:http';
import type { Metrics } from './metrics.js';

export interface Readiness {
  ready: boolean;
  reasons: string[];
}

/** Parses `host:port` (`[::1]:9464`, `0.0.0.0:0`). */
export function parseListen(listen: string): { host: string; port: number } {
  const at = listen.lastIndexOf(':');
  return { host: listen.slice(0, at).replace(/^\[(.*)\]$/, '$1') || '0.0.0.0', port: Number(listen.slice(at + 1)) };
}

export async function startMetricsServer(listen: string, metrics: Metrics, readiness: () => Readiness): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method !== 'GET') return json(405, { error: 'only GET is supported here' });
    if (path === '/healthz') return json(200, { status: 'ok' });
    if (path === '/readyz') {
      const r = readiness();
      return json(r.ready ? 200 : 503, r.ready ? { status: 'ready' } : { status: 'not ready', reasons: r.reasons });
    }
    if (path === '/metrics') {
      metrics.registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType });
          res.end(text);
        },
        (err) => json(500, { error: String(err) }),
      );
      return;
    }
    json(404, { error: `no such endpoint: ${path}; try /metrics, /healthz or /readyz` });
  });
  const { host, port } = parseListen(listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
