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

/**
 * Serves `/metrics`, `/readyz` (every lens at work) and `/healthz` (alive: 503 when a source
 * stopped for good, so an orchestrator restarts the daemon).
 */
export async function startMetricsServer(listen: string, metrics: Metrics, checks: { readiness: () => Readiness; liveness: () => Readiness }): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method !== 'GET') return json(405, { error: 'only GET is supported here' });
    if (path === '/healthz') {
      const r = checks.liveness();
      return json(r.ready ? 200 : 503, r.ready ? { status: 'ok' } : { status: 'failing', reasons: r.reasons });
    }
    if (path === '/readyz') {
      const r = checks.readiness();
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
