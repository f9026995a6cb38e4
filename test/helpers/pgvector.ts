/**
 * A PostgreSQL with pgvector for tests: PGlite (PostgreSQL compiled to WASM, in memory) with
 * the pgvector extension package, served over the PostgreSQL wire protocol on a free loopback
 * port by @electric-sql/pglite-socket, so code under test connects with the ordinary `pg`
 * driver exactly as it would to a real server. (Debian's postgresql-15 has no pgvector package
 * on this machine.)
 *
 * PGlite is one backend: the socket server queues the connections' messages onto it and keeps
 * a connection's transaction to itself, so several pooled connections work, but all of them
 * share one session (a session-level SET is seen by every connection). The three packages'
 * versions must match exactly (pglite 0.5.14, pglite-pgvector 0.0.15, pglite-socket 0.2.17).
 */
import { PGlite } from '@electric-sql/pglite';
import { vector } from '@electric-sql/pglite-pgvector';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

export interface RunningPgvector {
  /** `postgres://postgres@127.0.0.1:<port>/postgres` (PGlite accepts any user, no password). */
  url: string;
  stop(): Promise<void>;
}

/**
 * Starts an in-memory PGlite behind a socket server on 127.0.0.1 (about 3 s).
 * `extension: false` leaves pgvector out, as on a server where it is not installed.
 */
export async function startPgvector(options: { extension?: boolean } = {}): Promise<RunningPgvector> {
  const db = await PGlite.create(options.extension === false ? {} : { extensions: { vector } });
  // Port 0: the OS picks a free port (no race with other test files starting servers).
  const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port: 0, maxConnections: 64 });
  try {
    await server.start();
  } catch (err) {
    await db.close();
    throw err;
  }
  const conn = server.getServerConn(); // "127.0.0.1:<port>"
  const port = Number(conn.slice(conn.lastIndexOf(':') + 1));
  let stopped = false;
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async stop() {
      if (stopped) return;
      stopped = true;
      await server.stop();
      await db.close();
    },
  };
}
